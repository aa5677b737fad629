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
