//! How a charge moves from one status to the next: each transition is one `UPDATE` guarded by
//! the status (and attempt, and PaymentIntent) it expects, and says whether it applied — so a
//! redelivered or stale message cannot move a charge backwards (the table of transitions is in
//! the [parent module's documentation](super)).

use super::{record, ChargeRecord, ChargeRow, PaymentIntentOutcome};
use crate::{OffsetDateTime, StoreError};
use sqlx::PgConnection;

/// `pending`, `retrying` or `needs_review` → `processing` for `attempt`, recording its PaymentIntent. Returns
/// false (and changes nothing) if the charge is elsewhere, on another attempt, or already names
/// another PaymentIntent.
pub async fn mark_charge_processing(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    payment_intent_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET status = 'processing', payment_intent_id = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND status IN ('pending', 'retrying', 'needs_review')
           AND (payment_intent_id IS NULL OR payment_intent_id = $3)",
        id,
        attempt,
        payment_intent_id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `pending`, `processing`, `retrying` or `needs_review` → `succeeded` for `attempt`, recording its
/// PaymentIntent. Returns false (and changes nothing) if the charge is elsewhere (a redelivery
/// finds it `succeeded` already), on another attempt, or already names another PaymentIntent.
pub async fn mark_charge_succeeded(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    payment_intent_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET status = 'succeeded', payment_intent_id = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2
           AND status IN ('pending', 'processing', 'retrying', 'needs_review')
           AND (payment_intent_id IS NULL OR payment_intent_id = $3)",
        id,
        attempt,
        payment_intent_id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Any open status (`pending`, `processing`, `requires_recheckout`, `retrying`,
/// `needs_review`) → `failed`, with
/// Stripe's code and message or Kassa's reason (e.g. a re-checkout link that expired twice).
/// Returns false (and changes nothing) if the charge is unknown or final already.
pub async fn mark_charge_failed(
    conn: &mut PgConnection,
    id: i64,
    code: &str,
    message: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET status = 'failed', failure_code = $2, failure_message = $3,
             updated_at = now()
         WHERE id = $1
           AND status IN ('pending', 'processing', 'requires_recheckout', 'retrying', 'needs_review')",
        id,
        code,
        message,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `pending`, `processing`, `retrying` or `needs_review` → `requires_recheckout` for `attempt`:
/// the saved card
/// was declined. Records the PaymentIntent (when Stripe's error names one), the decline code and
/// Stripe's code and message, and clears the previous re-checkout link and reminder count; set
/// the new link with [`set_recheckout_session`]. Returns false (and changes nothing) if the
/// charge is elsewhere, on another attempt, or already names another PaymentIntent.
pub async fn mark_charge_requires_recheckout(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    payment_intent_id: Option<&str>,
    decline_code: Option<&str>,
    code: &str,
    message: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET status = 'requires_recheckout',
             payment_intent_id = COALESCE($3, payment_intent_id),
             decline_code = $4, failure_code = $5, failure_message = $6,
             recheckout_session_id = NULL, recheckout_url = NULL, recheckout_expires_at = NULL,
             reminders_sent = 0, updated_at = now()
         WHERE id = $1 AND attempt = $2
           AND status IN ('pending', 'processing', 'retrying', 'needs_review')
           AND ($3::text IS NULL OR payment_intent_id IS NULL OR payment_intent_id = $3)",
        id,
        attempt,
        payment_intent_id,
        decline_code,
        code,
        message,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records the Checkout Session a `requires_recheckout` charge's customer re-pays with, and how
/// many reminders were sent (0 with the first link, 1 with the reminder's new link). Returns
/// false (and changes nothing) if the charge is not awaiting a re-checkout, already has this
/// session, or has sent more reminders than `reminders_sent`.
pub async fn set_recheckout_session(
    conn: &mut PgConnection,
    id: i64,
    session_id: &str,
    url: &str,
    expires_at: OffsetDateTime,
    reminders_sent: i32,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET recheckout_session_id = $2, recheckout_url = $3,
             recheckout_expires_at = $4, reminders_sent = $5, updated_at = now()
         WHERE id = $1 AND status = 'requires_recheckout'
           AND recheckout_session_id IS DISTINCT FROM $2 AND reminders_sent <= $5",
        id,
        session_id,
        url,
        expires_at,
        reminders_sent,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `requires_recheckout` → `retrying` as `next_attempt`, which must be the current attempt + 1,
/// on `payment_method_id`: the card the customer just gave (the re-pay session's), which the
/// next attempt charges whatever card the charge named before. Forgets the previous attempt (its
/// PaymentIntent, start, card and key). Returns false (and changes nothing) otherwise, e.g. when
/// the completion of the session is redelivered.
pub async fn mark_charge_retrying(
    conn: &mut PgConnection,
    id: i64,
    next_attempt: i32,
    payment_method_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET status = 'retrying', attempt = $2, payment_method_id = $3,
             payment_intent_id = NULL, attempt_started_at = NULL,
             attempt_payment_method_id = NULL, attempt_key = NULL, attempt_key_generation = 0,
             attempt_key_started_at = NULL, updated_at = now()
         WHERE id = $1 AND status = 'requires_recheckout' AND attempt + 1 = $2",
        id,
        next_attempt,
        payment_method_id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records that `attempt` of a `pending` or `retrying` charge is about to be sent: now, on card
/// `payment_method_id`, under Idempotency-Key `key` (generation 0), in mode `livemode`. Commit
/// it before sending. Returns false (and changes nothing) if the attempt was already started,
/// is not the current one, or the charge is elsewhere.
pub async fn record_attempt_start(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    payment_method_id: &str,
    key: &str,
    livemode: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET attempt_started_at = now(), attempt_payment_method_id = $3,
             attempt_key = $4, attempt_key_generation = 0, attempt_key_started_at = now(),
             livemode = $5, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND status IN ('pending', 'retrying')
           AND attempt_started_at IS NULL",
        id,
        attempt,
        payment_method_id,
        key,
        livemode,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records the card of a started `attempt` that has none (a charge started before cards were
/// recorded with the attempt). Returns false if it has one already or moved on.
pub async fn record_attempt_card(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    payment_method_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET attempt_payment_method_id = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND attempt_started_at IS NOT NULL
           AND attempt_payment_method_id IS NULL",
        id,
        attempt,
        payment_method_id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Replaces the key of a started, open `attempt` whose key generation is still `generation` with
/// `key` (generation + 1, first used now). Only after a lookup on Stripe found no PaymentIntent
/// for the attempt; commit it before sending. Returns false (and changes nothing) if another run
/// replaced the key first or the charge moved on.
pub async fn rekey_attempt(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    generation: i32,
    key: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET attempt_key = $4, attempt_key_generation = $3 + 1,
             attempt_key_started_at = now(), updated_at = now()
         WHERE id = $1 AND attempt = $2 AND attempt_key_generation = $3
           AND attempt_started_at IS NOT NULL AND status IN ('pending', 'retrying')",
        id,
        attempt,
        generation,
        key,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `pending` or `retrying` → `needs_review` for `attempt`, with the reason a person should read.
/// Returns false (and changes nothing) if the charge is elsewhere or on another attempt.
pub async fn mark_charge_needs_review(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    reason: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE charges SET status = 'needs_review', review_reason = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND status IN ('pending', 'retrying')",
        id,
        attempt,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `needs_review` → `succeeded` by a person's word, checked against Stripe by the caller: the
/// charge was paid by PaymentIntent `payment_intent_id`. Returns false (and changes nothing)
/// if the charge is not in review, or the PaymentIntent already settles another charge.
pub async fn resolve_charge_succeeded(
    conn: &mut PgConnection,
    id: i64,
    payment_intent_id: &str,
) -> Result<bool, StoreError> {
    let taken = sqlx::query_scalar!(
        "SELECT id FROM charges WHERE payment_intent_id = $1 AND id <> $2",
        payment_intent_id,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Ok(false);
    }
    let done = sqlx::query!(
        "UPDATE charges SET status = 'succeeded', payment_intent_id = $2, updated_at = now()
         WHERE id = $1 AND status = 'needs_review'",
        id,
        payment_intent_id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `needs_review` → back in line (`pending` for attempt 1, `retrying` after a re-checkout), its
/// attempt's start, card and key kept: the executor looks the attempt up on Stripe again before
/// it sends anything. The caller queues the job. Returns the charge as updated, or `None` if it
/// is not in review.
pub async fn requeue_charge(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<ChargeRecord>, StoreError> {
    let row = sqlx::query_as!(
        ChargeRow,
        "UPDATE charges
         SET status = CASE WHEN attempt = 1 THEN 'pending' ELSE 'retrying' END, updated_at = now()
         WHERE id = $1 AND status = 'needs_review'
         RETURNING id, reference, customer_id, payment_method_id, amount, currency, description,
                   metadata, status, attempt, payment_intent_id, decline_code, failure_code,
                   failure_message, recheckout_session_id, recheckout_url,
                   recheckout_expires_at, reminders_sent, livemode, created_at, updated_at,
                   attempt_started_at, attempt_payment_method_id,
                   attempt_key, attempt_key_generation, attempt_key_started_at, review_reason",
        id,
    )
    .fetch_optional(conn)
    .await?;
    record(row)
}

/// Applies a `payment_intent.*` webhook's `outcome` to the charge whose current PaymentIntent is
/// `payment_intent_id`, only while that charge is open (`pending`, `processing`, `retrying`,
/// `needs_review`; `processing` only from `pending`, `retrying` or `needs_review`). Returns the charge as updated, or `None` if
/// no open charge has that PaymentIntent or the outcome changes nothing.
pub async fn settle_charge_by_payment_intent(
    conn: &mut PgConnection,
    payment_intent_id: &str,
    outcome: &PaymentIntentOutcome,
) -> Result<Option<ChargeRecord>, StoreError> {
    let row = match outcome {
        PaymentIntentOutcome::Succeeded => {
            sqlx::query_as!(
                ChargeRow,
                "UPDATE charges SET status = 'succeeded', updated_at = now()
                 WHERE payment_intent_id = $1
                   AND status IN ('pending', 'processing', 'retrying', 'needs_review')
                 RETURNING id, reference, customer_id, payment_method_id, amount, currency,
                           description, metadata, status, attempt, payment_intent_id,
                           decline_code, failure_code, failure_message, recheckout_session_id,
                           recheckout_url, recheckout_expires_at, reminders_sent, livemode,
                           created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason",
                payment_intent_id,
            )
            .fetch_optional(conn)
            .await?
        }
        PaymentIntentOutcome::Failed { code, message } => {
            sqlx::query_as!(
                ChargeRow,
                "UPDATE charges SET status = 'failed', failure_code = $2, failure_message = $3,
                     updated_at = now()
                 WHERE payment_intent_id = $1
                   AND status IN ('pending', 'processing', 'retrying', 'needs_review')
                 RETURNING id, reference, customer_id, payment_method_id, amount, currency,
                           description, metadata, status, attempt, payment_intent_id,
                           decline_code, failure_code, failure_message, recheckout_session_id,
                           recheckout_url, recheckout_expires_at, reminders_sent, livemode,
                           created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason",
                payment_intent_id,
                code,
                message,
            )
            .fetch_optional(conn)
            .await?
        }
        PaymentIntentOutcome::Processing => {
            sqlx::query_as!(
                ChargeRow,
                "UPDATE charges SET status = 'processing', updated_at = now()
                 WHERE payment_intent_id = $1 AND status IN ('pending', 'retrying', 'needs_review')
                 RETURNING id, reference, customer_id, payment_method_id, amount, currency,
                           description, metadata, status, attempt, payment_intent_id,
                           decline_code, failure_code, failure_message, recheckout_session_id,
                           recheckout_url, recheckout_expires_at, reminders_sent, livemode,
                           created_at, updated_at, attempt_started_at, attempt_payment_method_id,
                attempt_key, attempt_key_generation, attempt_key_started_at, review_reason",
                payment_intent_id,
            )
            .fetch_optional(conn)
            .await?
        }
    };
    record(row)
}
