//! Customers and their saved payment methods (`customers`, `payment_methods`).
//!
//! Events arrive out of order and the worker writes the state it just fetched from Stripe, so
//! writes are upserts where the last write wins, with four exceptions (an older write arriving
//! late cannot undo them):
//! - a customer's e-mail, name and default payment method are replaced only by ones observed at
//!   the same time or later: `observed_at` is when the writer wrote them, for a writer that read
//!   the customer under its lock ([`upsert_customer`]), or a time of the database's clock read
//!   before the Stripe read, for one that did not ([`upsert_customer_read_without_lock`])
//!   (docs/ARCHITECTURE.md, "A customer's record: the newest observation wins");
//! - a card's details (brand, last4, expiry) are replaced only by details observed at the same
//!   time or later: `details_observed_at` is the start of the writing transaction, which every
//!   writer begins before the Stripe read its record comes from, or a time of the database's clock
//!   read before that read ([`upsert_payment_method_read_at`]) (docs/ARCHITECTURE.md, "A card's
//!   details: the newest observation wins");
//! - a deleted customer stays deleted (Stripe cannot undelete one);
//! - a detached payment method stays detached, and keeps the customer it was attached to (Stripe
//!   never reattaches a detached payment method). `attached` becomes true by an upsert and false
//!   only by [`mark_payment_method_detached`].

use sqlx::{PgConnection, PgExecutor};

use crate::{OffsetDateTime, Store, StoreError};

/// A Stripe customer as Kassa keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerRecord {
    /// Stripe's id, `cus_…`.
    pub id: String,
    /// The customer's e-mail address.
    pub email: Option<String>,
    /// The customer's name.
    pub name: Option<String>,
    /// `invoice_settings.default_payment_method`, the card off-session charges use.
    pub default_payment_method: Option<String>,
    /// Whether the customer was deleted in Stripe.
    pub deleted: bool,
    /// Whether the customer lives in live mode.
    pub livemode: bool,
}

/// A Stripe payment method as Kassa keeps it; card details are `None` for other kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentMethodRecord {
    /// Stripe's id, `pm_…`.
    pub id: String,
    /// The customer it is (or, once detached, was) attached to.
    pub customer_id: Option<String>,
    /// `card.brand`, e.g. `visa`.
    pub brand: Option<String>,
    /// `card.last4`.
    pub last4: Option<String>,
    /// `card.exp_month`, 1–12.
    pub exp_month: Option<i32>,
    /// `card.exp_year`, four digits.
    pub exp_year: Option<i32>,
    /// Whether it is attached to `customer_id` now; false once detached, whatever comes later.
    pub attached: bool,
    /// Whether it lives in live mode; `None` only for a row whose mode is not known yet (a
    /// detach recorded before the card was seen).
    pub livemode: Option<bool>,
}

/// Inserts or updates a customer read from Stripe under its lock
/// ([`crate::events::lock_stripe_object`], taken before the read and held until commit): its
/// e-mail, name and default payment method are observed now, and replace the recorded ones
/// unless those were observed later (see the [module documentation](self)). A `deleted` record
/// only marks the row deleted (Stripe's deleted-customer object carries nothing else); a deleted
/// row never becomes undeleted. Returns true when the customer was not recorded before.
pub async fn upsert_customer(
    conn: &mut PgConnection,
    customer: &CustomerRecord,
) -> Result<bool, StoreError> {
    upsert_customer_observed(conn, customer, Observed::UnderLock).await
}

/// Like [`upsert_customer`], for a customer read from Stripe without its lock: observed at
/// `observed_at`, a time of the database's clock read before the Stripe read `customer` comes
/// from ([`crate::Store::observation_time`]).
pub async fn upsert_customer_read_without_lock(
    conn: &mut PgConnection,
    customer: &CustomerRecord,
    observed_at: OffsetDateTime,
) -> Result<bool, StoreError> {
    upsert_customer_observed(conn, customer, Observed::At(observed_at)).await
}

/// When a customer record was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observed {
    /// Now (the statement's start): read under the customer's lock, which this transaction still
    /// holds, so no other writer under that lock read it since.
    UnderLock,
    /// At this time of the database's clock, read before the unlocked Stripe read.
    At(OffsetDateTime),
}

