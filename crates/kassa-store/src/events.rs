//! The inbox of Stripe events (`stripe_events`): each event's effects commit exactly once.
//!
//! Stripe delivers an event at least once, and RabbitMQ redelivers what was not acked, so the
//! worker claims every event here first. [`Store::claim_event`] opens a transaction in which the
//! event's row exists and is locked: `BEGIN; SET LOCAL lock_timeout` in one round trip, then
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`, which for a new event both creates and holds the
//! row; only a row that existed already is then locked with `SELECT … FOR UPDATE`. The handler writes through [`EventTx::conn`] and [`EventTx::complete`] sets
//! `processed_at` and commits, all at once. A duplicate handled at the same time blocks on the row
//! lock and, once the first commits, sees `processed_at` and gets [`EventClaim::AlreadyProcessed`];
//! if the first crashes or fails instead, its transaction rolls back and the duplicate claims it.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};

use crate::{OffsetDateTime, Store, StoreError};

/// How long an event the poller published may wait in the queue before a pass publishes it
/// again (the first copy was lost, e.g. the queue was purged).
pub const POLLED_EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Longest `last_error` kept, in bytes; error chains can embed whole response bodies.
const MAX_ERROR_LEN: usize = 4096;

/// The outcome of [`Store::claim_event`].
#[derive(Debug)]
#[must_use = "a Claimed event must be completed, failed or dropped"]
pub enum EventClaim {
    /// The event's effects were committed before: ack the message and do nothing.
    AlreadyProcessed,
    /// This caller holds the event: run the handler inside it, then [`EventTx::complete`].
    Claimed(EventTx),
}

/// The outcome of [`Store::settle_without_effects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Marked processed now: ack.
    Settled,
    /// Processed before: ack and do nothing.
    Duplicate,
    /// The echo's write has no note (its transaction rolled back, or the note was pruned):
    /// nothing was marked; handle the event the usual way.
    NotRecorded,
    /// Only from [`Store::settle_many_without_effects`]: another transaction holds the event's
    /// inbox row or the write's key, and a batch never waits for them. Nothing was marked (the
    /// event's inbox row may have been created); handle the event the way a single one is
    /// handled ([`Store::settle_without_effects`], which waits, or the usual claim).
    Busy,
}

/// One event for [`Store::settle_many_without_effects`]: the arguments of
/// [`Store::settle_without_effects`], owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventToSettle {
    /// Stripe's event id, `evt_…`.
    pub id: String,
    /// The event type.
    pub kind: String,
    /// Whether the event came from live mode.
    pub livemode: bool,
    /// The write an echo answers (its Idempotency-Key and object), or `None` for an event with
    /// nothing to read.
    pub own_write: Option<(String, String)>,
}

/// The longest a batch of [`Store::settle_many_without_effects`] waits for a lock (the claim lock
/// timeout when that is shorter). A batch waits only in a rare case (a new event's inbox row
/// inserted by another transaction that has not committed yet) and every event in it waits
/// along, so it gives up early: the caller then settles the events one by one.
pub const SETTLE_BATCH_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// A claimed event: an open transaction holding the event's inbox row locked.
///
/// Dropping it without [`EventTx::complete`] rolls everything back, as a crash would: the event
/// stays unprocessed and the next delivery claims it again. It derefs to the transaction's
/// [`PgConnection`], so record functions take `&mut event_tx` or `event_tx.conn()`.
#[derive(Debug)]
pub struct EventTx {
    tx: Transaction<'static, Postgres>,
    store: Store,
    id: String,
    kind: String,
    livemode: bool,
    previous_attempts: i32,
}

/// The inbox mark of a claimed event ([`EventTx::inbox_mark`]), for a handler whose last write
/// sets it in the same statement, one round trip fewer. Only a statement in the claim's own
/// transaction may use it: the mark then commits with the effects or rolls back with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMark {
    event_id: String,
}

impl InboxMark {
    /// The claimed event's id.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
}

