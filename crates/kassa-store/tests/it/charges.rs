use std::sync::Arc;
use std::time::Duration;

use kassa_store::charges::{
    charge_for_update, create_charge, mark_charge_failed, mark_charge_needs_review,
    mark_charge_processing, mark_charge_requires_recheckout, mark_charge_retrying,
    mark_charge_succeeded, record_attempt_card, record_attempt_start, rekey_attempt,
    requeue_charge, resolve_charge_succeeded, set_recheckout_session,
    settle_charge_by_payment_intent,
};
use kassa_store::{
    ChargeRecord, ChargeStatus, NewCharge, OffsetDateTime, PaymentIntentOutcome, Store,
};
use serde_json::json;
use tokio::sync::Barrier;

use crate::test_db::{count_rows, someone_waits_for_a_lock, wait_until, TestDb};

fn new_charge(reference: &str) -> NewCharge {
    NewCharge {
        reference: reference.to_owned(),
        customer_id: "cus_1".to_owned(),
        payment_method_id: None,
        amount: 1999,
        currency: "usd".to_owned(),
        description: Some("March invoice".to_owned()),
        metadata: json!({ "invoice": "INV-7" }),
        livemode: false,
    }
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// Records `reference` in a committed transaction and returns the charge.
async fn create(store: &Store, reference: &str) -> ChargeRecord {
    let mut tx = store.begin().await.unwrap();
    let (charge, created) = create_charge(&mut tx, &new_charge(reference))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(created);
    charge
}

/// Runs one transition in a committed transaction and returns whether it applied.
async fn apply<F>(store: &Store, f: F) -> bool
where
    F: AsyncFnOnce(&mut sqlx::PgConnection) -> Result<bool, kassa_store::StoreError>,
{
    let mut tx = store.begin().await.unwrap();
    let applied = f(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    applied
}

/// Settles `payment_intent_id` in a committed transaction.
async fn settle(
    store: &Store,
    payment_intent_id: &str,
    outcome: PaymentIntentOutcome,
) -> Option<ChargeRecord> {
    let mut tx = store.begin().await.unwrap();
    let settled = settle_charge_by_payment_intent(&mut tx, payment_intent_id, &outcome)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    settled
}

async fn stored(store: &Store, id: i64) -> ChargeRecord {
    store.charge(id).await.unwrap().expect("the charge exists")
}

#[tokio::test]
async fn a_new_charge_is_pending_on_attempt_1() {
    let db = TestDb::new().await;
    let charge = create(&db.store, "ref-1").await;
    assert_eq!(charge.reference, "ref-1");
    assert_eq!(charge.customer_id, "cus_1");
    assert_eq!(charge.payment_method_id, None);
    assert_eq!((charge.amount, charge.currency.as_str()), (1999, "usd"));
    assert_eq!(charge.description.as_deref(), Some("March invoice"));
    assert_eq!(charge.metadata, json!({ "invoice": "INV-7" }));
    assert_eq!(charge.status, ChargeStatus::Pending);
    assert_eq!(charge.attempt, 1);
    assert_eq!(charge.payment_intent_id, None);
    assert_eq!(charge.reminders_sent, 0);
    assert!(!charge.livemode);
    assert_eq!(stored(&db.store, charge.id).await, charge);
    assert_eq!(
        db.store.charge_by_reference("ref-1").await.unwrap(),
        Some(charge)
    );
    assert_eq!(db.store.charge(i64::MAX).await.unwrap(), None);
    assert_eq!(db.store.charge_by_reference("ref-2").await.unwrap(), None);
}

#[tokio::test]
async fn the_same_reference_again_returns_the_existing_charge() {
    let db = TestDb::new().await;
    let first = create(&db.store, "ref-1").await;

    let mut tx = db.store.begin().await.unwrap();
    let again = NewCharge {
        amount: 5000,
        ..new_charge("ref-1")
    };
    let (second, created) = create_charge(&mut tx, &again).await.unwrap();
    tx.commit().await.unwrap();

    assert!(!created);
    assert_eq!(second, first, "the stored charge, not the new request");
    assert_eq!(count_rows(&db.store, "charges").await, 1);
}

#[tokio::test]
async fn a_create_racing_an_uncommitted_one_returns_its_row() {
    let db = TestDb::new().await;
    let mut first_tx = db.store.begin().await.unwrap();
    let (first, created) = create_charge(&mut first_tx, &new_charge("ref-1"))
        .await
        .unwrap();
    assert!(created);

    let store = db.store.clone();
    let second = tokio::spawn(async move {
        let mut tx = store.begin().await.unwrap();
        let result = create_charge(&mut tx, &new_charge("ref-1")).await.unwrap();
        tx.commit().await.unwrap();
        result
    });
    wait_until(
        Duration::from_secs(10),
        "the second create waits for the first",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    first_tx.commit().await.unwrap();

    let (second, created) = second.await.unwrap();
    assert!(!created);
    assert_eq!(second, first);
    assert_eq!(count_rows(&db.store, "charges").await, 1);
}

#[tokio::test]
async fn concurrent_creates_of_one_reference_make_one_row() {
    let db = TestDb::new().await;
    let tasks = 6;
    let barrier = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, barrier) = (db.store.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                barrier.wait().await;
                let result = create_charge(&mut tx, &new_charge("ref-1")).await.unwrap();
                tx.commit().await.unwrap();
                result
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    assert!(results.iter().all(|(charge, _)| charge == &results[0].0));
    assert_eq!(count_rows(&db.store, "charges").await, 1);
}

#[tokio::test]
async fn a_non_positive_amount_is_a_permanent_error() {
    let db = TestDb::new().await;
    for amount in [0, -100] {
        let mut tx = db.store.begin().await.unwrap();
        let error = create_charge(
            &mut tx,
            &NewCharge {
                amount,
                ..new_charge("ref-1")
            },
        )
        .await
        .expect_err("the amount check refuses it");
        assert!(!error.is_transient(), "{error:?}");
        assert_eq!(error.sqlstate().as_deref(), Some("23514"), "{error:?}");
    }
    let mut tx = db.store.begin().await.unwrap();
    let error = create_charge(
        &mut tx,
        &NewCharge {
            currency: "USD".to_owned(),
            ..new_charge("ref-1")
        },
    )
    .await
    .expect_err("currencies are lower-case");
    assert_eq!(error.sqlstate().as_deref(), Some("23514"), "{error:?}");
    drop(tx);
    assert_eq!(count_rows(&db.store, "charges").await, 0);
}

#[tokio::test]
async fn a_succeeded_charge_never_moves_again() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    assert!(
        apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_1")
            .await)
        .await
    );
    let succeeded = stored(&db.store, id).await;
    assert_eq!(succeeded.status, ChargeStatus::Succeeded);
    assert_eq!(succeeded.payment_intent_id.as_deref(), Some("pi_1"));

    // A redelivered charge message, then everything else that could arrive late.
    assert!(
        !apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_1")
            .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_processing(
            c, id, 1, "pi_1"
        )
        .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_failed(c, id, "x", "y")
            .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| {
            mark_charge_requires_recheckout(c, id, 1, Some("pi_1"), None, "card_declined", "no")
                .await
        })
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_retrying(
            c, id, 2, "pm_new"
        )
        .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| {
            set_recheckout_session(c, id, "cs_1", "https://x", at(1_900_000_000), 0).await
        })
        .await
    );
    for outcome in [
        PaymentIntentOutcome::Processing,
        PaymentIntentOutcome::Succeeded,
        PaymentIntentOutcome::Failed {
            code: "card_declined".to_owned(),
            message: "declined".to_owned(),
        },
    ] {
        assert_eq!(settle(&db.store, "pi_1", outcome).await, None);
    }
    assert_eq!(
        stored(&db.store, id).await,
        succeeded,
        "not even updated_at changed"
    );
}

