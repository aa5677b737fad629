//! checkout.session.completed in setup mode — the heart of Kassa: the card the customer entered
//! becomes the default payment method of a Stripe customer, and Kassa records both.
//!
//! One code path for every caller (the webhook now; the success page and re-checkout later), so
//! a card is saved the same way whoever gets there first.

use crate::payments::{record_paid_session, PaymentState};
use crate::HandlerError;
use kassa_broker::Topology;
use kassa_store::payments::RecordedBy;
use kassa_store::{
    checkout_sessions, customers, CheckoutPurpose, CheckoutSessionRecord, CustomerRecord,
    PaymentMethodRecord, PgConnection,
};
use kassa_stripe::objects::{
    CheckoutMode, CheckoutSession, CheckoutSessionStatus, PaymentMethod, SetupIntentStatus,
};
use kassa_stripe::resources::{CustomerParams, ListCustomers};
use kassa_stripe::{Client, Expandable, Metadata};
use tracing::info;

pub use crate::keys::{KeyScope, CHARGE_ID_METADATA};

/// What a completed setup session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCard {
    /// The customer the card belongs to.
    pub customer_id: String,
    /// The card, now the customer's default.
    pub payment_method_id: String,
    /// The back-office charge this was a re-checkout for, if any.
    pub charge_id: Option<i64>,
}

/// What fulfilling a Checkout Session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilled {
    /// A completed setup session: the card is the customer's default.
    Card(SavedCard),
    /// A payment session: paid (recorded now or before), or not paid yet.
    Payment(PaymentState),
    /// Nothing to do yet (open, expired, or a setup that did not succeed): the session's status.
    Nothing(String),
}

/// Who fulfils a session: the same code for every path, so the first acts and the rest find the
/// work done.
#[derive(Debug, Clone, Copy)]
pub struct Fulfiller<'a> {
    /// Stripe.
    pub stripe: &'a Client,
    /// Where `payment.succeeded` alerts go.
    pub topology: &'a Topology,
    /// The path calling.
    pub recorded_by: RecordedBy,
    /// This installation's id: a re-pay session of another installation names no local charge.
    pub installation: &'a str,
}

