//! Checkout Sessions (`checkout_sessions`): the ones Kassa created and the ones webhooks told of.
//!
//! Writes are upserts where the last write wins, except that what a session gains it keeps: a
//! `complete` or `expired` status is final (Stripe's are), the first `completed_at` stays, and
//! ids (customer, intents, payment method, charge), `url` and `expires_at` are kept once known.
//!
//! `charge_id` references `charges`. A `charge_id` that names no charge (the metadata of a
//! session another installation sharing the Stripe account created, or made up) is stored as
//! `None` rather than failing the write: the card the customer saved is recorded either way.

use std::fmt;
use std::str::FromStr;

use sqlx::{PgConnection, PgExecutor};

use crate::{OffsetDateTime, Store, StoreError};

/// Why Kassa has a Checkout Session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckoutPurpose {
    /// mode=setup: save a card for later off-session charges.
    Setup,
    /// mode=payment: the customer pays now.
    Payment,
    /// mode=setup for a back-office charge whose saved card failed (`charge_id` says which).
    Recheckout,
}

impl CheckoutPurpose {
    /// The value stored in `checkout_sessions.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutPurpose::Setup => "setup",
            CheckoutPurpose::Payment => "payment",
            CheckoutPurpose::Recheckout => "recheckout",
        }
    }
}

impl fmt::Display for CheckoutPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a string that is not a [`CheckoutPurpose`].
#[derive(Debug, thiserror::Error)]
#[error("unknown checkout session purpose {0:?}")]
pub struct UnknownPurpose(pub String);

impl FromStr for CheckoutPurpose {
    type Err = UnknownPurpose;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "setup" => Ok(CheckoutPurpose::Setup),
            "payment" => Ok(CheckoutPurpose::Payment),
            "recheckout" => Ok(CheckoutPurpose::Recheckout),
            other => Err(UnknownPurpose(other.to_owned())),
        }
    }
}

/// A Checkout Session as Kassa keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSessionRecord {
    /// Stripe's id, `cs_…`.
    pub id: String,
    /// Stripe's `mode`: `setup`, `payment` or `subscription`.
    pub mode: String,
    /// Stripe's `status`: `open`, `complete` or `expired`.
    pub status: String,
    /// Whether the session lives in live mode.
    pub livemode: bool,
    /// The customer, once there is one.
    pub customer_id: Option<String>,
    /// Why Kassa has this session.
    pub purpose: CheckoutPurpose,
    /// The back-office charge a re-checkout collects a new card for.
    pub charge_id: Option<i64>,
    /// `setup_intent`, for mode=setup.
    pub setup_intent_id: Option<String>,
    /// `payment_intent`, for mode=payment.
    pub payment_intent_id: Option<String>,
    /// The payment method the customer gave, once complete.
    pub payment_method_id: Option<String>,
    /// Where the customer completes the session.
    pub url: Option<String>,
    /// When Stripe expires the session.
    pub expires_at: Option<OffsetDateTime>,
    /// When Kassa saw the session complete.
    pub completed_at: Option<OffsetDateTime>,
}

/// A `checkout_sessions` row as read, before its `purpose` is checked.
struct SessionRow {
    id: String,
    mode: String,
    status: String,
    livemode: bool,
    customer_id: Option<String>,
    purpose: String,
    charge_id: Option<i64>,
    setup_intent_id: Option<String>,
    payment_intent_id: Option<String>,
    payment_method_id: Option<String>,
    url: Option<String>,
    expires_at: Option<OffsetDateTime>,
    completed_at: Option<OffsetDateTime>,
}

impl SessionRow {
    fn into_record(self) -> Result<CheckoutSessionRecord, StoreError> {
        let purpose = self
            .purpose
            .parse()
            .map_err(|e: UnknownPurpose| StoreError::Permanent(sqlx::Error::Decode(Box::new(e))))?;
        Ok(CheckoutSessionRecord {
            id: self.id,
            mode: self.mode,
            status: self.status,
            livemode: self.livemode,
            customer_id: self.customer_id,
            purpose,
            charge_id: self.charge_id,
            setup_intent_id: self.setup_intent_id,
            payment_intent_id: self.payment_intent_id,
            payment_method_id: self.payment_method_id,
            url: self.url,
            expires_at: self.expires_at,
            completed_at: self.completed_at,
        })
    }
}