#[tokio::test]
async fn a_failed_charge_never_moves_again() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    assert!(
        apply(&db.store, async |c| {
            mark_charge_failed(c, id, "resource_missing", "No such customer").await
        })
        .await
    );
    let failed = stored(&db.store, id).await;
    assert_eq!(failed.status, ChargeStatus::Failed);
    assert_eq!(failed.failure_code.as_deref(), Some("resource_missing"));
    assert_eq!(failed.failure_message.as_deref(), Some("No such customer"));

    assert!(
        !apply(&db.store, async |c| mark_charge_failed(c, id, "other", "m")
            .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_1")
            .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_processing(
            c, id, 1, "pi_1"
        )
        .await)
        .await
    );
    assert_eq!(stored(&db.store, id).await, failed);
}

#[tokio::test]
async fn an_outcome_of_another_attempt_or_payment_intent_is_refused() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    assert!(
        !apply(&db.store, async |c| mark_charge_succeeded(c, id, 2, "pi_2")
            .await)
        .await
    );
    assert!(
        apply(&db.store, async |c| mark_charge_processing(
            c, id, 1, "pi_1"
        )
        .await)
        .await
    );
    // The same PaymentIntent again (a redelivery) changes nothing; another one is refused.
    assert!(
        !apply(&db.store, async |c| mark_charge_processing(
            c, id, 1, "pi_1"
        )
        .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_x")
            .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| {
            mark_charge_requires_recheckout(c, id, 1, Some("pi_x"), None, "card_declined", "no")
                .await
        })
        .await
    );
    assert_eq!(stored(&db.store, id).await.status, ChargeStatus::Processing);
    assert!(
        apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_1")
            .await)
        .await
    );
}