/// Fulfils the Checkout Session `session_id` from Stripe's current state: saves the card of a
/// completed setup session as the customer's default, records the payment of a paid payment
/// session, and records any other session.
///
/// Takes the session's lock in the caller's transaction first, so the webhook and the success
/// page run one after the other; the second finds the card saved (from Kassa's record, without
/// calling Stripe again) or the payment recorded, and does nothing.
pub async fn fulfil_checkout_session(
    how: Fulfiller<'_>,
    conn: &mut PgConnection,
    session_id: &str,
    keys: &KeyScope,
) -> Result<Fulfilled, HandlerError> {
    let stripe = how.stripe;
    kassa_store::events::lock_stripe_object(conn, session_id).await?;
    if let Some(done) = checkout_sessions::checkout_session(&mut *conn, session_id).await? {
        if let (Some(customer_id), Some(payment_method_id), "setup", "complete") = (
            done.customer_id,
            done.payment_method_id,
            done.mode.as_str(),
            done.status.as_str(),
        ) {
            info!(%customer_id, %payment_method_id, "setup session already fulfilled");
            return Ok(Fulfilled::Card(SavedCard {
                customer_id,
                payment_method_id,
                charge_id: done.charge_id,
            }));
        }
    }
    let session = stripe
        .checkout_sessions()
        .retrieve(session_id, &["setup_intent", "payment_intent"])
        .await?;
    let complete = session.status == Some(CheckoutSessionStatus::Complete);
    if session.mode == CheckoutMode::Payment {
        checkout_sessions::upsert_checkout_session(
            conn,
            &session_record(&session, how.installation, None, None),
        )
        .await?;
        let state = record_paid_session(conn, how.topology, &session, how.recorded_by).await?;
        return Ok(Fulfilled::Payment(state));
    }
    if session.mode != CheckoutMode::Setup || !complete {
        checkout_sessions::upsert_checkout_session(
            conn,
            &session_record(&session, how.installation, None, None),
        )
        .await?;
        return Ok(Fulfilled::Nothing(session_status_name(&session).to_owned()));
    }
    let setup_intent = match &session.setup_intent {
        Some(Expandable::Object(intent)) => (**intent).clone(),
        Some(Expandable::Id(id)) => stripe.setup_intents().retrieve(id, &[]).await?,
        None => {
            return Err(HandlerError::Permanent(format!(
                "setup session {session_id} has no setup_intent"
            )))
        }
    };
    if setup_intent.status != SetupIntentStatus::Succeeded {
        checkout_sessions::upsert_checkout_session(
            conn,
            &session_record(&session, how.installation, None, None),
        )
        .await?;
        return Ok(Fulfilled::Nothing(format!(
            "setup intent {:?}",
            setup_intent.status
        )));
    }
    let payment_method_id = setup_intent
        .payment_method
        .as_ref()
        .map(|pm| pm.id().to_owned())
        .ok_or_else(|| {
            HandlerError::Permanent(format!(
                "setup intent {} has no payment_method",
                setup_intent.id
            ))
        })?;

    let customer_id = match session.customer.as_ref().or(setup_intent.customer.as_ref()) {
        Some(customer) => customer.id().to_owned(),
        None => find_or_create_customer(stripe, &session, keys).await?,
    };

    // customer.* handlers re-fetch this customer under the same lock: they now wait for this
    // commit, or finished before, so none of them can record it without its new default card.
    kassa_store::events::lock_stripe_object(conn, &customer_id).await?;

    // Already attached to this customer counts as done; to another customer is an error that no
    // retry fixes.
    let payment_method = stripe
        .payment_methods()
        .retrieve(&payment_method_id, &[])
        .await?;
    let payment_method = match payment_method.customer.as_ref().map(|c| c.id().to_owned()) {
        Some(owner) if owner == customer_id => payment_method,
        Some(owner) => {
            return Err(HandlerError::Permanent(format!(
                "payment method {payment_method_id} is attached to another customer ({owner})"
            )))
        }
        None => {
            stripe
                .payment_methods()
                .attach(
                    &payment_method_id,
                    &customer_id,
                    &keys.key("attach_payment_method")?,
                )
                .await?
        }
    };
    let customer = stripe
        .customers()
        .set_default_payment_method(
            &customer_id,
            &payment_method_id,
            &keys.key("set_default_payment_method")?,
        )
        .await?;

    customers::upsert_customer(
        conn,
        &CustomerRecord {
            id: customer.id.clone(),
            email: customer.email.clone(),
            name: customer.name.clone(),
            default_payment_method: Some(payment_method_id.clone()),
            deleted: false,
            livemode: customer.livemode,
        },
    )
    .await?;
    customers::upsert_payment_method(
        conn,
        &payment_method_record(&payment_method, Some(&customer_id)),
    )
    .await?;
    let charge_id = charge_id_of(&session, how.installation);
    checkout_sessions::upsert_checkout_session(
        conn,
        &session_record(
            &session,
            how.installation,
            Some(&customer_id),
            Some(&payment_method_id),
        ),
    )
    .await?;
    info!(customer_id = %customer_id, payment_method_id = %payment_method_id, ?charge_id, "card saved as the customer's default");
    Ok(Fulfilled::Card(SavedCard {
        customer_id,
        payment_method_id,
        charge_id,
    }))
}

/// Metadata key on customers Kassa creates, naming the Checkout Session they were created for.
pub const SESSION_METADATA: &str = "kassa_checkout_session";

/// The customer Kassa created for `session` before, or a new one.
///
/// The creation's Idempotency-Key protects a redelivery within Stripe's 24 hours; the lookup
/// protects everything else (a dead letter replayed days later, a second path fulfilling the same
/// session): customers listed by e-mail are read straight from Stripe (no search index lag), and
/// only one whose metadata names this session counts.
async fn find_or_create_customer(
    stripe: &Client,
    session: &CheckoutSession,
    keys: &KeyScope,
) -> Result<String, HandlerError> {
    let details = session.customer_details.clone().unwrap_or_default();
    let email = details.email.or_else(|| session.customer_email.clone());
    let looked_up = email.is_some();
    if let Some(email) = &email {
        let params = ListCustomers {
            email: Some(email.clone()),
            limit: Some(100),
            ..Default::default()
        };
        let existing = stripe.customers().list(&params).await?;
        let ours = existing
            .data
            .iter()
            .find(|c| !c.deleted && c.metadata.get(SESSION_METADATA) == Some(&session.id));
        if let Some(customer) = ours {
            info!(customer_id = %customer.id, "customer already created for this session");
            return Ok(customer.id.clone());
        }
    }
    let mut metadata = Metadata::new();
    metadata.insert(SESSION_METADATA.into(), session.id.clone());
    let params = CustomerParams {
        email,
        name: details.name,
        metadata: Some(metadata),
        ..Default::default()
    };
    // Without an e-mail there is no lookup, so the key must stay the same on every attempt.
    let key = if looked_up {
        keys.key("create_customer")?
    } else {
        keys.stable_key("create_customer")?
    };
    let customer = stripe.customers().create(&params, &key).await?;
    info!(customer_id = %customer.id, "customer created");
    Ok(customer.id)
}

