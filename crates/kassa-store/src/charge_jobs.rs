//! Submitting a back-office charge: the row and the job that executes it, in one transaction.
//! The job goes out through the outbox, so a charge is never recorded without its job, nor a job
//! published for a charge that was rolled back. The API, the CLI and the worker (for the retry
//! after a re-checkout) all go through here.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

use crate::charges::{create_charge, NewCharge};
use crate::outbox::{enqueue, OutboxMessage};
use crate::{ChargeRecord, Store, StoreError};

/// The body of a message on `kassa.charges`: which charge, which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeJob {
    /// `charges.id`.
    pub charge_id: i64,
    /// The attempt this job executes (1, then 2 after a re-checkout).
    pub attempt: i32,
}

/// Where charge jobs are published: the `kassa.charges` exchange (prefixed) and its routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRoute {
    /// Exchange name, e.g. `kassa.charges`.
    pub exchange: String,
    /// Routing key, e.g. `charge.execute`.
    pub routing_key: String,
}

impl ChargeJob {
    /// The outbox message carrying this job; its `message_id` names charge and attempt, so a
    /// job published twice is recognisably the same job.
    pub fn message(&self, route: &JobRoute) -> OutboxMessage {
        OutboxMessage {
            exchange: route.exchange.clone(),
            routing_key: route.routing_key.clone(),
            message_id: format!("charge:{}:{}", self.charge_id, self.attempt),
            message_type: "charge.execute".to_owned(),
            body: json!(self),
            headers: json!({}),
        }
    }
}

/// Queues `job` once more in the caller's transaction, for a charge put back in line by a
/// person: its message id carries `tag` (e.g. `requeue:{time}`), because the outbox queues one
/// message per id and the job's own id was published before.
pub async fn enqueue_job_again(
    conn: &mut PgConnection,
    route: &JobRoute,
    job: ChargeJob,
    tag: &str,
) -> Result<bool, StoreError> {
    let mut message = job.message(route);
    message.message_id = format!("{}:{tag}", message.message_id);
    enqueue(conn, &message).await
}

/// Queues `job` in the caller's transaction.
pub async fn enqueue_job(
    conn: &mut PgConnection,
    route: &JobRoute,
    job: ChargeJob,
) -> Result<bool, StoreError> {
    enqueue(conn, &job.message(route)).await
}

impl Store {
    /// Records a charge and queues its first attempt, in one transaction. Submitting the same
    /// `reference` again returns the existing charge (`false`) and queues nothing.
    pub async fn submit_charge(
        &self,
        route: &JobRoute,
        charge: &NewCharge,
    ) -> Result<(ChargeRecord, bool), StoreError> {
        let mut tx = self.begin().await?;
        let (record, created) = create_charge(&mut tx, charge).await?;
        if created {
            let job = ChargeJob {
                charge_id: record.id,
                attempt: record.attempt,
            };
            enqueue_job(&mut tx, route, job).await?;
        }
        tx.commit().await?;
        Ok((record, created))
    }
}
