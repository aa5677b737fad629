//! Kassa's records of Stripe objects: how a customer, a payment method or a Checkout Session is
//! recorded ([`customer_record`], [`payment_method_record`], [`session_record`]), and the events
//! that keep those records true — each re-fetches the object from Stripe and writes its current
//! state, so the order events arrive in does not matter. Two kinds of events cost no call: echoes
//! of Kassa's own writes whose answers it recorded ([`is_recorded_echo`]), and `setup_intent.*`,
//! whose only record-worthy fact (the card now belongs to a customer) arrives as its own
//! `payment_method.attached`.

use crate::keys::{self, Owner, CHARGE_ID_METADATA};
use crate::Error;
use kassa_store::{
    checkout_sessions, customers, own_writes, CheckoutPurpose, CheckoutSessionRecord,
    CustomerRecord, PaymentMethodRecord, PgConnection,
};
use kassa_stripe::objects::{
    CheckoutMode, CheckoutSession, CheckoutSessionStatus, Customer, Event, PaymentMethod,
};
use kassa_stripe::Client;

/// checkout.session.expired (and any session that is not a setup completion): record its state.
pub async fn record_checkout_session(
    stripe: &Client,
    conn: &mut PgConnection,
    session_id: &str,
    installation: &str,
) -> Result<(), Error> {
    let session = stripe.checkout_sessions().retrieve(session_id, &[]).await?;
    checkout_sessions::upsert_checkout_session(
        conn,
        &session_record(&session, installation, None, None),
    )
    .await?;
    Ok(())
}

/// Whether `event` echoes one of this installation's own writes whose answer Kassa already
/// recorded: its `request.idempotency_key` is a key of `installation`, and the record of
/// `object_id` was written from that write's answer (`stripe_own_writes`), in a transaction that
/// committed. Such an event needs no re-fetch: see [`kassa_store::own_writes`] and
/// docs/ARCHITECTURE.md ("Echoes of Kassa's own writes"). Call it before taking any object's
/// lock: it may wait for the write's transaction, which holds the object's lock.
pub async fn is_recorded_echo(
    conn: &mut PgConnection,
    installation: &str,
    event: &Event,
    object_id: &str,
) -> Result<bool, Error> {
    let Some(key) = own_key(installation, event) else {
        return Ok(false);
    };
    // A write still in flight holds its key: wait for its transaction to end.
    own_writes::lock_own_key(conn, key).await?;
    Ok(own_writes::own_write_recorded(conn, key, object_id).await?)
}

/// The Idempotency-Key of the request that caused `event` when it is one of `installation`'s
/// own keys (`request.idempotency_key`, see [`keys::is_own_key`]): the event may echo a write
/// whose answer Kassa recorded ([`is_recorded_echo`]).
pub fn own_key<'e>(installation: &str, event: &'e Event) -> Option<&'e str> {
    event
        .request
        .as_ref()
        .and_then(|request| request.idempotency_key.as_deref())
        .filter(|key| keys::is_own_key(installation, key))
}

/// Whether the event types of `kind` have nothing for Kassa to read or record:
/// `setup_intent.*` (the card it attaches has its own `payment_method.attached`, and a Checkout
/// setup is fulfilled from `checkout.session.completed`).
pub fn nothing_to_read(kind: &str) -> bool {
    kind.starts_with("setup_intent.")
}

/// Whether `payment_method.attached` for `payment_method_id` has nothing to teach Kassa: its
/// record of the card already shows it attached to the customer the event names.
///
/// That record was written from Stripe's own answer — the Checkout Session read with the card
/// expanded, Kassa's attach, or a re-fetch — given after the attach (a card reads as attached
/// only once it is), so it is at least as new as the event's object. Stripe attaches a card once
/// in its life (docs, detach a PaymentMethod: "Detachment is permanent and irreversible — once
/// detached, a PaymentMethod can no longer be used for payments or re-attached to a Customer"),
/// so no later attach can
/// hide behind this one. Any later change — detach, update — has its own event, re-fetched under
/// the card's lock whenever it arrives. A record that is missing, unattached (read before the
/// attach, or detached) or names another customer proves nothing: the event is re-fetched. See
/// docs/ARCHITECTURE.md, "A card Stripe attached at checkout". Call it under the card's lock.
pub async fn is_recorded_attachment(
    conn: &mut PgConnection,
    event: &Event,
    payment_method_id: &str,
) -> Result<bool, Error> {
    if event.type_ != "payment_method.attached" {
        return Ok(false);
    }
    // The payload only names whom the attach was to; the card's state comes from the record.
    let Some(owner) = event
        .data
        .object
        .get("customer")
        .and_then(|customer| customer.as_str().or_else(|| customer.get("id")?.as_str()))
    else {
        return Ok(false);
    };
    let record = customers::payment_method(&mut *conn, payment_method_id).await?;
    Ok(record.is_some_and(|card| card.attached && card.customer_id.as_deref() == Some(owner)))
}

/// payment_method.attached / detached: attached to someone → recorded; attached to nobody →
/// detached for good.
pub async fn record_payment_method(
    stripe: &Client,
    conn: &mut PgConnection,
    payment_method_id: &str,
) -> Result<(), Error> {
    let payment_method = match stripe
        .payment_methods()
        .retrieve(payment_method_id, &[])
        .await
    {
        Ok(pm) => pm,
        Err(error) if error.is_resource_missing() => {
            customers::mark_payment_method_detached(conn, payment_method_id).await?;
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if payment_method.customer.is_some() {
        customers::upsert_payment_method(conn, &payment_method_record(&payment_method, None))
            .await?;
    } else {
        customers::mark_payment_method_detached(conn, payment_method_id).await?;
    }
    Ok(())
}

/// customer.created / updated / deleted: record the customer as Stripe has it now. Call it under
/// the customer's lock (`lock_stripe_object`): the record is observed when it is written
/// ([`customers::upsert_customer`]).
pub async fn record_customer(
    stripe: &Client,
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<(), Error> {
    let customer = match stripe.customers().retrieve(customer_id, &[]).await {
        Ok(customer) => customer,
        Err(error) if error.is_resource_missing() => {
            customers::mark_customer_deleted(conn, customer_id).await?;
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if customer.deleted {
        customers::mark_customer_deleted(conn, customer_id).await?;
        return Ok(());
    }
    customers::upsert_customer(conn, &customer_record(&customer)).await?;
    Ok(())
}

/// A Stripe customer as Kassa records it.
pub fn customer_record(customer: &Customer) -> CustomerRecord {
    CustomerRecord {
        id: customer.id.clone(),
        email: customer.email.clone(),
        name: customer.name.clone(),
        default_payment_method: customer
            .invoice_settings
            .default_payment_method
            .as_ref()
            .map(|pm| pm.id().to_owned()),
        deleted: customer.deleted,
        livemode: customer.livemode,
    }
}

/// The charge a re-checkout session is for, from its metadata: none when the metadata names
/// another installation (its charge ids are not ours). A session without `kassa_installation`
/// was made before installation ids; the charge it names must also name it as its current
/// re-pay session before anything is retried (`ChargeExecutor::retry_after_recheckout`).
pub fn charge_id_of(session: &CheckoutSession, installation: &str) -> Option<i64> {
    if keys::owner(installation, &session.metadata) == Owner::Other {
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
        livemode: Some(payment_method.livemode),
    }
}