/// The charge a re-checkout session is for, from its metadata: none when the metadata names
/// another installation (its charge ids are not ours). A session without `kassa_installation`
/// was made before installation ids; the charge it names must also name it as its current
/// re-pay session before anything is retried (`ChargeExecutor::retry_after_recheckout`).
pub fn charge_id_of(session: &CheckoutSession, installation: &str) -> Option<i64> {
    if crate::keys::owner(installation, &session.metadata) == crate::keys::Owner::Other {
        return None;
    }
    session
        .metadata
        .get(CHARGE_ID_METADATA)
        .and_then(|v| v.parse().ok())
}

/// The record of a session as Stripe has it now.
pub fn session_record(
    session: &CheckoutSession,
    installation: &str,
    customer_id: Option<&str>,
    payment_method_id: Option<&str>,
) -> CheckoutSessionRecord {
    let charge_id = charge_id_of(session, installation);
    let purpose = match (session.mode, charge_id) {
        (CheckoutMode::Setup, Some(_)) => CheckoutPurpose::Recheckout,
        (CheckoutMode::Setup, None) => CheckoutPurpose::Setup,
        _ => CheckoutPurpose::Payment,
    };
    let status = session_status_name(session);
    let complete = session.status == Some(CheckoutSessionStatus::Complete);
    CheckoutSessionRecord {
        id: session.id.clone(),
        mode: mode_name(session.mode).to_owned(),
        status: status.to_owned(),
        livemode: session.livemode,
        customer_id: customer_id
            .map(str::to_owned)
            .or_else(|| session.customer.as_ref().map(|c| c.id().to_owned())),
        purpose,
        charge_id,
        setup_intent_id: session.setup_intent.as_ref().map(|s| s.id().to_owned()),
        payment_intent_id: session.payment_intent.as_ref().map(|p| p.id().to_owned()),
        payment_method_id: payment_method_id.map(str::to_owned),
        url: session.url.clone(),
        expires_at: kassa_store::OffsetDateTime::from_unix_timestamp(session.expires_at).ok(),
        completed_at: complete.then(kassa_store::OffsetDateTime::now_utc),
    }
}

/// `open`, `complete`, `expired` (or `unknown`).
pub fn session_status_name(session: &CheckoutSession) -> &'static str {
    match session.status {
        Some(CheckoutSessionStatus::Open) => "open",
        Some(CheckoutSessionStatus::Complete) => "complete",
        Some(CheckoutSessionStatus::Expired) => "expired",
        _ => "unknown",
    }
}

fn mode_name(mode: CheckoutMode) -> &'static str {
    match mode {
        CheckoutMode::Setup => "setup",
        CheckoutMode::Payment => "payment",
        CheckoutMode::Subscription => "subscription",
        _ => "unknown",
    }
}

/// The record of a payment method as Stripe has it now.
pub fn payment_method_record(
    payment_method: &PaymentMethod,
    customer_id: Option<&str>,
) -> PaymentMethodRecord {
    let card = payment_method.card.as_ref();
    let owner = customer_id
        .map(str::to_owned)
        .or_else(|| payment_method.customer.as_ref().map(|c| c.id().to_owned()));
    PaymentMethodRecord {
        id: payment_method.id.clone(),
        attached: owner.is_some(),
        customer_id: owner,
        brand: card.map(|c| c.brand.clone()),
        last4: card.map(|c| c.last4.clone()),
        exp_month: card.and_then(|c| i32::try_from(c.exp_month).ok()),
        exp_year: card.and_then(|c| i32::try_from(c.exp_year).ok()),
    }
}
