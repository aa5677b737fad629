//! Payments customers make on the merchant's pages: a paid Checkout Session (mode=payment) or a
//! PaymentIntent from `POST /api/payment-intents`.
//!
//! Three paths can see one payment succeed — the webhook, the success page and the merchant
//! page's confirmation call — and all three come here. Each reads Stripe's current state (never
//! the caller's word), then records the payment under its PaymentIntent id; only the path whose
//! insert wins queues `payment.succeeded` on `kassa.alerts` (notification and receipt e-mails) in
//! the same transaction, so a payment is recorded and announced once, whoever arrives first.

use crate::keys::CHARGE_ID_METADATA;
use crate::widgets::NOTIFY_METADATA;
use crate::Error;
use kassa_broker::Topology;
use kassa_store::payments::{record_payment, NewPayment, RecordedBy};
use kassa_store::{outbox, OutboxMessage, PgConnection};
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::objects::{
    CheckoutMode, CheckoutPaymentStatus, CheckoutSession, CheckoutSessionStatus, PaymentIntent,
    PaymentIntentStatus,
};
use kassa_stripe::resources::ListCheckoutSessions;
use kassa_stripe::{Client, Expandable};
use serde_json::json;
use tracing::info;

/// The alert routing key (and AMQP type) of a new payment.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";

pub use kassa_store::payments::{
    API_SOURCE, CHECKOUT_SOURCE, RECEIPT_EMAIL_METADATA, SOURCE_METADATA,
};

/// What a path found when it looked at a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentState {
    /// Succeeded; `recorded` says whether this call recorded it (false: another path did).
    Succeeded {
        /// The PaymentIntent.
        payment_intent_id: String,
        /// Whether this call was the first to record it.
        recorded: bool,
    },
    /// Not paid yet (or not a payment at all): Stripe's status, for the page to show.
    NotPaid(String),
}

/// Records the payment of a paid Checkout Session (already retrieved from Stripe, with
/// `payment_intent` expanded or not) unless it is recorded already.
pub async fn record_paid_session(
    conn: &mut PgConnection,
    topology: &Topology,
    session: &CheckoutSession,
    recorded_by: RecordedBy,
) -> Result<PaymentState, Error> {
    let complete = session.status == Some(CheckoutSessionStatus::Complete);
    let paid = session.payment_status == Some(CheckoutPaymentStatus::Paid);
    if session.mode != CheckoutMode::Payment || !complete || !paid {
        return Ok(PaymentState::NotPaid(format!(
            "{:?}/{:?}",
            session.status, session.payment_status
        )));
    }
    if !session.metadata.contains_key(SOURCE_METADATA) {
        // Paid, but not through Kassa (a Payment Link, another integration): not ours to
        // record or announce.
        return Ok(PaymentState::NotPaid(NOT_KASSAS.into()));
    }
    let (Some(amount), Some(currency)) = (session.amount_total, session.currency.clone()) else {
        return Err(Error::Permanent(format!(
            "paid session {} has no amount_total or currency",
            session.id
        )));
    };
    let Some(payment_intent_id) = session.payment_intent.as_ref().map(|p| p.id().to_owned()) else {
        return Err(Error::Permanent(format!(
            "paid session {} has no payment_intent",
            session.id
        )));
    };
    let (description, intent_email) = match &session.payment_intent {
        Some(Expandable::Object(intent)) => (intent.description.clone(), receipt_address(intent)),
        _ => (None, None),
    };
    let details = session.customer_details.clone().unwrap_or_default();
    let payment = NewPayment {
        payment_intent_id: payment_intent_id.clone(),
        checkout_session_id: Some(session.id.clone()),
        customer_id: session.customer.as_ref().map(|c| c.id().to_owned()),
        amount,
        currency,
        description,
        receipt_email: intent_email
            .or(details.email)
            .or_else(|| session.customer_email.clone()),
        livemode: session.livemode,
        recorded_by,
    };
    let recorded =
        record_and_announce(conn, topology, &payment, true, &MailOptions::default()).await?;
    Ok(PaymentState::Succeeded {
        payment_intent_id,
        recorded,
    })
}

