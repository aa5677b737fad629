//! The records of a card saved by a completed setup session, written in one statement: the
//! customer, the card, the notes of Kassa's own writes ([`crate::own_writes`]), the Checkout
//! Session and, in the webhook's transaction, the event's inbox mark.
//!
//! Each part is the same upsert, with the same rules, as the per-table function other callers
//! use ([`crate::customers::upsert_customer`], [`crate::customers::upsert_payment_method`],
//! [`crate::own_writes::record_own_writes`], [`crate::checkout_sessions::upsert_checkout_session`],
//! [`crate::EventTx::complete`]); here they are data-modifying `WITH` parts of one statement,
//! which PostgreSQL runs exactly once each, to completion, whether or not the statement reads
//! their output (docs: "Data-Modifying Statements in WITH"). They touch different tables, so the
//! one snapshot they share changes nothing. One statement is atomic: every record is written or
//! none is, and they become visible when the caller's transaction commits.

use sqlx::PgConnection;

use crate::events::{InboxMark, InboxMarked};
use crate::{CheckoutSessionRecord, CustomerRecord, PaymentMethodRecord, StoreError};

/// What a completed setup session saved, as Kassa records it.
#[derive(Debug, Clone, Copy)]
pub struct SavedCardRecords<'a> {
    /// The customer, with the card as its default, as Stripe answered the set-default write
    /// sent under the customer's lock, which the caller still holds: observed when written, as
    /// [`crate::customers::upsert_customer`] records it.
    pub customer: &'a CustomerRecord,
    /// The card.
    pub payment_method: &'a PaymentMethodRecord,
    /// Kassa's writes whose answers these records hold: (Idempotency-Key, object id) pairs.
    pub own_writes: &'a [(&'a str, &'a str)],
    /// The Checkout Session.
    pub session: &'a CheckoutSessionRecord,
}