async fn upsert_customer_observed(
    conn: &mut PgConnection,
    customer: &CustomerRecord,
    observed: Observed,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO customers (id, email, name, default_payment_method, deleted, livemode,
                                observed_at)
         VALUES ($1, $2, $3, $4, $5, $6,
                 CASE WHEN $5 THEN NULL ELSE COALESCE($7::timestamptz, statement_timestamp()) END)
         ON CONFLICT (id) DO UPDATE SET
             email = CASE WHEN EXCLUDED.deleted OR customers.observed_at > EXCLUDED.observed_at
                 THEN customers.email ELSE EXCLUDED.email END,
             name = CASE WHEN EXCLUDED.deleted OR customers.observed_at > EXCLUDED.observed_at
                 THEN customers.name ELSE EXCLUDED.name END,
             default_payment_method =
                 CASE WHEN EXCLUDED.deleted OR customers.observed_at > EXCLUDED.observed_at
                 THEN customers.default_payment_method ELSE EXCLUDED.default_payment_method END,
             observed_at = GREATEST(customers.observed_at, EXCLUDED.observed_at),
             deleted = customers.deleted OR EXCLUDED.deleted,
             livemode = EXCLUDED.livemode,
             updated_at = now()
         RETURNING (xmax = 0) AS \"inserted!\"",
        customer.id,
        customer.email,
        customer.name,
        customer.default_payment_method,
        customer.deleted,
        customer.livemode,
        match observed {
            Observed::UnderLock => None,
            Observed::At(at) => Some(at),
        },
    )
    .fetch_one(conn)
    .await?;
    Ok(inserted)
}

/// Marks customer `id` deleted. Returns false if the customer is unknown; to record the deletion
/// of a customer never seen, upsert a record with `deleted: true`.
pub async fn mark_customer_deleted(conn: &mut PgConnection, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE customers SET deleted = true, updated_at = now() WHERE id = $1",
        id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Inserts or updates a payment method: card details from the newest observation (this
/// transaction's start: begin it before the Stripe read `payment_method` comes from, or see
/// [`upsert_payment_method_read_at`]),
/// `customer_id` kept once known, `attached` as described in the [module documentation](self).
/// Returns true when the payment method was not recorded before.
pub async fn upsert_payment_method(
    conn: &mut PgConnection,
    payment_method: &PaymentMethodRecord,
) -> Result<bool, StoreError> {
    upsert_payment_method_observed(conn, payment_method, None).await
}

/// Like [`upsert_payment_method`], for a card read from Stripe before this transaction began:
/// its details observed at `observed_at`, a time of the database's clock read before that read
/// ([`crate::Store::observation_time`]).
pub async fn upsert_payment_method_read_at(
    conn: &mut PgConnection,
    payment_method: &PaymentMethodRecord,
    observed_at: OffsetDateTime,
) -> Result<bool, StoreError> {
    upsert_payment_method_observed(conn, payment_method, Some(observed_at)).await
}

async fn upsert_payment_method_observed(
    conn: &mut PgConnection,
    payment_method: &PaymentMethodRecord,
    observed_at: Option<OffsetDateTime>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO payment_methods (id, customer_id, brand, last4, exp_month, exp_year, attached,
                                      livemode, details_observed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9::timestamptz, now()))
         ON CONFLICT (id) DO UPDATE SET
             customer_id = COALESCE(EXCLUDED.customer_id, payment_methods.customer_id),
             brand = CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                 THEN payment_methods.brand ELSE COALESCE(EXCLUDED.brand, payment_methods.brand) END,
             last4 = CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                 THEN payment_methods.last4 ELSE COALESCE(EXCLUDED.last4, payment_methods.last4) END,
             exp_month = CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                 THEN payment_methods.exp_month
                 ELSE COALESCE(EXCLUDED.exp_month, payment_methods.exp_month) END,
             exp_year = CASE WHEN payment_methods.details_observed_at > EXCLUDED.details_observed_at
                 THEN payment_methods.exp_year
                 ELSE COALESCE(EXCLUDED.exp_year, payment_methods.exp_year) END,
             details_observed_at =
                 GREATEST(payment_methods.details_observed_at, EXCLUDED.details_observed_at),
             attached = payment_methods.detached_at IS NULL
                 AND (payment_methods.attached OR EXCLUDED.attached),
             livemode = COALESCE(EXCLUDED.livemode, payment_methods.livemode),
             updated_at = now()
         RETURNING (xmax = 0) AS \"inserted!\"",
        payment_method.id,
        payment_method.customer_id,
        payment_method.brand,
        payment_method.last4,
        payment_method.exp_month,
        payment_method.exp_year,
        payment_method.attached,
        payment_method.livemode,
        observed_at,
    )
    .fetch_one(conn)
    .await?;
    Ok(inserted)
}