#[tokio::test]
async fn a_declined_charge_is_retried_as_attempt_2_after_a_new_card() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    assert!(
        apply(&db.store, async |c| {
            mark_charge_requires_recheckout(
                c,
                id,
                1,
                Some("pi_1"),
                Some("insufficient_funds"),
                "card_declined",
                "Your card has insufficient funds.",
            )
            .await
        })
        .await
    );
    // Only a charge awaiting a re-checkout gets a link, and a redelivery changes nothing.
    let expires = at(1_900_086_400);
    assert!(
        apply(&db.store, async |c| {
            set_recheckout_session(c, id, "cs_1", "https://checkout/cs_1", expires, 0).await
        })
        .await
    );
    assert!(
        !apply(&db.store, async |c| {
            set_recheckout_session(c, id, "cs_1", "https://checkout/cs_1", expires, 0).await
        })
        .await
    );
    let waiting = db
        .store
        .charge_by_recheckout_session("cs_1")
        .await
        .unwrap()
        .expect("the session names its charge");
    assert_eq!(waiting.id, id);
    assert_eq!(waiting.status, ChargeStatus::RequiresRecheckout);
    assert_eq!(waiting.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(waiting.failure_code.as_deref(), Some("card_declined"));
    assert_eq!(waiting.payment_intent_id.as_deref(), Some("pi_1"));
    assert_eq!(
        waiting.recheckout_url.as_deref(),
        Some("https://checkout/cs_1")
    );
    assert_eq!(waiting.recheckout_expires_at, Some(expires));

    // The customer completed the session: attempt 2, and only once.
    assert!(
        !apply(&db.store, async |c| mark_charge_retrying(
            c, id, 3, "pm_new"
        )
        .await)
        .await
    );
    assert!(
        apply(&db.store, async |c| mark_charge_retrying(
            c, id, 2, "pm_new"
        )
        .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_retrying(
            c, id, 2, "pm_new"
        )
        .await)
        .await
    );
    let retrying = stored(&db.store, id).await;
    assert_eq!(
        (retrying.status, retrying.attempt),
        (ChargeStatus::Retrying, 2)
    );
    assert_eq!(retrying.payment_intent_id, None);
    assert_eq!(
        retrying.payment_method_id.as_deref(),
        Some("pm_new"),
        "attempt 2 charges the card the customer just gave"
    );

    // A late webhook about attempt 1's PaymentIntent cannot settle the retry, nor can attempt 1.
    let late_failure = PaymentIntentOutcome::Failed {
        code: "card_declined".to_owned(),
        message: "declined".to_owned(),
    };
    assert_eq!(settle(&db.store, "pi_1", late_failure).await, None);
    assert!(
        !apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_1")
            .await)
        .await
    );

    assert!(
        apply(&db.store, async |c| mark_charge_succeeded(c, id, 2, "pi_2")
            .await)
        .await
    );
    let succeeded = stored(&db.store, id).await;
    assert_eq!(succeeded.status, ChargeStatus::Succeeded);
    assert_eq!(succeeded.attempt, 2);
    assert_eq!(succeeded.payment_intent_id.as_deref(), Some("pi_2"));
    assert_eq!(
        succeeded.decline_code.as_deref(),
        Some("insufficient_funds"),
        "why it needed a new card is kept"
    );
}

