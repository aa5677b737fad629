//! Back-office charges of saved cards (`charges`): a row first, then a message on `kassa.charges`
//! that the executor turns into an off-session PaymentIntent under the Idempotency-Key recorded
//! on the row (`attempt_key`, `kassa:{installation}:charge:{id}:{attempt}`).
//!
//! [`create_charge`] is idempotent on the client's `reference`: creating it again, even
//! concurrently, returns the existing row. The executor serialises its work on one charge with
//! [`charge_for_update`], and every state change is one guarded `UPDATE` that says whether it
//! applied, so a redelivered or stale message cannot move a charge backwards:
//!
//! | from | to |
//! |---|---|
//! | `pending` | `succeeded`, `processing`, `requires_recheckout`, `failed`, `needs_review` |
//! | `processing` | `succeeded`, `failed`, `requires_recheckout` |
//! | `requires_recheckout` | `retrying` (attempt + 1), `failed` |
//! | `retrying` | `succeeded`, `processing`, `requires_recheckout`, `failed`, `needs_review` |
//! | `needs_review` | `succeeded`, `processing`, `requires_recheckout`, `failed` (what Stripe or a person says), `pending`/`retrying` ([`requeue_charge`]) |
//! | `succeeded`, `failed` | nothing: they are final |
//!
//! Before the first PaymentIntent create of an attempt the executor records, and commits,
//! [`record_attempt_start`]: when, which card, which key. Every later run of the attempt sees
//! `attempt_started_at` and looks the attempt up on Stripe before sending anything;
//! [`rekey_attempt`] replaces a key that Stripe may have forgotten (23 hours old) or that answered
//! for another object, only after such a lookup found nothing.
//!
//! The outcomes of a PaymentIntent ([`mark_charge_processing`], [`mark_charge_succeeded`],
//! [`mark_charge_requires_recheckout`]) apply only to the attempt they name, and only to the
//! PaymentIntent already recorded for it if there is one. [`mark_charge_retrying`] forgets the
//! previous attempt (its PaymentIntent, start, card and key), so that a late webhook about it
//! cannot settle the retry. `decline_code`, `failure_code` and `failure_message` describe the
//! latest decline or failure and are kept after a successful retry: the record still says why it
//! needed a new card.

mod transitions;

pub use transitions::{
    mark_charge_failed, mark_charge_needs_review, mark_charge_processing,
    mark_charge_requires_recheckout, mark_charge_retrying, mark_charge_succeeded,
    record_attempt_card, record_attempt_start, rekey_attempt, requeue_charge,
    resolve_charge_succeeded, set_recheckout_session, settle_charge_by_payment_intent,
};

use std::fmt;
use std::str::FromStr;

use sqlx::{PgConnection, PgExecutor};

use crate::{OffsetDateTime, Store, StoreError};

/// Where a charge stands; see the [module documentation](self) for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChargeStatus {
    /// Recorded, not yet attempted (or attempted without a recorded outcome).
    Pending,
    /// Stripe accepted the PaymentIntent but has not settled it; a webhook will.
    Processing,
    /// The money was taken. Final.
    Succeeded,
    /// The saved card was declined; the customer was sent a link to give a new one.
    RequiresRecheckout,
    /// The customer gave a new card; the charge is being attempted again.
    Retrying,
    /// Given up, with Stripe's (or Kassa's) code and message. Final.
    Failed,
    /// An attempt first sent more than 23 hours ago whose PaymentIntent Stripe could not be asked
    /// about: Kassa neither sends it again (Stripe has forgotten its key) nor gives up (it may
    /// have been charged). A person resolves it (`kassa charges resolve`); a `payment_intent.*`
    /// webhook for the attempt settles it too.
    NeedsReview,
}