/// Proof that a statement in the claim's transaction marked the event processed; hand it to
/// [`EventTx::complete_marked`]. Only kassa-store makes one, and only from a statement that
/// reported the inbox row updated.
#[derive(Debug)]
#[must_use = "a marked event must be committed with EventTx::complete_marked"]
pub struct InboxMarked {
    event_id: String,
}

impl InboxMarked {
    /// Made by the statement that marked `event_id`, after it reported the row updated.
    pub(crate) fn new(event_id: &str) -> Self {
        Self {
            event_id: event_id.to_owned(),
        }
    }
}

/// One row of the inbox, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Stripe's event id, `evt_…`.
    pub id: String,
    /// The event type, e.g. `checkout.session.completed`.
    pub kind: String,
    /// Whether the event came from live mode.
    pub livemode: bool,
    /// When the inbox first saw the event.
    pub received_at: OffsetDateTime,
    /// When the event's effects committed; `None` while unprocessed.
    pub processed_at: Option<OffsetDateTime>,
    /// Failed attempts plus the completed one.
    pub attempts: i32,
    /// The error of the latest failed attempt.
    pub last_error: Option<String>,
    /// When the latest failure sent the event to the dead-letter queue; cleared by a later
    /// failure that did not.
    pub dead_lettered_at: Option<OffsetDateTime>,
}