#[tokio::test]
async fn an_expired_link_gets_one_reminder_then_the_charge_fails() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    assert!(
        apply(&db.store, async |c| {
            mark_charge_requires_recheckout(c, id, 1, None, None, "authentication_required", "3DS")
                .await
        })
        .await
    );
    let (first, second) = (at(1_900_086_400), at(1_900_172_800));
    assert!(
        apply(&db.store, async |c| {
            set_recheckout_session(c, id, "cs_1", "https://checkout/cs_1", first, 0).await
        })
        .await
    );
    assert!(
        apply(&db.store, async |c| {
            set_recheckout_session(c, id, "cs_2", "https://checkout/cs_2", second, 1).await
        })
        .await
    );
    // A late retry of the first link's step cannot bring it back.
    assert!(
        !apply(&db.store, async |c| {
            set_recheckout_session(c, id, "cs_1", "https://checkout/cs_1", first, 0).await
        })
        .await
    );
    assert_eq!(
        db.store.charge_by_recheckout_session("cs_1").await.unwrap(),
        None
    );
    let reminded = db
        .store
        .charge_by_recheckout_session("cs_2")
        .await
        .unwrap()
        .expect("the new link names the charge");
    assert_eq!(reminded.reminders_sent, 1);
    assert_eq!(reminded.recheckout_expires_at, Some(second));

    assert!(
        apply(&db.store, async |c| {
            mark_charge_failed(c, id, "recheckout_expired", "the re-pay link expired twice").await
        })
        .await
    );
    assert!(
        !apply(&db.store, async |c| mark_charge_retrying(
            c, id, 2, "pm_new"
        )
        .await)
        .await
    );
    let failed = stored(&db.store, id).await;
    assert_eq!(failed.status, ChargeStatus::Failed);
    assert_eq!(failed.failure_code.as_deref(), Some("recheckout_expired"));
}

#[tokio::test]
async fn payment_intent_webhooks_settle_only_open_charges() {
    let db = TestDb::new().await;
    let paid = create(&db.store, "ref-paid").await.id;
    let refused = create(&db.store, "ref-refused").await.id;
    assert!(
        apply(&db.store, async |c| mark_charge_processing(
            c, paid, 1, "pi_paid"
        )
        .await)
        .await
    );
    assert!(
        apply(&db.store, async |c| {
            mark_charge_processing(c, refused, 1, "pi_refused").await
        })
        .await
    );

    assert_eq!(
        settle(&db.store, "pi_paid", PaymentIntentOutcome::Processing).await,
        None,
        "already processing"
    );
    let settled = settle(&db.store, "pi_paid", PaymentIntentOutcome::Succeeded)
        .await
        .expect("a processing charge settles");
    assert_eq!(
        (settled.id, settled.status),
        (paid, ChargeStatus::Succeeded)
    );
    assert_eq!(stored(&db.store, paid).await, settled);
    // A redelivery, and a failure arriving out of order, find nothing open.
    assert_eq!(
        settle(&db.store, "pi_paid", PaymentIntentOutcome::Succeeded).await,
        None
    );
    let failure = PaymentIntentOutcome::Failed {
        code: "card_declined".to_owned(),
        message: "Your card was declined.".to_owned(),
    };
    assert_eq!(settle(&db.store, "pi_paid", failure.clone()).await, None);
    assert_eq!(stored(&db.store, paid).await, settled);

    let failed = settle(&db.store, "pi_refused", failure)
        .await
        .expect("a processing charge fails");
    assert_eq!(failed.id, refused);
    assert_eq!(failed.status, ChargeStatus::Failed);
    assert_eq!(failed.failure_code.as_deref(), Some("card_declined"));
    assert_eq!(
        settle(&db.store, "pi_refused", PaymentIntentOutcome::Succeeded).await,
        None
    );

    assert_eq!(
        settle(&db.store, "pi_unknown", PaymentIntentOutcome::Succeeded).await,
        None
    );
}