/// Marks payment method `id` detached for good. An id never seen is recorded as a detached
/// placeholder, so that a late upsert of an older state cannot make it look attached.
pub async fn mark_payment_method_detached(
    conn: &mut PgConnection,
    id: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO payment_methods (id, attached, detached_at) VALUES ($1, false, now())
         ON CONFLICT (id) DO UPDATE SET
             attached = false,
             detached_at = COALESCE(payment_methods.detached_at, now()),
             updated_at = now()",
        id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Customer `id`, if known.
pub async fn customer<'e>(
    executor: impl PgExecutor<'e>,
    id: &str,
) -> Result<Option<CustomerRecord>, StoreError> {
    let customer = sqlx::query_as!(
        CustomerRecord,
        "SELECT id, email, name, default_payment_method, deleted, livemode
         FROM customers WHERE id = $1",
        id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(customer)
}

/// Customer `id` with its default payment method, the latter `None` when unset, not recorded
/// yet, or detached.
pub async fn customer_with_default_card<'e>(
    executor: impl PgExecutor<'e>,
    id: &str,
) -> Result<Option<(CustomerRecord, Option<PaymentMethodRecord>)>, StoreError> {
    let row = sqlx::query!(
        r#"SELECT c.id, c.email, c.name, c.default_payment_method, c.deleted, c.livemode,
                  pm.id AS "pm_id?", pm.customer_id AS pm_customer_id, pm.brand, pm.last4,
                  pm.exp_month, pm.exp_year, pm.attached AS "pm_attached?",
                  pm.livemode AS pm_livemode
           FROM customers c
           LEFT JOIN payment_methods pm
                  ON pm.id = c.default_payment_method AND pm.attached
           WHERE c.id = $1"#,
        id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| {
        let card = row.pm_id.map(|pm_id| PaymentMethodRecord {
            id: pm_id,
            customer_id: row.pm_customer_id,
            brand: row.brand,
            last4: row.last4,
            exp_month: row.exp_month,
            exp_year: row.exp_year,
            attached: row.pm_attached.unwrap_or(false),
            livemode: row.pm_livemode,
        });
        let customer = CustomerRecord {
            id: row.id,
            email: row.email,
            name: row.name,
            default_payment_method: row.default_payment_method,
            deleted: row.deleted,
            livemode: row.livemode,
        };
        (customer, card)
    }))
}

/// The payment methods attached to `customer_id` now, oldest first (like Stripe's list, detached
/// ones are left out).
pub async fn payment_methods_of<'e>(
    executor: impl PgExecutor<'e>,
    customer_id: &str,
) -> Result<Vec<PaymentMethodRecord>, StoreError> {
    let methods = sqlx::query_as!(
        PaymentMethodRecord,
        "SELECT id, customer_id, brand, last4, exp_month, exp_year, attached, livemode
         FROM payment_methods
         WHERE customer_id = $1 AND attached
         ORDER BY created_at, id",
        customer_id,
    )
    .fetch_all(executor)
    .await?;
    Ok(methods)
}

/// A payment method by id, attached or not.
pub async fn payment_method<'e>(
    executor: impl PgExecutor<'e>,
    id: &str,
) -> Result<Option<PaymentMethodRecord>, StoreError> {
    let method = sqlx::query_as!(
        PaymentMethodRecord,
        "SELECT id, customer_id, brand, last4, exp_month, exp_year, attached, livemode
         FROM payment_methods WHERE id = $1",
        id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(method)
}

impl Store {
    /// Customer `id`, if known.
    pub async fn customer(&self, id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        customer(&self.pool, id).await
    }

    /// Customer `id` with its default payment method; see [`customer_with_default_card`].
    pub async fn customer_with_default_card(
        &self,
        id: &str,
    ) -> Result<Option<(CustomerRecord, Option<PaymentMethodRecord>)>, StoreError> {
        customer_with_default_card(&self.pool, id).await
    }

    /// The payment methods attached to `customer_id` now; see [`payment_methods_of`].
    pub async fn payment_methods_of(
        &self,
        customer_id: &str,
    ) -> Result<Vec<PaymentMethodRecord>, StoreError> {
        payment_methods_of(&self.pool, customer_id).await
    }

    /// A payment method by id, attached or not.
    pub async fn payment_method(
        &self,
        id: &str,
    ) -> Result<Option<PaymentMethodRecord>, StoreError> {
        payment_method(&self.pool, id).await
    }
}