/// Serialises work on one Stripe object (`cus_…`, `pm_…`, `cs_…`) across workers until the
/// caller's transaction ends: take it *before* re-fetching the object from Stripe, and handlers of
/// concurrent events about the same object commit in the order they fetched, so an older state
/// never overwrites a newer one. Bounded by the transaction's `lock_timeout` (a claim sets one).
pub async fn lock_stripe_object(
    conn: &mut PgConnection,
    object_id: &str,
) -> Result<(), StoreError> {
    // A runtime query: advisory locks are functions, nothing for the compile-time check to see.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(object_id)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Claims the event `id` for handling: see the [module documentation](self).
    ///
    /// Waits up to the claim lock timeout ([`crate::DEFAULT_CLAIM_LOCK_TIMEOUT`] unless set with
    /// [`Store::with_claim_lock_timeout`]) while another worker holds the same event, then fails
    /// with [`StoreError::Transient`].
    ///
    /// A claim holds one pooled connection until it completes, fails or is dropped, Stripe calls
    /// included: size the pool above the number of events handled at once.
    pub async fn claim_event(
        &self,
        id: &str,
        kind: &str,
        livemode: bool,
    ) -> Result<EventClaim, StoreError> {
        // Two round trips for a new event: BEGIN with the lock timeout, then the insert, which
        // returns the row when this transaction created it (and so holds it until the end).
        let mut tx = self
            .pool
            .begin_with(begin_with_lock_timeout(self.claim_lock_timeout))
            .await?;
        // A concurrent claimer's uncommitted insert of the same id makes this wait for its
        // outcome; an existing row makes it a no-op and the SELECT below waits for the lock.
        let inserted = sqlx::query_scalar!(
            "INSERT INTO stripe_events (id, type, livemode) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING
             RETURNING attempts",
            id,
            kind,
            livemode,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(attempts) = inserted {
            return Ok(EventClaim::Claimed(EventTx {
                tx,
                store: self.clone(),
                id: id.to_owned(),
                kind: kind.to_owned(),
                livemode,
                previous_attempts: attempts,
            }));
        }
        let row = sqlx::query!(
            "SELECT processed_at, attempts FROM stripe_events WHERE id = $1 FOR UPDATE",
            id,
        )
        .fetch_one(&mut *tx)
        .await?;
        if row.processed_at.is_some() {
            tx.rollback().await?;
            return Ok(EventClaim::AlreadyProcessed);
        }
        Ok(EventClaim::Claimed(EventTx {
            tx,
            store: self.clone(),
            id: id.to_owned(),
            kind: kind.to_owned(),
            livemode,
            previous_attempts: row.attempts,
        }))
    }

    /// Settles event `id` when its handling needs no Stripe call and writes nothing but the inbox
    /// mark, in one round trip and one transaction (`kassa_settle_without_effects`, migration
    /// 0018): an echo whose write's answer is recorded (`own_write` = the write's key and object;
    /// see [`crate::own_writes`]), or an event with nothing to read (`own_write` = `None`).
    ///
    /// Takes the same locks in the same order as [`Store::claim_event`] and the echo check, so it
    /// never runs alongside another handling of the same event. Its commit does not wait for the
    /// disk (`synchronous_commit = off`): a crash can lose the mark but no work, since the event
    /// wrote nothing else; see docs/ARCHITECTURE.md, "Events that need no Stripe call".
    pub async fn settle_without_effects(
        &self,
        id: &str,
        kind: &str,
        livemode: bool,
        own_write: Option<(&str, &str)>,
    ) -> Result<Settled, StoreError> {
        let (key, object) = own_write.unzip();
        let timeout_ms =
            i32::try_from(self.claim_lock_timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        let outcome = sqlx::query_scalar!(
            r#"SELECT kassa_settle_without_effects($1, $2, $3, $4, $5, $6) AS "outcome!""#,
            id,
            kind,
            livemode,
            key,
            object,
            timeout_ms,
        )
        .fetch_one(&self.pool)
        .await?;
        match outcome.as_str() {
            "settled" => Ok(Settled::Settled),
            "duplicate" => Ok(Settled::Duplicate),
            "not_recorded" => Ok(Settled::NotRecorded),
            other => Err(unexpected(format!(
                "kassa_settle_without_effects answered {other:?}"
            ))),
        }
    }

    /// Settles `events` as [`Store::settle_without_effects`] settles one, all in one round trip
    /// and one transaction (`kassa_settle_without_effects_many`, migration 0020); returns one
    /// outcome per event, in order.
    ///
    /// Never waits for a lock another handler holds: an event whose inbox row or write's key is
    /// held elsewhere is [`Settled::Busy`]. A second copy of an id in `events` is
    /// [`Settled::Duplicate`] when the first was settled, else gets the first's outcome. The
    /// commit returns before the disk flush, as for a single event. An error (e.g. the rare lock
    /// wait timed out, after [`SETTLE_BATCH_LOCK_TIMEOUT`]) rolls back the whole batch: nothing
    /// is marked, and the caller settles each event on its own.
    pub async fn settle_many_without_effects(
        &self,
        events: &[EventToSettle],
    ) -> Result<Vec<Settled>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let kinds: Vec<String> = events.iter().map(|e| e.kind.clone()).collect();
        let livemodes: Vec<bool> = events.iter().map(|e| e.livemode).collect();
        let keys: Vec<Option<String>> = events
            .iter()
            .map(|e| e.own_write.as_ref().map(|(key, _)| key.clone()))
            .collect();
        let objects: Vec<Option<String>> = events
            .iter()
            .map(|e| e.own_write.as_ref().map(|(_, object)| object.clone()))
            .collect();
        let timeout = self.claim_lock_timeout.min(SETTLE_BATCH_LOCK_TIMEOUT);
        let timeout_ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        let rows = sqlx::query!(
            r#"SELECT ord AS "ord!", outcome AS "outcome!"
               FROM kassa_settle_without_effects_many($1, $2, $3, $4, $5, $6)"#,
            &ids,
            &kinds,
            &livemodes,
            // `as _`: the check knows text[] only as Vec<String>; these hold NULLs (no write).
            &keys as _,
            &objects as _,
            timeout_ms,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut outcomes = vec![None; events.len()];
        for row in rows {
            let slot = usize::try_from(row.ord)
                .ok()
                .and_then(|ord| ord.checked_sub(1))
                .and_then(|i| outcomes.get_mut(i));
            let Some(slot) = slot else {
                return Err(unexpected(format!(
                    "kassa_settle_without_effects_many answered for event {}",
                    row.ord
                )));
            };
            *slot = Some(match row.outcome.as_str() {
                "settled" => Settled::Settled,
                "duplicate" => Settled::Duplicate,
                "not_recorded" => Settled::NotRecorded,
                "busy" => Settled::Busy,
                other => {
                    return Err(unexpected(format!(
                        "kassa_settle_without_effects_many answered {other:?}"
                    )))
                }
            });
        }
        outcomes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unexpected("kassa_settle_without_effects_many left events out".into()))
    }

    /// Records a failed attempt at `id` in its own short transaction: `attempts + 1`,
    /// `last_error`, and `dead_lettered_at` when the failure sent the event to the dead-letter
    /// queue. Creates the row if the failed claim's transaction took it away.
    ///
    /// Prefer [`EventTx::fail`], which first releases the claim: called while this process still
    /// holds the event's claim, this waits on that claim's lock and fails with a lock timeout.
    /// Does nothing to an event already processed.
    pub async fn record_event_failure(
        &self,
        id: &str,
        kind: &str,
        livemode: bool,
        error: &str,
        dead_lettered: bool,
    ) -> Result<(), StoreError> {
        let error = truncate(error, MAX_ERROR_LEN);
        let mut tx = self
            .pool
            .begin_with(begin_with_lock_timeout(self.claim_lock_timeout))
            .await?;
        sqlx::query!(
            "INSERT INTO stripe_events (id, type, livemode, attempts, last_error, dead_lettered_at)
             VALUES ($1, $2, $3, 1, $4, CASE WHEN $5::boolean THEN now() END)
             ON CONFLICT (id) DO UPDATE SET
                 attempts = stripe_events.attempts + 1,
                 last_error = EXCLUDED.last_error,
                 dead_lettered_at = EXCLUDED.dead_lettered_at
             WHERE stripe_events.processed_at IS NULL",
            id,
            kind,
            livemode,
            error,
            dead_lettered,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes up to `batch` inbox rows processed more than `older_than` ago, and as many of the
    /// own-write notes recorded before then (`stripe_own_writes`); returns how many inbox rows
    /// went. Unprocessed rows (failing, dead-lettered) stay. Call again until it returns less
    /// than `batch`.
    pub async fn delete_processed_events(
        &self,
        older_than: std::time::Duration,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM stripe_events WHERE id IN (
                 SELECT id FROM stripe_events
                 WHERE processed_at IS NOT NULL
                   AND processed_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            older_than.as_secs_f64(),
            i64::from(batch),
        )
        .execute(&self.pool)
        .await?;
        sqlx::query!(
            "DELETE FROM stripe_own_writes WHERE (idempotency_key, object_id) IN (
                 SELECT idempotency_key, object_id FROM stripe_own_writes
                 WHERE recorded_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            older_than.as_secs_f64(),
            i64::from(batch),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The inbox row of event `id`, if the inbox has seen it.
    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let event = sqlx::query_as!(
            StoredEvent,
            r#"SELECT id, type AS kind, livemode, received_at, processed_at, attempts, last_error,
                      dead_lettered_at
               FROM stripe_events WHERE id = $1"#,
            id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(event)
    }

    /// Events whose latest failure dead-lettered them and that were not processed since, oldest
    /// first, at most `limit`.
    pub async fn list_dead_lettered_events(
        &self,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let events = sqlx::query_as!(
            StoredEvent,
            r#"SELECT id, type AS kind, livemode, received_at, processed_at, attempts, last_error,
                      dead_lettered_at
               FROM stripe_events
               WHERE dead_lettered_at IS NOT NULL AND processed_at IS NULL
               ORDER BY dead_lettered_at, id
               LIMIT $1"#,
            i64::from(limit),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }
}

/// Where an events poller has read up to (`event_poll_cursor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollCursor {
    /// Stripe's `created` (Unix seconds) of the newest event seen.
    pub last_created: i64,
    /// That event's id.
    pub last_event_id: Option<String>,
}

impl Store {
    /// Which of `ids` the inbox has a row for (processed, failed or dead-lettered), or the
    /// events poller published less than [`POLLED_EVENT_WAIT`] ago and no worker took yet: an
    /// event not among them never reached a worker, or its published copy is long overdue.
    pub async fn known_event_ids(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let rows = sqlx::query_scalar!(
            "SELECT id FROM stripe_events
             WHERE id = ANY($1)
               AND NOT (processed_at IS NULL AND attempts = 0
                        AND received_at < now() - make_interval(secs => $2))",
            ids,
            POLLED_EVENT_WAIT.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Notes that the events poller published event `id`, so the next passes do not publish it
    /// again while it waits in the queue: an inbox row no worker has claimed yet (the claim
    /// takes it over as its own).
    pub async fn note_polled_event(
        &self,
        id: &str,
        kind: &str,
        livemode: bool,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO stripe_events (id, type, livemode) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
            id,
            kind,
            livemode,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The cursor of the poller `name`, if it ever saved one.
    pub async fn poll_cursor(&self, name: &str) -> Result<Option<PollCursor>, StoreError> {
        let cursor = sqlx::query_as!(
            PollCursor,
            "SELECT last_created, last_event_id FROM event_poll_cursor WHERE name = $1",
            name,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(cursor)
    }

    /// Moves the cursor of `name` forward to `cursor` (never back: two pollers may race).
    pub async fn advance_poll_cursor(
        &self,
        name: &str,
        cursor: &PollCursor,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO event_poll_cursor (name, last_created, last_event_id) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET
                 last_created = EXCLUDED.last_created,
                 last_event_id = EXCLUDED.last_event_id,
                 updated_at = now()
             WHERE event_poll_cursor.last_created <= EXCLUDED.last_created",
            name,
            cursor.last_created,
            cursor.last_event_id,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl EventTx {
    /// The claimed event's id.
    pub fn event_id(&self) -> &str {
        &self.id
    }

    /// How many attempts at this event were recorded before this one.
    pub fn previous_attempts(&self) -> i32 {
        self.previous_attempts
    }

    /// The transaction's connection, for record functions and reads that must see its writes.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Marks the event processed (`processed_at = clock_timestamp()`, the real time rather than the transaction's start, `attempts + 1`) and commits it together
    /// with everything written through this transaction.
    ///
    /// An error from the commit itself leaves the outcome unknown; the redelivery finds out
    /// (it gets `AlreadyProcessed` if the commit did happen).
    pub async fn complete(mut self) -> Result<(), StoreError> {
        // The mark, as kassa_settle_without_effects and saved_cards::record_saved_card set it.
        sqlx::query!(
            "UPDATE stripe_events SET processed_at = clock_timestamp(), attempts = attempts + 1 WHERE id = $1",
            self.id,
        )
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// The inbox mark of this event, for a handler's last write to set
    /// ([`crate::saved_cards::record_saved_card`]); then commit with
    /// [`EventTx::complete_marked`].
    pub fn inbox_mark(&self) -> InboxMark {
        InboxMark {
            event_id: self.id.clone(),
        }
    }

    /// Commits everything written through this transaction, the inbox mark included, which a
    /// statement of the handler set (`marked` says so): one round trip instead of the mark's
    /// and the commit's. A proof about another event is not trusted: the mark is then set here
    /// as [`EventTx::complete`] does.
    pub async fn complete_marked(self, marked: InboxMarked) -> Result<(), StoreError> {
        if marked.event_id != self.id {
            return self.complete().await;
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back this attempt, then records it as failed (see [`Store::record_event_failure`]).
    pub async fn fail(self, error: &str, dead_lettered: bool) -> Result<(), StoreError> {
        let EventTx {
            tx,
            store,
            id,
            kind,
            livemode,
            ..
        } = self;
        tx.rollback().await?;
        store
            .record_event_failure(&id, &kind, livemode, error, dead_lettered)
            .await
    }

    /// Rolls back this attempt without recording anything, e.g. on shutdown before the handler
    /// finished; the message is requeued and claimed again.
    pub async fn abandon(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl Deref for EventTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for EventTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// `BEGIN` and `SET LOCAL lock_timeout` in one round trip (a simple-query batch): every lock wait
/// of the transaction is bounded by `timeout`. The value is a number of milliseconds Kassa
/// formats itself, never input.
fn begin_with_lock_timeout(timeout: std::time::Duration) -> String {
    format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms'",
        timeout.as_millis().max(1)
    )
}

/// An answer of PostgreSQL that Kassa's functions never give.
fn unexpected(what: String) -> StoreError {
    StoreError::Permanent(sqlx::Error::Protocol(what))
}

/// The longest prefix of `text` within `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
