//! Kassa's PostgreSQL layer: a connection pool that creates its database if missing and applies
//! the migrations in `/migrations` at start ([`Store::connect`]), the inbox of Stripe events with
//! exactly-once effects ([`events`]), and one module per table family: [`customers`] (customers
//! and their payment methods) with the cursor of their backfill ([`customer_sync`]),
//! [`checkout_sessions`], back-office [`charges`] of saved cards, the [`outbox`] of messages to
//! publish, payment [`widgets`], [`save_card_links`], the sealed [`settings`], and the
//! [`installation`] id that Kassa's Idempotency-Keys and Stripe metadata carry; [`saved_cards`]
//! writes everything a completed setup session saved in one statement.
//! Writes are plain functions taking `&mut PgConnection`, so the worker runs them inside the
//! transaction of the event being handled; reads are also methods on [`Store`].
//!
//! It never calls Stripe or RabbitMQ, and it never commits the effects of a Stripe event without
//! marking that event processed in the same transaction ([`EventTx::complete`], or a handler's
//! last statement and [`EventTx::complete_marked`]); messages leave through the outbox, which a
//! relay elsewhere publishes.
//!
//! Queries are checked at compile time against the offline data in this crate's `.sqlx/`
//! (regenerate with `crates/kassa-store/scripts/sqlx-prepare` after changing a query or a
//! migration), so building needs no database.

pub mod charge_jobs;
pub mod charges;
pub mod checkout_sessions;
pub mod customer_sync;
pub mod customers;
mod error;
pub mod events;
pub mod installation;
pub mod leadership;
pub mod outbox;
pub mod own_writes;
pub mod payments;
mod pool;
pub mod save_card_links;
pub mod saved_cards;
pub mod settings;
pub mod widgets;

pub use charge_jobs::{ChargeJob, JobRoute};
pub use charges::{ChargeRecord, ChargeStatus, NewCharge, PaymentIntentOutcome};
pub use checkout_sessions::{CheckoutPurpose, CheckoutSessionRecord};
pub use customer_sync::{SyncCounts, SyncCursor};
pub use customers::{CustomerRecord, PaymentMethodRecord};
pub use error::StoreError;
pub use events::{
    EventClaim, EventToSettle, EventTx, InboxMark, InboxMarked, Settled, StoredEvent,
};
pub use leadership::Leadership;
pub use outbox::{OutboxEntry, OutboxMessage, PendingOutboxEntry};
pub use payments::{NewPayment, PaymentRecord, RecordedBy};
pub use pool::{Store, DEFAULT_CLAIM_LOCK_TIMEOUT, DEFAULT_DATABASE_URL};
pub use save_card_links::{NewSaveCardLink, SaveCardLinkRecord};
pub use settings::{NewSealedSetting, SealedSetting, SettingsRewrite};
pub use widgets::{NewWidget, WidgetProduct, WidgetRecord};

/// Re-exported so callers name the same connection and timestamp types as the store.
pub use sqlx::{types::time::OffsetDateTime, PgConnection};

/// A transaction begun with [`Store::begin`].
pub type Transaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// The migrations in the repository's `/migrations` folder, embedded at compile time.
///
/// [`Store::connect`] runs them; other crates' tests may hand them to `#[sqlx::test(migrator = …)]`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