impl ChargeStatus {
    /// The value stored in `charges.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Pending => "pending",
            ChargeStatus::Processing => "processing",
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::RequiresRecheckout => "requires_recheckout",
            ChargeStatus::Retrying => "retrying",
            ChargeStatus::Failed => "failed",
            ChargeStatus::NeedsReview => "needs_review",
        }
    }

    /// Whether no transition leaves this status (`succeeded`, `failed`).
    pub fn is_final(self) -> bool {
        matches!(self, ChargeStatus::Succeeded | ChargeStatus::Failed)
    }
}

impl fmt::Display for ChargeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a string that is not a [`ChargeStatus`].
#[derive(Debug, thiserror::Error)]
#[error("unknown charge status {0:?}")]
pub struct UnknownChargeStatus(pub String);

impl FromStr for ChargeStatus {
    type Err = UnknownChargeStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ChargeStatus::Pending),
            "processing" => Ok(ChargeStatus::Processing),
            "succeeded" => Ok(ChargeStatus::Succeeded),
            "requires_recheckout" => Ok(ChargeStatus::RequiresRecheckout),
            "retrying" => Ok(ChargeStatus::Retrying),
            "failed" => Ok(ChargeStatus::Failed),
            "needs_review" => Ok(ChargeStatus::NeedsReview),
            other => Err(UnknownChargeStatus(other.to_owned())),
        }
    }
}

/// A charge to record, as the back-office API, the CLI or a CSV import asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewCharge {
    /// The client's idempotency handle, unique across charges.
    pub reference: String,
    /// The customer to charge, `cus_…`.
    pub customer_id: String,
    /// The card to charge, `pm_…`; `None` means the customer's default when the charge runs.
    pub payment_method_id: Option<String>,
    /// The amount in the currency's minor unit (cents; yen as is); must be positive.
    pub amount: i64,
    /// Lower-case ISO 4217 code, e.g. `usd`.
    pub currency: String,
    /// Shown on the PaymentIntent and to people.
    pub description: Option<String>,
    /// The client's own key-value pairs, a JSON object (`{}` for none).
    pub metadata: serde_json::Value,
    /// Whether the charge is for live mode.
    pub livemode: bool,
}

/// A charge as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ChargeRecord {
    /// Kassa's id, part of the Idempotency-Key and of the re-checkout's metadata.
    pub id: i64,
    /// The client's idempotency handle.
    pub reference: String,
    /// The customer to charge.
    pub customer_id: String,
    /// The card to charge; `None` means the customer's default when the charge runs.
    pub payment_method_id: Option<String>,
    /// The amount in the currency's minor unit.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Shown on the PaymentIntent and to people.
    pub description: Option<String>,
    /// The client's own key-value pairs, a JSON object.
    pub metadata: serde_json::Value,
    /// Where the charge stands.
    pub status: ChargeStatus,
    /// The current attempt, from 1; part of the Idempotency-Key.
    pub attempt: i32,
    /// The current attempt's PaymentIntent, `pi_…`, once known.
    pub payment_intent_id: Option<String>,
    /// The card issuer's reason for the latest decline, e.g. `insufficient_funds`.
    pub decline_code: Option<String>,
    /// Stripe's error code (or Kassa's reason) for the latest decline or failure.
    pub failure_code: Option<String>,
    /// The message that goes with `failure_code`.
    pub failure_message: Option<String>,
    /// The Checkout Session, `cs_…`, the customer can give a new card with now.
    pub recheckout_session_id: Option<String>,
    /// Where the customer completes that session.
    pub recheckout_url: Option<String>,
    /// When Stripe expires that session.
    pub recheckout_expires_at: Option<OffsetDateTime>,
    /// Reminders (with a new link) sent since the latest decline.
    pub reminders_sent: i32,
    /// Whether the charge is for live mode.
    pub livemode: bool,
    /// When the charge was recorded.
    pub created_at: OffsetDateTime,
    /// When the charge last changed.
    pub updated_at: OffsetDateTime,
    /// When the current attempt was first sent to Stripe; `None`: not yet. Recorded (and
    /// committed) before the first PaymentIntent create, so a later run knows to look first.
    pub attempt_started_at: Option<OffsetDateTime>,
    /// The card the current attempt charges, resolved once when it started.
    pub attempt_payment_method_id: Option<String>,
    /// The Idempotency-Key of the current attempt's PaymentIntent create.
    pub attempt_key: Option<String>,
    /// How many times the current attempt's key was replaced (0: the first key).
    pub attempt_key_generation: i32,
    /// When `attempt_key` was first used: Stripe forgets a key 24 hours after that.
    pub attempt_key_started_at: Option<OffsetDateTime>,
    /// Why the charge is (or was) in `needs_review`.
    pub review_reason: Option<String>,
}

