use std::time::Duration;

use kassa_store::checkout_sessions::{self, lock_checkout_session, upsert_checkout_session};
use kassa_store::events::lock_stripe_object;
use kassa_store::saved_cards::{record_saved_card, SavedCardRecords};
use kassa_store::{
    customers, own_writes, CheckoutPurpose, CheckoutSessionRecord, CustomerRecord, EventClaim,
    OffsetDateTime, PaymentMethodRecord, PgConnection, Settled,
};

use crate::test_db::{lock_waiters, someone_waits_for_a_lock, wait_until, TestDb};

const KIND: &str = "checkout.session.completed";
const KEY: &str = "kassa:0123456789abcdef:evt_1:attach_payment_method";

fn customer(id: &str) -> CustomerRecord {
    CustomerRecord {
        id: id.to_owned(),
        email: Some("jenny@example.com".to_owned()),
        name: Some("Jenny Rosen".to_owned()),
        default_payment_method: Some(format!("pm_{id}")),
        deleted: false,
        livemode: false,
    }
}

fn card(customer_id: &str) -> PaymentMethodRecord {
    PaymentMethodRecord {
        id: format!("pm_{customer_id}"),
        customer_id: Some(customer_id.to_owned()),
        brand: Some("visa".to_owned()),
        last4: Some("4242".to_owned()),
        exp_month: Some(12),
        exp_year: Some(2034),
        attached: true,
        livemode: Some(false),
    }
}

/// The card as a re-fetch finds it after Stripe updated it (a reissued card: new number and
/// expiry), newer than [`card`].
fn updated_card(customer_id: &str) -> PaymentMethodRecord {
    PaymentMethodRecord {
        last4: Some("1881".to_owned()),
        exp_month: Some(3),
        exp_year: Some(2031),
        ..card(customer_id)
    }
}

fn session(id: &str, customer_id: &str) -> CheckoutSessionRecord {
    CheckoutSessionRecord {
        id: id.to_owned(),
        mode: "setup".to_owned(),
        status: "complete".to_owned(),
        livemode: false,
        customer_id: Some(customer_id.to_owned()),
        purpose: CheckoutPurpose::Setup,
        charge_id: None,
        setup_intent_id: Some(format!("seti_{id}")),
        payment_intent_id: None,
        payment_method_id: Some(format!("pm_{customer_id}")),
        url: None,
        expires_at: None,
        completed_at: Some(OffsetDateTime::from_unix_timestamp(1_900_003_600).unwrap()),
    }
}

/// What an earlier history left behind for `customer_id`: the customer deleted, the card
/// detached, the session recorded open with its URL.
async fn earlier_history(conn: &mut PgConnection, session_id: &str, customer_id: &str) {
    customers::upsert_customer(
        conn,
        &CustomerRecord {
            deleted: true,
            ..customer(customer_id)
        },
    )
    .await
    .unwrap();
    customers::mark_payment_method_detached(conn, &format!("pm_{customer_id}"))
        .await
        .unwrap();
    upsert_checkout_session(
        conn,
        &CheckoutSessionRecord {
            status: "open".to_owned(),
            payment_method_id: None,
            url: Some("https://checkout.stripe.com/c/pay/x".to_owned()),
            completed_at: None,
            ..session(session_id, customer_id)
        },
    )
    .await
    .unwrap();
}

/// The rows Kassa keeps for `customer_id`, its card and `session_id`, ids left out.
async fn rows(conn: &mut PgConnection, session_id: &str, customer_id: &str) -> String {
    let customer = customers::customer(&mut *conn, customer_id).await.unwrap();
    let card = customers::payment_method(&mut *conn, &format!("pm_{customer_id}"))
        .await
        .unwrap();
    let session = checkout_sessions::checkout_session(&mut *conn, session_id)
        .await
        .unwrap();
    format!("{customer:?} {card:?} {session:?}")
        .replace(customer_id, "CUS")
        .replace(session_id, "CS")
}