#[tokio::test]
async fn charges_are_listed_by_status_a_page_at_a_time() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(create(&db.store, &format!("ref-{n}")).await.id);
    }
    for &id in [ids[0], ids[2], ids[3]].iter() {
        let pi = format!("pi_{id}");
        assert!(
            apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, &pi)
                .await)
            .await
        );
    }
    let page_ids = |page: Vec<ChargeRecord>| page.into_iter().map(|c| c.id).collect::<Vec<_>>();

    let all = db.store.list_charges(None, None, 10, None).await.unwrap();
    assert_eq!(page_ids(all), ids);

    let succeeded = Some(ChargeStatus::Succeeded);
    let first = db
        .store
        .list_charges(succeeded, None, 2, None)
        .await
        .unwrap();
    assert!(first.iter().all(|c| c.status == ChargeStatus::Succeeded));
    let after = first.last().map(|c| c.id);
    assert_eq!(page_ids(first), [ids[0], ids[2]]);
    let second = db
        .store
        .list_charges(succeeded, None, 2, after)
        .await
        .unwrap();
    let after = second.last().map(|c| c.id);
    assert_eq!(page_ids(second), [ids[3]]);
    assert!(db
        .store
        .list_charges(succeeded, None, 2, after)
        .await
        .unwrap()
        .is_empty());

    let pending = db
        .store
        .list_charges(Some(ChargeStatus::Pending), None, 10, Some(ids[1]))
        .await
        .unwrap();
    assert_eq!(page_ids(pending), [ids[4]]);
    assert!(db
        .store
        .list_charges(Some(ChargeStatus::Retrying), None, 10, None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_second_executor_waits_for_the_first_and_sees_its_outcome() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    let mut first = db.store.begin().await.unwrap();
    let locked = charge_for_update(&mut first, id).await.unwrap().unwrap();
    assert_eq!(locked.status, ChargeStatus::Pending);

    let store = db.store.clone();
    let second = tokio::spawn(async move {
        let mut tx = store.begin().await.unwrap();
        let seen = charge_for_update(&mut tx, id).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        seen
    });
    wait_until(
        Duration::from_secs(10),
        "the second executor waits for the charge",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    assert!(mark_charge_succeeded(&mut first, id, 1, "pi_1")
        .await
        .unwrap());
    first.commit().await.unwrap();

    let seen = second.await.unwrap();
    assert_eq!(seen.status, ChargeStatus::Succeeded);
    let mut tx = db.store.begin().await.unwrap();
    assert_eq!(charge_for_update(&mut tx, i64::MAX).await.unwrap(), None);
}

#[tokio::test]
async fn an_attempt_is_recorded_once_before_it_is_sent() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    let fresh = stored(&db.store, id).await;
    assert_eq!(
        (fresh.attempt_started_at, fresh.attempt_key.as_deref()),
        (None, None)
    );
    assert!(
        apply(&db.store, async |c| {
            record_attempt_start(c, id, 1, "pm_a", "kassa:i:charge:1:1", true).await
        })
        .await
    );
    // A second run finds it started and records nothing over it; nor can another attempt.
    assert!(
        !apply(&db.store, async |c| {
            record_attempt_start(c, id, 1, "pm_b", "kassa:i:charge:1:1:x", false).await
        })
        .await
    );
    assert!(
        !apply(&db.store, async |c| {
            record_attempt_start(c, id, 2, "pm_b", "kassa:i:charge:1:2", false).await
        })
        .await
    );
    let started = stored(&db.store, id).await;
    assert!(started.attempt_started_at.is_some());
    assert_eq!(started.attempt_key_started_at, started.attempt_started_at);
    assert_eq!(started.attempt_payment_method_id.as_deref(), Some("pm_a"));
    assert_eq!(started.attempt_key.as_deref(), Some("kassa:i:charge:1:1"));
    assert_eq!(started.attempt_key_generation, 0);
    assert!(started.livemode, "the mode of the key that charges it");
    assert!(
        !apply(&db.store, async |c| record_attempt_card(c, id, 1, "pm_b")
            .await)
        .await,
        "the card is resolved once"
    );

    // A new key only from the generation seen, once: a racing second replacement is refused.
    assert!(
        apply(&db.store, async |c| {
            rekey_attempt(c, id, 1, 0, "kassa:i:charge:1:1:k1").await
        })
        .await
    );
    assert!(
        !apply(&db.store, async |c| {
            rekey_attempt(c, id, 1, 0, "kassa:i:charge:1:1:k1").await
        })
        .await
    );
    let rekeyed = stored(&db.store, id).await;
    assert_eq!(
        rekeyed.attempt_key.as_deref(),
        Some("kassa:i:charge:1:1:k1")
    );
    assert_eq!(rekeyed.attempt_key_generation, 1);
    assert_eq!(
        rekeyed.attempt_started_at, started.attempt_started_at,
        "the attempt still started then: lookups reach back to it"
    );
    assert!(rekeyed.attempt_key_started_at >= started.attempt_key_started_at);

    // One key names one attempt.
    let other = create(&db.store, "ref-2").await.id;
    let mut tx = db.store.begin().await.unwrap();
    let clash = record_attempt_start(&mut tx, other, 1, "pm_a", "kassa:i:charge:1:1:k1", false)
        .await
        .expect_err("a key already in use");
    assert_eq!(clash.sqlstate().as_deref(), Some("23505"), "{clash:?}");
}

#[tokio::test]
async fn a_charge_in_review_is_settled_by_stripe_or_a_person() {
    let db = TestDb::new().await;
    let id = create(&db.store, "ref-1").await.id;
    assert!(
        !apply(&db.store, async |c| mark_charge_needs_review(c, id, 2, "x")
            .await)
        .await,
        "only the current attempt"
    );
    assert!(
        apply(&db.store, async |c| {
            mark_charge_needs_review(c, id, 1, "Stripe could not be asked").await
        })
        .await
    );
    let review = stored(&db.store, id).await;
    assert_eq!(review.status, ChargeStatus::NeedsReview);
    assert_eq!(
        review.review_reason.as_deref(),
        Some("Stripe could not be asked")
    );
    assert!(!review.status.is_final());

    // Back in line: attempt 1 is pending again, its record kept for the lookup.
    let mut tx = db.store.begin().await.unwrap();
    let requeued = requeue_charge(&mut tx, id)
        .await
        .unwrap()
        .expect("in review");
    tx.commit().await.unwrap();
    assert_eq!(requeued.status, ChargeStatus::Pending);
    let mut tx = db.store.begin().await.unwrap();
    assert_eq!(requeue_charge(&mut tx, id).await.unwrap(), None);
    drop(tx);

    // A webhook naming the attempt's PaymentIntent settles a charge in review.
    assert!(
        apply(&db.store, async |c| mark_charge_needs_review(
            c, id, 1, "again"
        )
        .await)
        .await
    );
    assert!(
        apply(&db.store, async |c| mark_charge_succeeded(c, id, 1, "pi_1")
            .await)
        .await
    );
    assert_eq!(stored(&db.store, id).await.status, ChargeStatus::Succeeded);

    // A person's word: succeeded by a PaymentIntent no other charge has.
    let other = create(&db.store, "ref-2").await.id;
    assert!(
        apply(&db.store, async |c| mark_charge_needs_review(
            c, other, 1, "why"
        )
        .await)
        .await
    );
    assert!(
        !apply(&db.store, async |c| resolve_charge_succeeded(
            c, other, "pi_1"
        )
        .await)
        .await,
        "pi_1 paid charge {id} already"
    );
    assert!(
        apply(&db.store, async |c| resolve_charge_succeeded(
            c, other, "pi_2"
        )
        .await)
        .await
    );
    let resolved = stored(&db.store, other).await;
    assert_eq!(
        (resolved.status, resolved.payment_intent_id.as_deref()),
        (ChargeStatus::Succeeded, Some("pi_2"))
    );
    assert!(
        !apply(&db.store, async |c| resolve_charge_succeeded(
            c, other, "pi_2"
        )
        .await)
        .await,
        "only a charge in review"
    );

    // Or failed: nothing was charged.
    let third = create(&db.store, "ref-3").await.id;
    assert!(
        apply(&db.store, async |c| mark_charge_needs_review(
            c, third, 1, "why"
        )
        .await)
        .await
    );
    assert!(
        apply(&db.store, async |c| {
            mark_charge_failed(c, third, "resolved_failed", "nothing was charged").await
        })
        .await
    );
    assert_eq!(stored(&db.store, third).await.status, ChargeStatus::Failed);
}

#[tokio::test]
async fn the_installation_id_is_made_once_and_kept() {
    let db = TestDb::new().await;
    let id = db.store.installation_id().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(
        kassa_store::installation::read_installation_id(db.store.pool())
            .await
            .unwrap(),
        id
    );
    let again = Store::connect(&crate::test_db::database_url(&db.name), 1)
        .await
        .unwrap();
    assert_eq!(
        again.installation_id(),
        id,
        "migrations never make a second one"
    );
    again.close().await;
    assert_eq!(count_rows(&db.store, "installation").await, 1);
}

#[tokio::test]
async fn charges_open_before_attempts_were_recorded_keep_the_key_of_their_time() {
    use sqlx::Connection;
    // A database as the previous version left it: migrations up to the poll cursor only.
    let name = crate::test_db::unique_database_name();
    let _drop = crate::test_db::DropDatabase(name.clone());
    let mut admin = sqlx::PgConnection::connect(&crate::test_db::database_url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = crate::test_db::database_url(&name);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            kassa_store::MIGRATOR
                .iter()
                .filter(|m| m.version <= 7)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO charges (reference, customer_id, payment_method_id, amount, currency, status, attempt)
         VALUES ('old-pending', 'cus_1', NULL, 500, 'usd', 'pending', 1),
                ('old-retrying', 'cus_1', 'pm_2', 500, 'usd', 'retrying', 2),
                ('old-paid', 'cus_1', NULL, 500, 'usd', 'succeeded', 1)
         RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = Store::connect(&url, 2).await.unwrap();
    let pending = stored(&store, ids[0]).await;
    assert_eq!(
        pending.attempt_key,
        Some(format!("kassa:charge:{}:1", ids[0])),
        "it may have been sent under the key of its time: that key, and a lookup first"
    );
    assert_eq!(pending.attempt_started_at, Some(pending.updated_at));
    assert_eq!(pending.attempt_key_started_at, Some(pending.updated_at));
    assert_eq!(
        pending.attempt_payment_method_id, None,
        "resolved at the next run"
    );
    let retrying = stored(&store, ids[1]).await;
    assert_eq!(
        retrying.attempt_key,
        Some(format!("kassa:charge:{}:2", ids[1]))
    );
    assert_eq!(retrying.attempt_payment_method_id.as_deref(), Some("pm_2"));
    let paid = stored(&store, ids[2]).await;
    assert_eq!((paid.attempt_key, paid.attempt_started_at), (None, None));
    store.close().await;
}