/// What Stripe says became of a PaymentIntent, for [`settle_charge_by_payment_intent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentIntentOutcome {
    /// `payment_intent.succeeded`.
    Succeeded,
    /// `payment_intent.payment_failed`, with `last_payment_error`'s code and message.
    Failed {
        /// Stripe's error code, e.g. `card_declined`.
        code: String,
        /// Stripe's message.
        message: String,
    },
    /// `payment_intent.processing`.
    Processing,
}

/// A row as PostgreSQL returns it; `status` is parsed into [`ChargeRecord`].
struct ChargeRow {
    id: i64,
    reference: String,
    customer_id: String,
    payment_method_id: Option<String>,
    amount: i64,
    currency: String,
    description: Option<String>,
    metadata: serde_json::Value,
    status: String,
    attempt: i32,
    payment_intent_id: Option<String>,
    decline_code: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    recheckout_session_id: Option<String>,
    recheckout_url: Option<String>,
    recheckout_expires_at: Option<OffsetDateTime>,
    reminders_sent: i32,
    livemode: bool,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    attempt_started_at: Option<OffsetDateTime>,
    attempt_payment_method_id: Option<String>,
    attempt_key: Option<String>,
    attempt_key_generation: i32,
    attempt_key_started_at: Option<OffsetDateTime>,
    review_reason: Option<String>,
}

impl TryFrom<ChargeRow> for ChargeRecord {
    type Error = StoreError;

    fn try_from(row: ChargeRow) -> Result<Self, Self::Error> {
        let status = row.status.parse().map_err(|e: UnknownChargeStatus| {
            StoreError::Permanent(sqlx::Error::Decode(Box::new(e)))
        })?;
        Ok(ChargeRecord {
            id: row.id,
            reference: row.reference,
            customer_id: row.customer_id,
            payment_method_id: row.payment_method_id,
            amount: row.amount,
            currency: row.currency,
            description: row.description,
            metadata: row.metadata,
            status,
            attempt: row.attempt,
            payment_intent_id: row.payment_intent_id,
            decline_code: row.decline_code,
            failure_code: row.failure_code,
            failure_message: row.failure_message,
            recheckout_session_id: row.recheckout_session_id,
            recheckout_url: row.recheckout_url,
            recheckout_expires_at: row.recheckout_expires_at,
            reminders_sent: row.reminders_sent,
            livemode: row.livemode,
            created_at: row.created_at,
            updated_at: row.updated_at,
            attempt_started_at: row.attempt_started_at,
            attempt_payment_method_id: row.attempt_payment_method_id,
            attempt_key: row.attempt_key,
            attempt_key_generation: row.attempt_key_generation,
            attempt_key_started_at: row.attempt_key_started_at,
            review_reason: row.review_reason,
        })
    }
}

fn record(row: Option<ChargeRow>) -> Result<Option<ChargeRecord>, StoreError> {
    row.map(ChargeRecord::try_from).transpose()
}

