//! Payments made on the merchant's pages (`payments`): one row per PaymentIntent, recorded by
//! whichever path saw it succeed first — the webhook, the success page or the confirmation call.
//! [`record_payment`] says whether this call recorded it, so only that caller queues the e-mails.

use sqlx::PgConnection;

use crate::{OffsetDateTime, Store, StoreError};

/// Metadata key on the Checkout Sessions and PaymentIntents Kassa creates for merchants'
/// payments: [`CHECKOUT_SOURCE`], [`API_SOURCE`] or [`WIDGET_SOURCE`]. Only payments that carry it are recorded and
/// announced; the account's other payments (invoices, Payment Links…) are not Kassa's.
pub const SOURCE_METADATA: &str = "kassa_source";
/// [`SOURCE_METADATA`] of a Checkout Session (and its PaymentIntent) made by Kassa.
pub const CHECKOUT_SOURCE: &str = "checkout";
/// [`SOURCE_METADATA`] of a PaymentIntent from `POST /api/payment-intents`.
pub const API_SOURCE: &str = "api";
/// [`SOURCE_METADATA`] of a PaymentIntent a payment widget's page load asked for.
pub const WIDGET_SOURCE: &str = "widget";
/// Metadata key holding the address Kassa sends the receipt to (not Stripe's `receipt_email`,
/// which in live mode makes Stripe send a second receipt).
pub const RECEIPT_EMAIL_METADATA: &str = "kassa_receipt_email";

/// Who recorded a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedBy {
    /// A `checkout.session.completed` or `payment_intent.succeeded` webhook.
    Webhook,
    /// The merchant's success page (`GET /success?session_id=…`).
    SuccessPage,
    /// `POST /api/payment-intents/{id}/confirmation`.
    Confirmation,
}

impl RecordedBy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedBy::Webhook => "webhook",
            RecordedBy::SuccessPage => "success_page",
            RecordedBy::Confirmation => "confirmation",
        }
    }
}

/// A succeeded payment to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    /// `pi_…`.
    pub payment_intent_id: String,
    /// `cs_…` when paid through Checkout.
    pub checkout_session_id: Option<String>,
    /// `cus_…` when known.
    pub customer_id: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO code.
    pub currency: String,
    /// Free text.
    pub description: Option<String>,
    /// Where the receipt goes.
    pub receipt_email: Option<String>,
    /// Live or test mode.
    pub livemode: bool,
    /// Who records it.
    pub recorded_by: RecordedBy,
}

/// A recorded payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    /// Kassa's id.
    pub id: i64,
    /// `pi_…`.
    pub payment_intent_id: String,
    /// `cs_…` when paid through Checkout.
    pub checkout_session_id: Option<String>,
    /// `cus_…` when known.
    pub customer_id: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO code.
    pub currency: String,
    /// Free text.
    pub description: Option<String>,
    /// Where the receipt went.
    pub receipt_email: Option<String>,
    /// Live or test mode.
    pub livemode: bool,
    /// `webhook`, `success_page` or `confirmation`.
    pub recorded_by: String,
    /// When it was recorded.
    pub created_at: OffsetDateTime,
}

/// Records `payment` unless its PaymentIntent is recorded already. Returns true when this call
/// recorded it (and so must queue what follows a new payment), false when it was there.
pub async fn record_payment(
    conn: &mut PgConnection,
    payment: &NewPayment,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO payments (payment_intent_id, checkout_session_id, customer_id, amount, currency,
                               description, receipt_email, livemode, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (payment_intent_id) DO NOTHING",
        payment.payment_intent_id,
        payment.checkout_session_id,
        payment.customer_id,
        payment.amount,
        payment.currency,
        payment.description,
        payment.receipt_email,
        payment.livemode,
        payment.recorded_by.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The payment of a PaymentIntent.
pub async fn payment_by_intent<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    payment_intent_id: &str,
) -> Result<Option<PaymentRecord>, StoreError> {
    Ok(sqlx::query_as!(
        PaymentRecord,
        "SELECT id, payment_intent_id, checkout_session_id, customer_id, amount, currency,
                description, receipt_email, livemode, recorded_by, created_at
         FROM payments WHERE payment_intent_id = $1",
        payment_intent_id
    )
    .fetch_optional(executor)
    .await?)
}

/// The payment of a Checkout Session.
pub async fn payment_by_session<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    checkout_session_id: &str,
) -> Result<Option<PaymentRecord>, StoreError> {
    Ok(sqlx::query_as!(
        PaymentRecord,
        "SELECT id, payment_intent_id, checkout_session_id, customer_id, amount, currency,
                description, receipt_email, livemode, recorded_by, created_at
         FROM payments WHERE checkout_session_id = $1",
        checkout_session_id
    )
    .fetch_optional(executor)
    .await?)
}

impl Store {
    /// The payment of a PaymentIntent.
    pub async fn payment_by_intent(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        payment_by_intent(self.pool(), payment_intent_id).await
    }

    /// The payment of a Checkout Session.
    pub async fn payment_by_session(
        &self,
        checkout_session_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        payment_by_session(self.pool(), checkout_session_id).await
    }

    /// How many payments are recorded (tests and the demo).
    pub async fn count_payments(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM payments"#)
                .fetch_one(self.pool())
                .await?,
        )
    }
}