#[tokio::test]
async fn saved_card_records_follow_the_per_table_rules_and_commit_with_the_inbox_mark() {
    let db = TestDb::new().await;
    // The same records over the same earlier history: one by the per-table functions, one in
    // one statement with the inbox mark.
    let mut tx = db.store.begin().await.unwrap();
    earlier_history(&mut tx, "cs_a", "cus_a").await;
    customers::upsert_customer(&mut tx, &customer("cus_a"))
        .await
        .unwrap();
    customers::upsert_payment_method(&mut tx, &card("cus_a"))
        .await
        .unwrap();
    own_writes::record_own_writes(&mut tx, &[("key_a", "pm_cus_a")])
        .await
        .unwrap();
    upsert_checkout_session(&mut tx, &session("cs_a", "cus_a"))
        .await
        .unwrap();
    earlier_history(&mut tx, "cs_b", "cus_b").await;
    tx.commit().await.unwrap();

    let EventClaim::Claimed(mut claimed) =
        db.store.claim_event("evt_1", KIND, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    let inbox = claimed.inbox_mark();
    let marked = record_saved_card(
        claimed.conn(),
        &SavedCardRecords {
            customer: &customer("cus_b"),
            payment_method: &card("cus_b"),
            own_writes: &[(KEY, "pm_cus_b"), ("key_b", "cus_b")],
            session: &session("cs_b", "cus_b"),
        },
        Some(&inbox),
    )
    .await
    .unwrap()
    .expect("the statement marked the event");
    // Nothing is visible before the commit, the mark included.
    let outside = db.store.event("evt_1").await.unwrap();
    assert!(outside.is_none_or(|e| e.processed_at.is_none()));
    assert!(db.store.customer("cus_b").await.unwrap().unwrap().deleted);
    claimed.complete_marked(marked).await.unwrap();

    let mut conn = db.store.begin().await.unwrap();
    let per_table = rows(&mut conn, "cs_a", "cus_a").await;
    assert_eq!(rows(&mut conn, "cs_b", "cus_b").await, per_table);
    assert!(
        per_table.contains("deleted: true") && per_table.contains("attached: false"),
        "a deleted customer and a detached card stay so: {per_table}"
    );
    for (key, object) in [(KEY, "pm_cus_b"), ("key_b", "cus_b")] {
        assert!(own_writes::own_write_recorded(&mut conn, key, object)
            .await
            .unwrap());
    }
    let stored = db.store.event("evt_1").await.unwrap().unwrap();
    assert!(stored.processed_at.is_some());
    assert_eq!(stored.attempts, 1);
    let again = db.store.claim_event("evt_1", KIND, false).await.unwrap();
    assert!(matches!(again, EventClaim::AlreadyProcessed), "{again:?}");
}

#[tokio::test]
async fn a_marked_event_that_fails_keeps_neither_its_records_nor_its_mark() {
    let db = TestDb::new().await;
    let EventClaim::Claimed(mut claimed) =
        db.store.claim_event("evt_1", KIND, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    let inbox = claimed.inbox_mark();
    let marked = record_saved_card(
        claimed.conn(),
        &SavedCardRecords {
            customer: &customer("cus_1"),
            payment_method: &card("cus_1"),
            own_writes: &[(KEY, "pm_cus_1")],
            session: &session("cs_1", "cus_1"),
        },
        Some(&inbox),
    )
    .await
    .unwrap();
    assert!(marked.is_some());
    // A later step of the same handling fails: the claim is failed, not completed.
    claimed.fail("the next step failed", false).await.unwrap();

    let stored = db.store.event("evt_1").await.unwrap().unwrap();
    assert_eq!(stored.processed_at, None);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_error.as_deref(), Some("the next step failed"));
    assert_eq!(db.store.customer("cus_1").await.unwrap(), None);
    assert_eq!(db.store.checkout_session("cs_1").await.unwrap(), None);
    // The echo of the write finds no note: it is not settled without a call.
    assert_eq!(
        db.store
            .settle_without_effects(
                "evt_echo",
                "payment_method.attached",
                false,
                Some((KEY, "pm_cus_1"))
            )
            .await
            .unwrap(),
        Settled::NotRecorded
    );
    let EventClaim::Claimed(retry) = db.store.claim_event("evt_1", KIND, false).await.unwrap()
    else {
        panic!("the failed event is claimed again");
    };
    assert_eq!(retry.previous_attempts(), 1);
}

#[tokio::test]
async fn a_session_and_its_keys_are_locked_before_its_record_is_read() {
    let db = TestDb::new().await;
    // A first fulfilment holds the session and records it, not committed yet.
    let mut first = db.store.begin().await.unwrap();
    assert_eq!(
        lock_checkout_session(&mut first, "cs_1", &[KEY])
            .await
            .unwrap(),
        None
    );
    upsert_checkout_session(&mut first, &session("cs_1", "cus_1"))
        .await
        .unwrap();
    let store = db.store.clone();
    let second = tokio::spawn(async move {
        let mut second = store.begin().await.unwrap();
        let record = lock_checkout_session(&mut second, "cs_1", &[])
            .await
            .unwrap();
        second.commit().await.unwrap();
        record
    });
    wait_until(
        Duration::from_secs(10),
        "the second fulfilment waits for the session's lock",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    // An echo of a write under the first's key waits for it too.
    let store = db.store.clone();
    let echo = tokio::spawn(async move {
        store
            .settle_without_effects(
                "evt_echo",
                "payment_method.attached",
                false,
                Some((KEY, "pm_cus_1")),
            )
            .await
            .unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the echo waits for the first fulfilment's key",
        || async { lock_waiters(&db.store).await >= 2 },
    )
    .await;
    own_writes::record_own_write(&mut first, KEY, "pm_cus_1")
        .await
        .unwrap();
    assert!(!second.is_finished() && !echo.is_finished());
    first.commit().await.unwrap();
    let seen = second
        .await
        .unwrap()
        .expect("the record committed while the second waited is read");
    assert_eq!(seen, session("cs_1", "cus_1"));
    assert_eq!(echo.await.unwrap(), Settled::Settled);
}

#[tokio::test]
async fn a_fulfilment_never_overwrites_a_card_re_fetched_after_it_began() {
    let db = TestDb::new().await;
    // The fulfilment's transaction begins with its claim, before it reads the session and
    // attaches the card.
    let EventClaim::Claimed(mut fulfilment) =
        db.store.claim_event("evt_1", KIND, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    let inbox = fulfilment.inbox_mark();
    // Meanwhile the card is updated at Stripe: `payment_method.updated` is handled after the
    // update, re-fetching the card under its lock, and commits first.
    let mut handler = db.store.begin().await.unwrap();
    lock_stripe_object(&mut handler, "pm_cus_1").await.unwrap();
    customers::upsert_payment_method(&mut handler, &updated_card("cus_1"))
        .await
        .unwrap();
    handler.commit().await.unwrap();
    // The fulfilment then records its attach's answer, read before the update.
    let marked = record_saved_card(
        fulfilment.conn(),
        &SavedCardRecords {
            customer: &customer("cus_1"),
            payment_method: &card("cus_1"),
            own_writes: &[(KEY, "pm_cus_1")],
            session: &session("cs_1", "cus_1"),
        },
        Some(&inbox),
    )
    .await
    .unwrap()
    .expect("the statement marked the event");
    fulfilment.complete_marked(marked).await.unwrap();

    let mut conn = db.store.begin().await.unwrap();
    let stored = customers::payment_method(&mut *conn, "pm_cus_1")
        .await
        .unwrap();
    assert_eq!(
        stored,
        Some(updated_card("cus_1")),
        "the card keeps the expiry and number of the newer re-fetch"
    );
    // The rest of the fulfilment is recorded as usual.
    let recorded = checkout_sessions::checkout_session(&mut *conn, "cs_1")
        .await
        .unwrap();
    assert_eq!(recorded, Some(session("cs_1", "cus_1")));
    assert_eq!(
        customers::customer(&mut *conn, "cus_1").await.unwrap(),
        Some(customer("cus_1"))
    );
}

/// How a card's records are written: in one statement, or by the per-table functions.
#[derive(Clone, Copy, Debug)]
enum Writer {
    OneStatement,
    PerTable,
}

/// The records of a saved card with `payment_method` as its details, written by `writer`.
async fn write_saved_card(
    conn: &mut PgConnection,
    writer: Writer,
    customer_id: &str,
    payment_method: &PaymentMethodRecord,
) {
    let session_id = format!("cs_{customer_id}");
    match writer {
        Writer::OneStatement => {
            let records = SavedCardRecords {
                customer: &customer(customer_id),
                payment_method,
                own_writes: &[],
                session: &session(&session_id, customer_id),
            };
            record_saved_card(conn, &records, None).await.unwrap();
        }
        Writer::PerTable => {
            customers::upsert_customer(conn, &customer(customer_id))
                .await
                .unwrap();
            customers::upsert_payment_method(conn, payment_method)
                .await
                .unwrap();
            upsert_checkout_session(conn, &session(&session_id, customer_id))
                .await
                .unwrap();
        }
    }
}

/// A re-fetch of a card by a `payment_method.*` handler and a saved card's records written by
/// `writer` race: the transaction that began first observed the card before Stripe updated it
/// and writes last; the other, begun after the update, writes the updated card and commits
/// first. `writer_began_first` says which is which.
async fn race_with_a_re_fetch(
    db: &TestDb,
    writer: Writer,
    customer_id: &str,
    writer_began_first: bool,
) {
    let pm_id = format!("pm_{customer_id}");
    let mut older = db.store.begin().await.unwrap();
    let mut newer = db.store.begin().await.unwrap();
    if writer_began_first {
        lock_stripe_object(&mut newer, &pm_id).await.unwrap();
        customers::upsert_payment_method(&mut newer, &updated_card(customer_id))
            .await
            .unwrap();
        newer.commit().await.unwrap();
        write_saved_card(&mut older, writer, customer_id, &card(customer_id)).await;
        older.commit().await.unwrap();
    } else {
        write_saved_card(&mut newer, writer, customer_id, &updated_card(customer_id)).await;
        newer.commit().await.unwrap();
        lock_stripe_object(&mut older, &pm_id).await.unwrap();
        customers::upsert_payment_method(&mut older, &card(customer_id))
            .await
            .unwrap();
        older.commit().await.unwrap();
    }
}

#[tokio::test]
async fn both_ways_of_recording_a_card_keep_its_newest_observation_whichever_commits_last() {
    let db = TestDb::new().await;
    for writer_began_first in [true, false] {
        let (one_statement, per_table) = if writer_began_first {
            ("cus_a", "cus_b")
        } else {
            ("cus_c", "cus_d")
        };
        race_with_a_re_fetch(&db, Writer::OneStatement, one_statement, writer_began_first).await;
        race_with_a_re_fetch(&db, Writer::PerTable, per_table, writer_began_first).await;

        let mut conn = db.store.begin().await.unwrap();
        let expected = rows(&mut conn, &format!("cs_{per_table}"), per_table).await;
        let found = rows(&mut conn, &format!("cs_{one_statement}"), one_statement).await;
        assert_eq!(found, expected, "writer began first: {writer_began_first}");
        for customer_id in [one_statement, per_table] {
            let stored = customers::payment_method(&mut *conn, &format!("pm_{customer_id}"))
                .await
                .unwrap();
            assert_eq!(
                stored,
                Some(updated_card(customer_id)),
                "writer began first: {writer_began_first}"
            );
        }
    }
}

/// The customer as Stripe had it before the card of [`customer`] became its default: another
/// card as the default, an older e-mail address.
fn customer_before_the_new_default(id: &str) -> CustomerRecord {
    CustomerRecord {
        email: Some("jenny.rosen@old.example.com".to_owned()),
        default_payment_method: Some(format!("pm_old_{id}")),
        ..customer(id)
    }
}

/// A read of the customer without its lock (the customer import or sync) races with `writer`
/// holding the customer's lock (the fulfilment recording Stripe's answer to its set-default, or
/// a `customer.*` re-fetch): the unlocked reader takes its observation time after the locked
/// writer took the lock, reads the customer before the locked writer's change, and commits last or
/// first (`unlocked_commits_last`).
async fn race_with_an_unlocked_read(
    db: &TestDb,
    writer: Writer,
    customer_id: &str,
    unlocked_commits_last: bool,
) {
    let mut locked = db.store.begin().await.unwrap();
    lock_stripe_object(&mut locked, customer_id).await.unwrap();
    let observed_at = db.store.observation_time().await.unwrap();
    let mut unlocked = db.store.begin().await.unwrap();
    let older = customer_before_the_new_default(customer_id);
    if unlocked_commits_last {
        write_saved_card(&mut locked, writer, customer_id, &card(customer_id)).await;
        locked.commit().await.unwrap();
        customers::upsert_customer_read_without_lock(&mut unlocked, &older, observed_at)
            .await
            .unwrap();
        unlocked.commit().await.unwrap();
    } else {
        customers::upsert_customer_read_without_lock(&mut unlocked, &older, observed_at)
            .await
            .unwrap();
        unlocked.commit().await.unwrap();
        write_saved_card(&mut locked, writer, customer_id, &card(customer_id)).await;
        locked.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_customer_read_without_its_lock_never_brings_back_an_older_default_card() {
    let db = TestDb::new().await;
    for unlocked_commits_last in [true, false] {
        let (one_statement, per_table) = if unlocked_commits_last {
            ("cus_a", "cus_b")
        } else {
            ("cus_c", "cus_d")
        };
        race_with_an_unlocked_read(
            &db,
            Writer::OneStatement,
            one_statement,
            unlocked_commits_last,
        )
        .await;
        race_with_an_unlocked_read(&db, Writer::PerTable, per_table, unlocked_commits_last).await;

        let mut conn = db.store.begin().await.unwrap();
        let expected = rows(&mut conn, &format!("cs_{per_table}"), per_table).await;
        let found = rows(&mut conn, &format!("cs_{one_statement}"), one_statement).await;
        assert_eq!(
            found, expected,
            "unlocked read commits last: {unlocked_commits_last}"
        );
        for customer_id in [one_statement, per_table] {
            let (stored, default_card) =
                customers::customer_with_default_card(&mut *conn, customer_id)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(
                stored,
                customer(customer_id),
                "the new default card and e-mail stay (unlocked read commits last: {unlocked_commits_last})"
            );
            assert_eq!(
                default_card.map(|card| card.id),
                Some(format!("pm_{customer_id}")),
                "a charge resolves the new default card (unlocked read commits last: {unlocked_commits_last})"
            );
        }
    }
}

#[tokio::test]
async fn a_customer_read_without_its_lock_after_a_change_replaces_the_older_record() {
    let db = TestDb::new().await;
    let mut locked = db.store.begin().await.unwrap();
    lock_stripe_object(&mut locked, "cus_a").await.unwrap();
    write_saved_card(&mut locked, Writer::OneStatement, "cus_a", &card("cus_a")).await;
    locked.commit().await.unwrap();
    // Observed after that commit, so its read saw the customer as changed since.
    let changed = CustomerRecord {
        email: Some("jenny.rosen@new.example.com".to_owned()),
        default_payment_method: Some("pm_newer".to_owned()),
        ..customer("cus_a")
    };
    let observed_at = db.store.observation_time().await.unwrap();
    let mut unlocked = db.store.begin().await.unwrap();
    customers::upsert_customer_read_without_lock(&mut unlocked, &changed, observed_at)
        .await
        .unwrap();
    unlocked.commit().await.unwrap();
    assert_eq!(db.store.customer("cus_a").await.unwrap(), Some(changed));
}

/// One earlier write to the customer, its card or its session, as some other handler makes it.
#[derive(Clone, Debug)]
enum EarlierWrite {
    /// A customer record; observed under its lock (now) or, read without it, this many minutes
    /// from now (before or after the saved card's write).
    Customer {
        record: CustomerShape,
        read_at_minutes: Option<i64>,
    },
    /// A card record; observed at its transaction's start or at this many minutes from now.
    Card {
        record: CardShape,
        read_at_minutes: Option<i64>,
    },
    Detached,
    CustomerDeleted,
    Session(SessionShape),
    OwnWrite(u8),
}

#[derive(Clone, Debug)]
struct CustomerShape {
    variant: u8,
    deleted: bool,
    livemode: bool,
}

#[derive(Clone, Debug)]
struct CardShape {
    variant: u8,
    customer_known: bool,
    attached: bool,
    livemode: Option<bool>,
}

#[derive(Clone, Debug)]
struct SessionShape {
    status: u8,
    customer_known: bool,
    card_known: bool,
    url: bool,
    completed: bool,
}

impl CustomerShape {
    fn record(&self, customer_id: &str) -> CustomerRecord {
        let v = self.variant;
        CustomerRecord {
            id: customer_id.to_owned(),
            email: (!v.is_multiple_of(3)).then(|| format!("buyer{v}@example.com")),
            name: v.is_multiple_of(2).then(|| format!("Buyer {v}")),
            default_payment_method: match v % 3 {
                0 => None,
                1 => Some(format!("pm_{customer_id}")),
                _ => Some(format!("pm_{customer_id}_other")),
            },
            deleted: self.deleted,
            livemode: self.livemode,
        }
    }
}

impl CardShape {
    fn record(&self, customer_id: &str) -> PaymentMethodRecord {
        let v = i32::from(self.variant);
        PaymentMethodRecord {
            id: format!("pm_{customer_id}"),
            customer_id: self.customer_known.then(|| customer_id.to_owned()),
            brand: (v % 4 != 0)
                .then(|| ["visa", "mastercard", "amex"][(v % 3) as usize].to_owned()),
            last4: (v % 4 != 0).then(|| format!("{:04}", 4242 + v)),
            exp_month: (v % 4 != 0).then_some(1 + v % 12),
            exp_year: (v % 4 != 0).then_some(2030 + v),
            attached: self.attached,
            livemode: self.livemode,
        }
    }
}

impl SessionShape {
    fn record(&self, session_id: &str, customer_id: &str) -> CheckoutSessionRecord {
        CheckoutSessionRecord {
            status: ["open", "complete", "expired"][usize::from(self.status % 3)].to_owned(),
            customer_id: self.customer_known.then(|| customer_id.to_owned()),
            payment_method_id: self.card_known.then(|| format!("pm_{customer_id}")),
            url: self
                .url
                .then(|| format!("https://checkout.stripe.com/c/pay/{session_id}")),
            completed_at: self
                .completed
                .then(|| OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()),
            ..session(session_id, customer_id)
        }
    }
}

fn customer_shape() -> impl proptest::strategy::Strategy<Value = CustomerShape> {
    use proptest::prelude::*;
    (0u8..6, any::<bool>(), any::<bool>()).prop_map(|(variant, deleted, livemode)| CustomerShape {
        variant,
        deleted,
        livemode,
    })
}

fn card_shape() -> impl proptest::strategy::Strategy<Value = CardShape> {
    use proptest::prelude::*;
    (0u8..8, any::<bool>(), any::<bool>(), any::<Option<bool>>()).prop_map(
        |(variant, customer_known, attached, livemode)| CardShape {
            variant,
            customer_known,
            attached,
            livemode,
        },
    )
}

fn session_shape() -> impl proptest::strategy::Strategy<Value = SessionShape> {
    use proptest::prelude::*;
    (
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(status, customer_known, card_known, url, completed)| SessionShape {
                status,
                customer_known,
                card_known,
                url,
                completed,
            },
        )
}

fn earlier_write() -> impl proptest::strategy::Strategy<Value = EarlierWrite> {
    use proptest::prelude::*;
    let minutes = proptest::option::of(prop_oneof![-90i64..=-30, 30i64..=90]);
    prop_oneof![
        (customer_shape(), minutes.clone()).prop_map(|(record, read_at_minutes)| {
            EarlierWrite::Customer {
                record,
                read_at_minutes,
            }
        }),
        (card_shape(), minutes).prop_map(|(record, read_at_minutes)| EarlierWrite::Card {
            record,
            read_at_minutes,
        }),
        Just(EarlierWrite::Detached),
        Just(EarlierWrite::CustomerDeleted),
        session_shape().prop_map(EarlierWrite::Session),
        (0u8..3).prop_map(EarlierWrite::OwnWrite),
    ]
}

/// A later read of the customer or the card, observed at a time before or after the saved card's
/// write: whether it replaces the record depends on the observation times that write left.
fn later_read() -> impl proptest::strategy::Strategy<Value = EarlierWrite> {
    use proptest::prelude::*;
    let minutes = prop_oneof![-90i64..=-30, 30i64..=90];
    prop_oneof![
        (customer_shape(), minutes.clone()).prop_map(|(record, minutes)| {
            EarlierWrite::Customer {
                record,
                read_at_minutes: Some(minutes),
            }
        }),
        (card_shape(), minutes).prop_map(|(record, minutes)| EarlierWrite::Card {
            record,
            read_at_minutes: Some(minutes),
        }),
    ]
}

/// What a saved card writes over a history, and what other handlers write after it (which shows
/// the observation times the saved card's write left behind).
#[derive(Clone, Debug)]
struct SavedCardCase {
    history: Vec<EarlierWrite>,
    customer: CustomerShape,
    card: CardShape,
    session: SessionShape,
    own_writes: Vec<u8>,
    later: Vec<EarlierWrite>,
}

fn saved_card_case() -> impl proptest::strategy::Strategy<Value = SavedCardCase> {
    use proptest::prelude::*;
    (
        proptest::collection::vec(earlier_write(), 0..6),
        customer_shape(),
        card_shape(),
        session_shape(),
        proptest::collection::vec(0u8..3, 0..3),
        proptest::collection::vec(later_read(), 0..3),
    )
        .prop_map(
            |(history, customer, card, session, own_writes, later)| SavedCardCase {
                history,
                customer,
                card,
                session,
                own_writes,
                later,
            },
        )
}

impl SavedCardCase {
    /// The (Idempotency-Key, object) notes of the case's own writes, for `customer_id`.
    fn own_write_keys(&self, customer_id: &str) -> Vec<(String, String)> {
        self.own_writes
            .iter()
            .map(|n| own_key(*n, customer_id))
            .collect()
    }
}

fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, o)| (k.as_str(), o.as_str()))
        .collect()
}

fn own_key(n: u8, customer_id: &str) -> (String, String) {
    (
        format!("kassa:own:{n}:{customer_id}"),
        format!("pm_{customer_id}"),
    )
}

/// Applies `history` for `customer_id`'s records, one transaction per write; observation times
/// are minutes from `now`.
async fn apply_history(
    db: &TestDb,
    history: &[EarlierWrite],
    session_id: &str,
    customer_id: &str,
    now: OffsetDateTime,
) {
    for write in history {
        let mut tx = db.store.begin().await.unwrap();
        let at = |minutes: i64| {
            let span = Duration::from_secs(60 * minutes.unsigned_abs());
            if minutes < 0 {
                now - span
            } else {
                now + span
            }
        };
        match write {
            EarlierWrite::Customer {
                record,
                read_at_minutes,
            } => {
                let record = record.record(customer_id);
                match read_at_minutes {
                    None => customers::upsert_customer(&mut tx, &record).await,
                    Some(minutes) => {
                        customers::upsert_customer_read_without_lock(&mut tx, &record, at(*minutes))
                            .await
                    }
                }
                .unwrap();
            }
            EarlierWrite::Card {
                record,
                read_at_minutes,
            } => {
                let record = record.record(customer_id);
                match read_at_minutes {
                    None => customers::upsert_payment_method(&mut tx, &record).await,
                    Some(minutes) => {
                        customers::upsert_payment_method_read_at(&mut tx, &record, at(*minutes))
                            .await
                    }
                }
                .unwrap();
            }
            EarlierWrite::Detached => {
                customers::mark_payment_method_detached(&mut tx, &format!("pm_{customer_id}"))
                    .await
                    .unwrap();
            }
            EarlierWrite::CustomerDeleted => {
                customers::mark_customer_deleted(&mut tx, customer_id)
                    .await
                    .unwrap();
            }
            EarlierWrite::Session(shape) => {
                upsert_checkout_session(&mut tx, &shape.record(session_id, customer_id))
                    .await
                    .unwrap();
            }
            EarlierWrite::OwnWrite(n) => {
                let (key, object) = own_key(*n, customer_id);
                own_writes::record_own_writes(&mut tx, &[(&key, &object)])
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
}

/// The rows of [`rows`] and which of the case's own writes are recorded.
async fn case_rows(db: &TestDb, session_id: &str, customer_id: &str) -> String {
    let mut conn = db.store.begin().await.unwrap();
    let mut seen = rows(&mut conn, session_id, customer_id).await;
    for n in 0..3 {
        let (key, object) = own_key(n, customer_id);
        let recorded = own_writes::own_write_recorded(&mut conn, &key, &object)
            .await
            .unwrap();
        seen.push_str(&format!(" own write {n}: {recorded}"));
    }
    seen
}

/// The saved card's one statement keeps the per-table functions' rules over any history: the
/// same earlier writes, then the same records written both ways, then the same later writes
/// (which an observation time left wrong would let through or hold back), leave the same rows.
#[test]
fn the_one_statement_and_the_per_table_functions_leave_the_same_rows_over_any_history() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::new());
    let case_number = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&saved_card_case(), |case| {
        case_number.set(case_number.get() + 1);
        let n = case_number.get();
        let (per_table, one_statement) = runtime.block_on(async {
            let now = OffsetDateTime::now_utc();
            let (cs_a, cus_a) = (format!("cs_a{n}"), format!("cus_a{n}"));
            let (cs_b, cus_b) = (format!("cs_b{n}"), format!("cus_b{n}"));
            apply_history(&db, &case.history, &cs_a, &cus_a, now).await;
            apply_history(&db, &case.history, &cs_b, &cus_b, now).await;

            let mut tx = db.store.begin().await.unwrap();
            customers::upsert_customer(&mut tx, &case.customer.record(&cus_a))
                .await
                .unwrap();
            customers::upsert_payment_method(&mut tx, &case.card.record(&cus_a))
                .await
                .unwrap();
            let keys_a = case.own_write_keys(&cus_a);
            let writes_a = borrowed(&keys_a);
            own_writes::record_own_writes(&mut tx, &writes_a)
                .await
                .unwrap();
            upsert_checkout_session(&mut tx, &case.session.record(&cs_a, &cus_a))
                .await
                .unwrap();
            tx.commit().await.unwrap();

            let mut tx = db.store.begin().await.unwrap();
            let keys_b = case.own_write_keys(&cus_b);
            let writes_b = borrowed(&keys_b);
            let marked = record_saved_card(
                &mut tx,
                &SavedCardRecords {
                    customer: &case.customer.record(&cus_b),
                    payment_method: &case.card.record(&cus_b),
                    own_writes: &writes_b,
                    session: &case.session.record(&cs_b, &cus_b),
                },
                None,
            )
            .await
            .unwrap();
            assert!(marked.is_none(), "no inbox mark was asked for");
            tx.commit().await.unwrap();

            apply_history(&db, &case.later, &cs_a, &cus_a, now).await;
            apply_history(&db, &case.later, &cs_b, &cus_b, now).await;

            (
                case_rows(&db, &cs_a, &cus_a).await,
                case_rows(&db, &cs_b, &cus_b).await,
            )
        });
        if per_table == one_statement {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "per table: {per_table}\none statement: {one_statement}"
            )))
        }
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