/// Records `charge` as `pending`, attempt 1, or returns the charge already recorded under its
/// reference. The flag is true when this call created the row.
///
/// Concurrent calls with one reference yield one row: the second insert waits for the first and
/// then returns its row. The existing row is returned as stored, whatever `charge` says
/// otherwise; compare them to refuse a reference reused for a different charge.
pub async fn create_charge(
    conn: &mut PgConnection,
    charge: &NewCharge,
) -> Result<(ChargeRecord, bool), StoreError> {
    let inserted = sqlx::query_as!(
        ChargeRow,
        "INSERT INTO charges (reference, customer_id, payment_method_id, amount, currency,
             description, metadata, status, livemode)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
         ON CONFLICT (reference) DO NOTHING
         RETURNING id, reference, customer_id, payment_method_id, amount, currency, description,
                   metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                   failure_message, recheckout_session_id, recheckout_url,
                   recheckout_expires_at, reminders_sent, livemode, created_at, updated_at,
                   attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason",
        charge.reference,
        charge.customer_id,
        charge.payment_method_id,
        charge.amount,
        charge.currency,
        charge.description,
        charge.metadata,
        charge.livemode,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok((row.try_into()?, true));
    }
    // DO NOTHING waited for a concurrent insert of the reference to commit; under READ
    // COMMITTED this new statement sees its row.
    let existing = charge_by_reference(conn, &charge.reference)
        .await?
        .ok_or(StoreError::Permanent(sqlx::Error::RowNotFound))?;
    Ok((existing, false))
}

/// Charge `id`, if recorded.
pub async fn charge<'e>(
    executor: impl PgExecutor<'e>,
    id: i64,
) -> Result<Option<ChargeRecord>, StoreError> {
    let row = sqlx::query_as!(
        ChargeRow,
        "SELECT id, reference, customer_id, payment_method_id, amount, currency, description,
                metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                failure_message, recheckout_session_id, recheckout_url, recheckout_expires_at,
                reminders_sent, livemode, created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason
         FROM charges WHERE id = $1",
        id,
    )
    .fetch_optional(executor)
    .await?;
    record(row)
}

/// The charge recorded under the client's `reference`, if any.
pub async fn charge_by_reference<'e>(
    executor: impl PgExecutor<'e>,
    reference: &str,
) -> Result<Option<ChargeRecord>, StoreError> {
    let row = sqlx::query_as!(
        ChargeRow,
        "SELECT id, reference, customer_id, payment_method_id, amount, currency, description,
                metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                failure_message, recheckout_session_id, recheckout_url, recheckout_expires_at,
                reminders_sent, livemode, created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason
         FROM charges WHERE reference = $1",
        reference,
    )
    .fetch_optional(executor)
    .await?;
    record(row)
}

/// The charge whose current re-checkout is Checkout Session `session_id`, if any. A session
/// replaced by a reminder's new one no longer names its charge here.
pub async fn charge_by_recheckout_session<'e>(
    executor: impl PgExecutor<'e>,
    session_id: &str,
) -> Result<Option<ChargeRecord>, StoreError> {
    let row = sqlx::query_as!(
        ChargeRow,
        "SELECT id, reference, customer_id, payment_method_id, amount, currency, description,
                metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                failure_message, recheckout_session_id, recheckout_url, recheckout_expires_at,
                reminders_sent, livemode, created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason
         FROM charges WHERE recheckout_session_id = $1",
        session_id,
    )
    .fetch_optional(executor)
    .await?;
    record(row)
}

/// Up to `limit` charges with id above `after_id` (all when `None`), in id order, only those in
/// `status` and of `livemode` when given: pass the last id of a page to get the next.
pub async fn list_charges<'e>(
    executor: impl PgExecutor<'e>,
    status: Option<ChargeStatus>,
    livemode: Option<bool>,
    limit: u32,
    after_id: Option<i64>,
) -> Result<Vec<ChargeRecord>, StoreError> {
    let rows = sqlx::query_as!(
        ChargeRow,
        "SELECT id, reference, customer_id, payment_method_id, amount, currency, description,
                metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                failure_message, recheckout_session_id, recheckout_url, recheckout_expires_at,
                reminders_sent, livemode, created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason
         FROM charges
         WHERE ($1::text IS NULL OR status = $1) AND id > COALESCE($2::bigint, 0)
           AND ($4::boolean IS NULL OR livemode = $4)
         ORDER BY id
         LIMIT $3",
        status.map(ChargeStatus::as_str),
        after_id,
        i64::from(limit),
        livemode,
    )
    .fetch_all(executor)
    .await?;
    rows.into_iter().map(ChargeRecord::try_from).collect()
}