/// Inserts or updates a Checkout Session under the rules in the [module documentation](self).
pub async fn upsert_checkout_session(
    conn: &mut PgConnection,
    session: &CheckoutSessionRecord,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO checkout_sessions (id, mode, status, livemode, customer_id, purpose,
             charge_id, setup_intent_id, payment_intent_id, payment_method_id, url, expires_at,
             completed_at)
         VALUES ($1, $2, $3, $4, $5, $6, (SELECT id FROM charges WHERE id = $7), $8, $9, $10,
                 $11, $12, $13)
         ON CONFLICT (id) DO UPDATE SET
             mode = EXCLUDED.mode,
             status = CASE WHEN checkout_sessions.status IN ('complete', 'expired')
                 THEN checkout_sessions.status ELSE EXCLUDED.status END,
             livemode = EXCLUDED.livemode,
             customer_id = COALESCE(EXCLUDED.customer_id, checkout_sessions.customer_id),
             purpose = EXCLUDED.purpose,
             charge_id = COALESCE(EXCLUDED.charge_id, checkout_sessions.charge_id),
             setup_intent_id = COALESCE(EXCLUDED.setup_intent_id, checkout_sessions.setup_intent_id),
             payment_intent_id =
                 COALESCE(EXCLUDED.payment_intent_id, checkout_sessions.payment_intent_id),
             payment_method_id =
                 COALESCE(EXCLUDED.payment_method_id, checkout_sessions.payment_method_id),
             url = COALESCE(EXCLUDED.url, checkout_sessions.url),
             expires_at = COALESCE(EXCLUDED.expires_at, checkout_sessions.expires_at),
             completed_at = COALESCE(checkout_sessions.completed_at, EXCLUDED.completed_at),
             updated_at = now()",
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
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the lock of Checkout Session `id` ([`crate::events::lock_stripe_object`]), then the
/// locks of `own_keys` ([`crate::own_writes::lock_own_key`]), in that order, then reads the
/// session: one round trip (`kassa_lock_checkout_session`, migration 0021). The read is a
/// statement of its own after the locks, so it sees what the previous holder of the session's
/// lock committed. All the locks are held until the caller's transaction ends.
pub async fn lock_checkout_session(
    conn: &mut PgConnection,
    id: &str,
    own_keys: &[&str],
) -> Result<Option<CheckoutSessionRecord>, StoreError> {
    let own_keys: Vec<String> = own_keys.iter().map(|key| (*key).to_owned()).collect();
    let row = sqlx::query_as!(
        SessionRow,
        r#"SELECT id AS "id!", mode AS "mode!", status AS "status!", livemode AS "livemode!",
                  customer_id, purpose AS "purpose!", charge_id, setup_intent_id,
                  payment_intent_id, payment_method_id, url, expires_at, completed_at
           FROM kassa_lock_checkout_session($1, $2)"#,
        id,
        &own_keys,
    )
    .fetch_optional(conn)
    .await?;
    row.map(SessionRow::into_record).transpose()
}

/// Checkout Session `id`, if known.
pub async fn checkout_session<'e>(
    executor: impl PgExecutor<'e>,
    id: &str,
) -> Result<Option<CheckoutSessionRecord>, StoreError> {
    let row = sqlx::query_as!(
        SessionRow,
        "SELECT id, mode, status, livemode, customer_id, purpose, charge_id, setup_intent_id,
                payment_intent_id, payment_method_id, url, expires_at, completed_at
         FROM checkout_sessions WHERE id = $1",
        id,
    )
    .fetch_optional(executor)
    .await?;
    row.map(SessionRow::into_record).transpose()
}

impl Store {
    /// Checkout Session `id`, if known.
    pub async fn checkout_session(
        &self,
        id: &str,
    ) -> Result<Option<CheckoutSessionRecord>, StoreError> {
        checkout_session(&self.pool, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip() {
        for purpose in [
            CheckoutPurpose::Setup,
            CheckoutPurpose::Payment,
            CheckoutPurpose::Recheckout,
        ] {
            assert_eq!(
                purpose.as_str().parse::<CheckoutPurpose>().ok(),
                Some(purpose)
            );
        }
        assert!("refund".parse::<CheckoutPurpose>().is_err());
    }
}
