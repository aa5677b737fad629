//! checkout.session.completed — the heart of Kassa. In setup mode the card the customer entered
//! becomes the default payment method of a Stripe customer, and Kassa records both; in payment
//! mode the payment is recorded ([`crate::fulfil::payment`]).
//!
//! One code path for every caller (the webhook, the success page, a re-checkout), so a card is
//! saved the same way whoever gets there first.

use crate::fulfil::payment::{record_paid_session, PaymentState};
use crate::keys::{self, KeyScope};
use crate::records::{charge_id_of, payment_method_record, session_record, session_status_name};
use crate::Error;
use kassa_broker::Topology;
use kassa_store::payments::RecordedBy;
use kassa_store::{
    checkout_sessions, customers, own_writes, CustomerRecord, OffsetDateTime, PgConnection,
};
use kassa_stripe::objects::{
    CheckoutMode, CheckoutSession, CheckoutSessionStatus, SetupIntent, SetupIntentStatus,
};
use kassa_stripe::resources::{CustomerParams, ListCustomers};
use kassa_stripe::{Client, Expandable, IdempotencyKey, Metadata};
use tracing::info;

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

/// What the session is read with: `setup_intent` and its `payment_method` (expanding a nested
/// field expands its parents), and `payment_intent`.
pub const SESSION_EXPAND: &[&str] = &["setup_intent.payment_method", "payment_intent"];

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
) -> Result<Fulfilled, Error> {
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
    // One call reads everything fulfilment needs: the SetupIntent with its card (whose owner
    // decides whether to attach) or the PaymentIntent. Stripe: "You can expand recursively by
    // specifying nested fields after a dot (.)" (docs: expanding responses).
    let session = stripe
        .checkout_sessions()
        .retrieve(session_id, SESSION_EXPAND)
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
            return Err(Error::Permanent(format!(
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
    save_card(how, conn, &session, &setup_intent, keys)
        .await
        .map(Fulfilled::Card)
}

/// The card of a completed setup session (its SetupIntent succeeded) becomes the default payment
/// method of the session's customer — found or created for it — and Kassa records the customer,
/// the card and the session, in the caller's transaction.
async fn save_card(
    how: Fulfiller<'_>,
    conn: &mut PgConnection,
    session: &CheckoutSession,
    setup_intent: &SetupIntent,
    keys: &KeyScope,
) -> Result<SavedCard, Error> {
    let stripe = how.stripe;
    // The card as it was when the session was read (expanded there): its owner says whether an
    // earlier attempt, or Stripe itself (a session naming a customer), attached it already.
    let payment_method = match setup_intent.payment_method.as_ref() {
        Some(Expandable::Object(pm)) => (**pm).clone(),
        Some(Expandable::Id(id)) => stripe.payment_methods().retrieve(id, &[]).await?,
        None => {
            return Err(Error::Permanent(format!(
                "setup intent {} has no payment_method",
                setup_intent.id
            )))
        }
    };
    let payment_method_id = payment_method.id.clone();

    // Kassa's writes whose answers this transaction records: their webhooks are echoes.
    let mut recorded_writes: Vec<(IdempotencyKey, String)> = Vec::new();
    let customer_id = match session.customer.as_ref().or(setup_intent.customer.as_ref()) {
        Some(customer) => customer.id().to_owned(),
        None => {
            let (customer_id, created_with) =
                find_or_create_customer(stripe, conn, session, keys).await?;
            if let Some(key) = created_with {
                recorded_writes.push((key, customer_id.clone()));
            }
            customer_id
        }
    };

    // customer.* handlers re-fetch this customer under the same lock: they now wait for this
    // commit, or finished before, so none of them can record it without its new default card.
    kassa_store::events::lock_stripe_object(conn, &customer_id).await?;

    // Already attached to this customer counts as done; to another customer is an error that no
    // retry fixes.
    let payment_method = match payment_method.customer.as_ref().map(|c| c.id().to_owned()) {
        Some(owner) if owner == customer_id => payment_method,
        Some(owner) => {
            return Err(Error::Permanent(format!(
                "payment method {payment_method_id} is attached to another customer ({owner})"
            )))
        }
        None => {
            let key = keys.key("attach_payment_method")?;
            own_writes::lock_own_key(conn, key.as_str()).await?;
            let attached = stripe
                .payment_methods()
                .attach(&payment_method_id, &customer_id, &key)
                .await?;
            recorded_writes.push((key, payment_method_id.clone()));
            attached
        }
    };
    let key = keys.key("set_default_payment_method")?;
    own_writes::lock_own_key(conn, key.as_str()).await?;
    let customer = stripe
        .customers()
        .set_default_payment_method(&customer_id, &payment_method_id, &key)
        .await?;
    recorded_writes.push((key, customer_id.clone()));

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
    let notes: Vec<(&str, &str)> = recorded_writes
        .iter()
        .map(|(key, object_id)| (key.as_str(), object_id.as_str()))
        .collect();
    own_writes::record_own_writes(conn, &notes).await?;
    let charge_id = charge_id_of(session, how.installation);
    checkout_sessions::upsert_checkout_session(
        conn,
        &session_record(
            session,
            how.installation,
            Some(&customer_id),
            Some(&payment_method_id),
        ),
    )
    .await?;
    info!(customer_id = %customer_id, payment_method_id = %payment_method_id, ?charge_id, "card saved as the customer's default");
    Ok(SavedCard {
        customer_id,
        payment_method_id,
        charge_id,
    })
}

/// Metadata key on customers Kassa creates, naming the Checkout Session they were created for.
pub const SESSION_METADATA: &str = "kassa_checkout_session";

/// The customer Kassa created for `session` before, or a new one; with the key of the creation
/// when this call sent one.
///
/// Every path and first attempt sends the creation under one key per session
/// (`kassa:{installation}:checkout_session:{id}:create_customer`), so while Stripe remembers that
/// key — 24 hours, and a session is fulfilled after it was created — a repeat gets the customer
/// created first, and no lookup is needed. Otherwise (the session is older than
/// [`keys::KEY_REUSE_LIMIT_SECS`] by Kassa's clock, or this is a retry from the ladder, which
/// must get past a saved 500) the customers listed by e-mail are read first, straight from
/// Stripe (no search index lag), and only one whose metadata names this session counts; the
/// creation then goes under the attempt's own key.
async fn find_or_create_customer(
    stripe: &Client,
    conn: &mut PgConnection,
    session: &CheckoutSession,
    keys: &KeyScope,
) -> Result<(String, Option<IdempotencyKey>), Error> {
    let details = session.customer_details.clone().unwrap_or_default();
    let email = details.email.or_else(|| session.customer_email.clone());
    let age = session.created.map_or(i64::MAX, |created| {
        OffsetDateTime::now_utc().unix_timestamp() - created
    });
    let key_remembered = keys.is_first_attempt() && age < keys::KEY_REUSE_LIMIT_SECS;
    let key = match &email {
        Some(email) if !key_remembered => {
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
                return Ok((customer.id.clone(), None));
            }
            keys.key("create_customer")?
        }
        // Without an e-mail there is no lookup: the one key for the session, on every attempt.
        _ => keys::session_customer(keys.installation(), &session.id)?,
    };
    let mut metadata = Metadata::new();
    metadata.insert(SESSION_METADATA.into(), session.id.clone());
    let params = CustomerParams {
        email,
        name: details.name,
        metadata: Some(metadata),
        ..Default::default()
    };
    // Held until the caller's transaction ends, so the creation's echo waits for its record.
    own_writes::lock_own_key(conn, key.as_str()).await?;
    let customer = stripe.customers().create(&params, &key).await?;
    info!(customer_id = %customer.id, idempotency_key = %key, "customer created");
    Ok((customer.id, Some(key)))
}