/// Charge `id`, locked (`SELECT … FOR UPDATE`) until the caller's transaction ends: a second
/// executor of the same charge waits here, then sees what the first committed.
///
/// Waits as long as the transaction's `lock_timeout` allows (none by default).
pub async fn charge_for_update(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<ChargeRecord>, StoreError> {
    let row = sqlx::query_as!(
        ChargeRow,
        "SELECT id, reference, customer_id, payment_method_id, amount, currency, description,
                metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                failure_message, recheckout_session_id, recheckout_url, recheckout_expires_at,
                reminders_sent, livemode, created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason
         FROM charges WHERE id = $1 FOR UPDATE",
        id,
    )
    .fetch_optional(conn)
    .await?;
    record(row)
}

impl Store {
    /// Charge `id`, if recorded.
    pub async fn charge(&self, id: i64) -> Result<Option<ChargeRecord>, StoreError> {
        charge(&self.pool, id).await
    }

    /// The charge recorded under the client's `reference`, if any.
    pub async fn charge_by_reference(
        &self,
        reference: &str,
    ) -> Result<Option<ChargeRecord>, StoreError> {
        charge_by_reference(&self.pool, reference).await
    }

    /// The charge whose current re-checkout is `session_id`; see [`charge_by_recheckout_session`].
    pub async fn charge_by_recheckout_session(
        &self,
        session_id: &str,
    ) -> Result<Option<ChargeRecord>, StoreError> {
        charge_by_recheckout_session(&self.pool, session_id).await
    }

    /// How many charges are in each status, in the order of [`ChargeStatus`]'s variants;
    /// statuses without charges are left out.
    pub async fn charge_counts(&self) -> Result<Vec<(ChargeStatus, i64)>, StoreError> {
        let rows =
            sqlx::query!(r#"SELECT status, count(*) AS "count!" FROM charges GROUP BY status"#)
                .fetch_all(&self.pool)
                .await?;
        let mut counts = rows
            .into_iter()
            .map(|row| {
                let status = row
                    .status
                    .parse::<ChargeStatus>()
                    .map_err(|e| StoreError::Permanent(sqlx::Error::Decode(Box::new(e))))?;
                Ok((status, row.count))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        counts.sort_by_key(|(status, _)| *status as u8);
        Ok(counts)
    }

    /// A page of charges in id order; see [`list_charges`].
    pub async fn list_charges(
        &self,
        status: Option<ChargeStatus>,
        livemode: Option<bool>,
        limit: u32,
        after_id: Option<i64>,
    ) -> Result<Vec<ChargeRecord>, StoreError> {
        list_charges(&self.pool, status, livemode, limit, after_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in [
            ChargeStatus::Pending,
            ChargeStatus::Processing,
            ChargeStatus::Succeeded,
            ChargeStatus::RequiresRecheckout,
            ChargeStatus::Retrying,
            ChargeStatus::Failed,
            ChargeStatus::NeedsReview,
        ] {
            assert_eq!(status.as_str().parse::<ChargeStatus>().ok(), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert!("refunded".parse::<ChargeStatus>().is_err());
        assert!(ChargeStatus::Succeeded.is_final() && ChargeStatus::Failed.is_final());
        assert!(!ChargeStatus::RequiresRecheckout.is_final());
        assert!(!ChargeStatus::NeedsReview.is_final());
    }
}
