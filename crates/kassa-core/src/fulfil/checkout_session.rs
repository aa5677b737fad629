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
use kassa_store::saved_cards::{self, SavedCardRecords};
use kassa_store::{
    checkout_sessions, CustomerRecord, InboxMark, InboxMarked, OffsetDateTime, PgConnection,
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
    let (fulfilled, _) = fulfil(how, conn, session_id, keys, None).await?;
    Ok(fulfilled)
}

/// [`fulfil_checkout_session`] in the transaction of the claimed event `inbox`: when it saves a
/// card, the event is marked processed by the same statement as the card's records, and the
/// proof comes back for [`kassa_store::EventTx::complete_marked`]; otherwise (`None`) the caller
/// marks it with [`kassa_store::EventTx::complete`]. Either way the mark commits with the
/// records or not at all.
pub async fn fulfil_checkout_session_and_mark(
    how: Fulfiller<'_>,
    conn: &mut PgConnection,
    session_id: &str,
    keys: &KeyScope,
    inbox: &InboxMark,
) -> Result<(Fulfilled, Option<InboxMarked>), Error> {
    fulfil(how, conn, session_id, keys, Some(inbox)).await
}

/// The Idempotency-Keys a setup session's fulfilment may send writes under, all locked with
/// the session's lock ([`WriteKeys::lock_with_session`]) before any of them is sent: an echo of
/// one of these writes takes the key's lock before it looks for the write's note, so it waits
/// for this transaction to end. The four are locked in the round trip that locks the session and
/// reads its record. A key locked but then not sent under (the session names its customer, or
/// is fulfilled already) holds up at most the echo of an earlier attempt's write under the same
/// key, until this transaction ends; that echo then finds the note or not, as it would have.
struct WriteKeys {
    /// The creation of the session's customer on a first attempt ([`keys::session_customer`]).
    session_customer: IdempotencyKey,
    /// The creation of the customer under this attempt's own key, after a lookup.
    create_customer: IdempotencyKey,
    /// The attach of the card to the customer.
    attach: IdempotencyKey,
    /// The card made the customer's default.
    set_default: IdempotencyKey,
}

impl WriteKeys {
    /// Takes the lock of `session_id`, then of every write key of this attempt, then reads
    /// Kassa's record of the session, in one round trip
    /// ([`checkout_sessions::lock_checkout_session`]).
    ///
    /// Order: the session first, then the keys. No path holds one of these keys while it waits
    /// for a session lock: the keys belong to this attempt at this session (`session_customer`
    /// to every first attempt at it, each of which takes the session's lock first), and an echo
    /// takes only its own inbox row, then the key.
    async fn lock_with_session(
        conn: &mut PgConnection,
        session_id: &str,
        keys: &KeyScope,
    ) -> Result<(Self, Option<kassa_store::CheckoutSessionRecord>), Error> {
        let write_keys = WriteKeys {
            session_customer: keys::session_customer(keys.installation(), session_id)?,
            create_customer: keys.key("create_customer")?,
            attach: keys.key("attach_payment_method")?,
            set_default: keys.key("set_default_payment_method")?,
        };
        let record = checkout_sessions::lock_checkout_session(
            conn,
            session_id,
            &[
                write_keys.session_customer.as_str(),
                write_keys.create_customer.as_str(),
                write_keys.attach.as_str(),
                write_keys.set_default.as_str(),
            ],
        )
        .await?;
        Ok((write_keys, record))
    }
}