/// Writes `records` in one round trip; with `inbox`, marks that claimed event processed in the
/// same statement and returns the proof for [`crate::EventTx::complete_marked`]. `inbox` must be
/// the mark of the claim whose transaction `conn` is.
pub async fn record_saved_card(
    conn: &mut PgConnection,
    records: &SavedCardRecords<'_>,
    inbox: Option<&InboxMark>,
) -> Result<Option<InboxMarked>, StoreError> {
    let SavedCardRecords {
        customer,
        payment_method,
        own_writes,
        session,
    } = *records;
    let (keys, objects): (Vec<String>, Vec<String>) = own_writes
        .iter()
        .map(|(key, object)| ((*key).to_owned(), (*object).to_owned()))
        .unzip();
    let event_id = inbox.map(InboxMark::event_id);
    let marked = sqlx::query_scalar!(
        r#"WITH customer AS (
               INSERT INTO customers (id, email, name, default_payment_method, deleted, livemode,
                                      observed_at)
               VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 THEN NULL ELSE statement_timestamp() END)
               ON CONFLICT (id) DO UPDATE SET
                   email = CASE WHEN EXCLUDED.deleted OR customers.observed_at > EXCLUDED.observed_at
                       THEN customers.email ELSE EXCLUDED.email END,
                   name = CASE WHEN EXCLUDED.deleted OR customers.observed_at > EXCLUDED.observed_at
                       THEN customers.name ELSE EXCLUDED.name END,
                   default_payment_method =
                       CASE WHEN EXCLUDED.deleted OR customers.observed_at > EXCLUDED.observed_at
                       THEN customers.default_payment_method
                       ELSE EXCLUDED.default_payment_method END,
                   observed_at = GREATEST(customers.observed_at, EXCLUDED.observed_at),
                   deleted = customers.deleted OR EXCLUDED.deleted,
                   livemode = EXCLUDED.livemode,
                   updated_at = now()
               RETURNING 1
           ), payment_method AS (
               INSERT INTO payment_methods (id, customer_id, brand, last4, exp_month, exp_year,
                                            attached, livemode, details_observed_at)
               VALUES ($7, $8, $9, $10, $11, $12, $13, $14, now())
               ON CONFLICT (id) DO UPDATE SET
                   customer_id = COALESCE(EXCLUDED.customer_id, payment_methods.customer_id),
                   brand = CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                       THEN payment_methods.brand
                       ELSE COALESCE(EXCLUDED.brand, payment_methods.brand) END,
                   last4 = CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                       THEN payment_methods.last4
                       ELSE COALESCE(EXCLUDED.last4, payment_methods.last4) END,
                   exp_month =
                       CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                       THEN payment_methods.exp_month
                       ELSE COALESCE(EXCLUDED.exp_month, payment_methods.exp_month) END,
                   exp_year =
                       CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                       THEN payment_methods.exp_year
                       ELSE COALESCE(EXCLUDED.exp_year, payment_methods.exp_year) END,
                   details_observed_at =
                       GREATEST(payment_methods.details_observed_at, EXCLUDED.details_observed_at),
                   attached = payment_methods.detached_at IS NULL
                       AND (payment_methods.attached OR EXCLUDED.attached),
                   livemode = COALESCE(EXCLUDED.livemode, payment_methods.livemode),
                   updated_at = now()
               RETURNING 1
           ), notes AS (
               INSERT INTO stripe_own_writes (idempotency_key, object_id)
               SELECT * FROM unnest($15::text[], $16::text[])
               ON CONFLICT DO NOTHING
               RETURNING 1
           ), session AS (
               INSERT INTO checkout_sessions (id, mode, status, livemode, customer_id, purpose,
                   charge_id, setup_intent_id, payment_intent_id, payment_method_id, url,
                   expires_at, completed_at)
               VALUES ($17, $18, $19, $20, $21, $22, (SELECT id FROM charges WHERE id = $23),
                       $24, $25, $26, $27, $28, $29)
               ON CONFLICT (id) DO UPDATE SET
                   mode = EXCLUDED.mode,
                   status = CASE WHEN checkout_sessions.status IN ('complete', 'expired')
                       THEN checkout_sessions.status ELSE EXCLUDED.status END,
                   livemode = EXCLUDED.livemode,
                   customer_id = COALESCE(EXCLUDED.customer_id, checkout_sessions.customer_id),
                   purpose = EXCLUDED.purpose,
                   charge_id = COALESCE(EXCLUDED.charge_id, checkout_sessions.charge_id),
                   setup_intent_id =
                       COALESCE(EXCLUDED.setup_intent_id, checkout_sessions.setup_intent_id),
                   payment_intent_id =
                       COALESCE(EXCLUDED.payment_intent_id, checkout_sessions.payment_intent_id),
                   payment_method_id =
                       COALESCE(EXCLUDED.payment_method_id, checkout_sessions.payment_method_id),
                   url = COALESCE(EXCLUDED.url, checkout_sessions.url),
                   expires_at = COALESCE(EXCLUDED.expires_at, checkout_sessions.expires_at),
                   completed_at = COALESCE(checkout_sessions.completed_at, EXCLUDED.completed_at),
                   updated_at = now()
               RETURNING 1
           ), mark AS (
               UPDATE stripe_events
               SET processed_at = clock_timestamp(), attempts = attempts + 1
               WHERE id = $30
               RETURNING 1
           )
           SELECT EXISTS (SELECT 1 FROM mark) AS "marked!""#,
        customer.id,
        customer.email,
        customer.name,
        customer.default_payment_method,
        customer.deleted,
        customer.livemode,
        payment_method.id,
        payment_method.customer_id,
        payment_method.brand,
        payment_method.last4,
        payment_method.exp_month,
        payment_method.exp_year,
        payment_method.attached,
        payment_method.livemode,
        &keys,
        &objects,
        session.id,
        session.mode,
        session.status,
        session.livemode,
        session.customer_id,
        session.purpose.as_str(),
        session.charge_id,
        session.setup_intent_id,
        session.payment_intent_id,
        session.payment_method_id,
        session.url,
        session.expires_at,
        session.completed_at,
        event_id,
    )
    .fetch_one(conn)
    .await?;
    Ok(match event_id {
        Some(event_id) if marked => Some(InboxMarked::new(event_id)),
        _ => None,
    })
}
