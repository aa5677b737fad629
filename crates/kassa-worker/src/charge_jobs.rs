//! The consumer of `kassa.charges.execute`: one message per charge attempt to execute. The work
//! itself is kassa-core's ([`ChargeExecutor::execute`]); this says what becomes of the message —
//! acked once the attempt is settled (or there is nothing to do), up the retry ladder while
//! Stripe's answer is still open, dead-lettered when retrying cannot help or the ladder is spent.

use kassa_broker::{Incoming, MessageHandler, Outcome, Topology};
use kassa_core::charges::{ChargeExecutor, RecheckoutPages};
use kassa_store::{ChargeJob, Store};
use kassa_stripe::Modes;
use tracing::{warn, Instrument};

/// Executes charge jobs from `kassa.charges.execute`.
pub struct ChargeJobs {
    executor: ChargeExecutor,
    /// Rungs of the retry ladder: a transient failure on the last one ends in the dead letters.
    retries: u32,
}

impl ChargeJobs {
    /// Charge jobs executed over these clients (each charge with the client of its own mode),
    /// store and topology; `retries` is the retry ladder's length.
    pub fn new(
        stripe: impl Into<Modes>,
        store: Store,
        topology: Topology,
        pages: RecheckoutPages,
        retries: u32,
    ) -> Self {
        Self {
            executor: ChargeExecutor::new(stripe, store, topology, pages),
            retries,
        }
    }

    /// The executor the jobs run on.
    pub fn executor(&self) -> &ChargeExecutor {
        &self.executor
    }

    async fn execute(&self, job: ChargeJob, ladder_attempt: u32) -> Outcome {
        let last_rung = ladder_attempt >= self.retries;
        match self.executor.execute(job, last_rung).await {
            Ok(()) => Outcome::Done,
            Err(error) if error.is_transient() && !last_rung => {
                warn!(%error, "charge attempt not settled; will look again");
                Outcome::Retry(error.to_string())
            }
            Err(error) => {
                warn!(%error, "charge job failed permanently");
                Outcome::DeadLetter(error.to_string())
            }
        }
    }
}

impl MessageHandler for ChargeJobs {
    async fn handle(&self, message: Incoming) -> Outcome {
        let job: ChargeJob = match serde_json::from_slice(&message.body) {
            Ok(job) => job,
            Err(error) => return Outcome::DeadLetter(format!("not a charge job: {error}")),
        };
        let span = tracing::info_span!("charge", charge_id = job.charge_id, attempt = job.attempt);
        self.execute(job, message.attempt).instrument(span).await
    }
}