/// Per-call choices of a payment confirmation about the payment's e-mails, carried in the
/// `payment.succeeded` alert (`"mail"`); unset fields keep Kassa's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailOptions {
    /// The merchant's notification goes to this address instead of `KASSA_NOTIFY_EMAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_email: Option<String>,
    /// `false`: no merchant notification for this payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_notification: Option<bool>,
    /// `false`: no receipt to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_customer: Option<bool>,
    /// The named SMTP connection (`KASSA_SMTP_CONNECTIONS`) both e-mails go through; unset:
    /// `KASSA_SMTP_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_connection: Option<String>,
}

impl MailOptions {
    /// Whether every choice is Kassa's default.
    pub fn is_default(&self) -> bool {
        self == &MailOptions::default()
    }
}

/// Records the PaymentIntent `payment_intent_id` if Stripe says it succeeded and it is not a
/// back-office charge (those are settled by the charge executor).
pub async fn record_payment_intent(
    stripe: &Client,
    conn: &mut PgConnection,
    topology: &Topology,
    payment_intent_id: &str,
    recorded_by: RecordedBy,
) -> Result<PaymentState, Error> {
    record_payment_intent_with(
        stripe,
        conn,
        topology,
        payment_intent_id,
        recorded_by,
        &MailOptions::default(),
    )
    .await
}

/// [`record_payment_intent`] with the e-mails as `mail` says, if this call records it.
pub async fn record_payment_intent_with(
    stripe: &Client,
    conn: &mut PgConnection,
    topology: &Topology,
    payment_intent_id: &str,
    recorded_by: RecordedBy,
    mail: &MailOptions,
) -> Result<PaymentState, Error> {
    let intent = stripe
        .payment_intents()
        .retrieve(payment_intent_id, &[])
        .await?;
    // A PaymentIntent that a Checkout Session made (not one of `POST /api/payment-intents`):
    // the session holds what the intent lacks — the customer's e-mail for the receipt and the
    // session id — so whichever of checkout.session.completed and payment_intent.succeeded
    // comes first records the same payment.
    let from_checkout =
        intent.metadata.get(SOURCE_METADATA).map(String::as_str) == Some(CHECKOUT_SOURCE);
    let session = if intent.status == PaymentIntentStatus::Succeeded && from_checkout {
        let found = stripe
            .checkout_sessions()
            .list(&ListCheckoutSessions {
                payment_intent: Some(intent.id.clone()),
                limit: Some(1),
                ..ListCheckoutSessions::default()
            })
            .await?;
        found.data.into_iter().next()
    } else {
        None
    };
    let mut payment = match payment_of(&intent, recorded_by) {
        Ok(payment) => payment,
        Err(state) => return Ok(state),
    };
    if let Some(session) = session {
        let details = session.customer_details.unwrap_or_default();
        payment.checkout_session_id = Some(session.id);
        payment.customer_id = payment
            .customer_id
            .or_else(|| session.customer.map(|c| c.id().to_owned()));
        payment.receipt_email = payment
            .receipt_email
            .or(details.email)
            .or(session.customer_email);
    }
    let recorded = record_and_announce(conn, topology, &payment, notifies(&intent), mail).await?;
    Ok(PaymentState::Succeeded {
        payment_intent_id: intent.id.clone(),
        recorded,
    })
}

/// [`record_payment_intent`] for an intent already retrieved from Stripe.
pub async fn record_intent(
    conn: &mut PgConnection,
    topology: &Topology,
    intent: &PaymentIntent,
    recorded_by: RecordedBy,
) -> Result<PaymentState, Error> {
    let payment = match payment_of(intent, recorded_by) {
        Ok(payment) => payment,
        Err(state) => return Ok(state),
    };
    let recorded = record_and_announce(
        conn,
        topology,
        &payment,
        notifies(intent),
        &MailOptions::default(),
    )
    .await?;
    Ok(PaymentState::Succeeded {
        payment_intent_id: intent.id.clone(),
        recorded,
    })
}