async fn fulfil(
    how: Fulfiller<'_>,
    conn: &mut PgConnection,
    session_id: &str,
    keys: &KeyScope,
    inbox: Option<&InboxMark>,
) -> Result<(Fulfilled, Option<InboxMarked>), Error> {
    let stripe = how.stripe;
    let (write_keys, record) = WriteKeys::lock_with_session(conn, session_id, keys).await?;
    if let Some(done) = record {
        if let (Some(customer_id), Some(payment_method_id), "setup", "complete") = (
            done.customer_id,
            done.payment_method_id,
            done.mode.as_str(),
            done.status.as_str(),
        ) {
            info!(%customer_id, %payment_method_id, "setup session already fulfilled");
            let card = SavedCard {
                customer_id,
                payment_method_id,
                charge_id: done.charge_id,
            };
            return Ok((Fulfilled::Card(card), None));
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
        return Ok((Fulfilled::Payment(state), None));
    }
    if session.mode != CheckoutMode::Setup || !complete {
        checkout_sessions::upsert_checkout_session(
            conn,
            &session_record(&session, how.installation, None, None),
        )
        .await?;
        let status = session_status_name(&session).to_owned();
        return Ok((Fulfilled::Nothing(status), None));
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
        let status = format!("setup intent {:?}", setup_intent.status);
        return Ok((Fulfilled::Nothing(status), None));
    }
    let (card, marked) =
        save_card(how, conn, &session, &setup_intent, keys, &write_keys, inbox).await?;
    Ok((Fulfilled::Card(card), marked))
}

/// The card of a completed setup session (its SetupIntent succeeded) becomes the default payment
/// method of the session's customer — found or created for it — and Kassa records the customer,
/// the card and the session, in the caller's transaction, in one statement that also marks the
/// claimed event `inbox` processed, if there is one.
///
/// Every write is sent under one of `write_keys`, whose locks the caller holds.
async fn save_card(
    how: Fulfiller<'_>,
    conn: &mut PgConnection,
    session: &CheckoutSession,
    setup_intent: &SetupIntent,
    keys: &KeyScope,
    write_keys: &WriteKeys,
    inbox: Option<&InboxMark>,
) -> Result<(SavedCard, Option<InboxMarked>), Error> {
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
                find_or_create_customer(stripe, session, keys, write_keys).await?;
            if let Some(key) = created_with {
                recorded_writes.push((key, customer_id.clone()));
            }
            customer_id
        }
    };

    // customer.* handlers re-fetch this customer under the same lock: they now wait for this
    // commit, or finished before, so none of them can record it without its new default card.
    // Taken after the write keys: no path holds a customer's lock while it waits for a key (an
    // echo checks its key before it takes its object's lock).
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
            // Its key is locked: the echo, payment_method.attached, waits for this commit.
            let key = &write_keys.attach;
            let attached = stripe
                .payment_methods()
                .attach(&payment_method_id, &customer_id, key)
                .await?;
            recorded_writes.push((key.clone(), payment_method_id.clone()));
            attached
        }
    };
    let key = &write_keys.set_default;
    let customer = stripe
        .customers()
        .set_default_payment_method(&customer_id, &payment_method_id, key)
        .await?;
    recorded_writes.push((key.clone(), customer_id.clone()));

    let notes: Vec<(&str, &str)> = recorded_writes
        .iter()
        .map(|(key, object_id)| (key.as_str(), object_id.as_str()))
        .collect();
    let charge_id = charge_id_of(session, how.installation);
    let marked = saved_cards::record_saved_card(
        conn,
        &SavedCardRecords {
            customer: &CustomerRecord {
                id: customer.id.clone(),
                email: customer.email.clone(),
                name: customer.name.clone(),
                default_payment_method: Some(payment_method_id.clone()),
                deleted: false,
                livemode: customer.livemode,
            },
            payment_method: &payment_method_record(&payment_method, Some(&customer_id)),
            own_writes: &notes,
            session: &session_record(
                session,
                how.installation,
                Some(&customer_id),
                Some(&payment_method_id),
            ),
        },
        inbox,
    )
    .await?;
    info!(customer_id = %customer_id, payment_method_id = %payment_method_id, ?charge_id, "card saved as the customer's default");
    let card = SavedCard {
        customer_id,
        payment_method_id,
        charge_id,
    };
    Ok((card, marked))
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
    session: &CheckoutSession,
    keys: &KeyScope,
    write_keys: &WriteKeys,
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
            &write_keys.create_customer
        }
        // Without an e-mail there is no lookup: the one key for the session, on every attempt.
        _ => &write_keys.session_customer,
    };
    let mut metadata = Metadata::new();
    metadata.insert(SESSION_METADATA.into(), session.id.clone());
    let params = CustomerParams {
        email,
        name: details.name,
        metadata: Some(metadata),
        ..Default::default()
    };
    // The key is locked until the caller's transaction ends, so the creation's echo waits for
    // its record.
    let customer = stripe.customers().create(&params, key).await?;
    info!(customer_id = %customer.id, idempotency_key = %key, "customer created");
    Ok((customer.id, Some(key.clone())))
}