/// The payment to record for a succeeded page payment, or why there is none.
fn payment_of(intent: &PaymentIntent, recorded_by: RecordedBy) -> Result<NewPayment, PaymentState> {
    if intent.status != PaymentIntentStatus::Succeeded {
        return Err(PaymentState::NotPaid(
            serde_json::to_value(intent.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into()),
        ));
    }
    if intent.metadata.contains_key(CHARGE_ID_METADATA) {
        // A back-office charge: the charge executor settles it; it is not a page payment.
        return Err(PaymentState::NotPaid("back_office_charge".into()));
    }
    if !intent.metadata.contains_key(SOURCE_METADATA) {
        return Err(PaymentState::NotPaid(NOT_KASSAS.into()));
    }
    Ok(NewPayment {
        payment_intent_id: intent.id.clone(),
        checkout_session_id: None,
        customer_id: intent.customer.as_ref().map(|c| c.id().to_owned()),
        amount: intent.amount_received.max(intent.amount),
        currency: intent.currency.clone(),
        description: intent.description.clone(),
        receipt_email: receipt_address(intent),
        livemode: intent.livemode,
        recorded_by,
    })
}

/// Why a succeeded payment is not recorded: neither Kassa's pages nor its API made it.
pub const NOT_KASSAS: &str = "not_created_by_kassa";

/// Where Kassa sends the receipt: the address given to `POST /api/payment-intents` (kept in
/// metadata), else Stripe's `receipt_email` if someone set it.
fn receipt_address(intent: &PaymentIntent) -> Option<String> {
    intent
        .metadata
        .get(RECEIPT_EMAIL_METADATA)
        .cloned()
        .or_else(|| intent.receipt_email.clone())
}

/// Whether the merchant is e-mailed about this payment (a widget may say not).
fn notifies(intent: &PaymentIntent) -> bool {
    intent.metadata.get(NOTIFY_METADATA).map(String::as_str) != Some("off")
}

async fn record_and_announce(
    conn: &mut PgConnection,
    topology: &Topology,
    payment: &NewPayment,
    notify_merchant: bool,
    mail: &MailOptions,
) -> Result<bool, Error> {
    // Serialises the paths (and a payment_intent.succeeded racing checkout.session.completed):
    // the second waits for the first's commit and then finds the row.
    kassa_store::events::lock_stripe_object(conn, &payment.payment_intent_id).await?;
    if !record_payment(conn, payment).await? {
        info!(payment_intent_id = %payment.payment_intent_id, "payment already recorded; nothing to do");
        return Ok(false);
    }
    let amount_display = Currency::parse(&payment.currency)
        .map(|c| format_amount(payment.amount, &c))
        .unwrap_or_else(|_| format!("{} {}", payment.amount, payment.currency.to_uppercase()));
    let body = json!({
        "payment_intent": payment.payment_intent_id,
        "checkout_session": payment.checkout_session_id,
        "customer": payment.customer_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "amount_display": amount_display,
        "description": payment.description,
        "receipt_email": payment.receipt_email,
        "livemode": payment.livemode,
        "recorded_by": payment.recorded_by.as_str(),
        "notify_merchant": notify_merchant,
        "mail": (!mail.is_default()).then_some(mail),
    });
    let message = OutboxMessage {
        exchange: topology.alerts_exchange(),
        routing_key: PAYMENT_SUCCEEDED.to_owned(),
        message_id: format!("{PAYMENT_SUCCEEDED}:{}", payment.payment_intent_id),
        message_type: PAYMENT_SUCCEEDED.to_owned(),
        body,
        headers: json!({}),
    };
    outbox::enqueue(conn, &message).await?;
    metrics::counter!("kassa_payments_recorded_total", "recorded_by" => payment.recorded_by.as_str())
        .increment(1);
    info!(payment_intent_id = %payment.payment_intent_id, amount = %amount_display, recorded_by = payment.recorded_by.as_str(), "payment recorded");
    Ok(true)
}
