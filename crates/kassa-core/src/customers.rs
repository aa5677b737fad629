//! Customers Kassa has not recorded yet, taken from Stripe: one on demand
//! ([`import_customer`], when a charge names a customer that existed before Kassa was installed
//! or whose webhooks are still on their way), or every one at once ([`sync_customers`], the
//! backfill behind `kassa customers sync`).
//!
//! Both read Stripe first — the customer (`GET /v1/customers/{id}`, or a page of
//! `GET /v1/customers`) and its saved cards (`GET /v1/payment_methods?customer=…&type=card`,
//! paged) — then write what they read in one short transaction, with the same rules the webhooks
//! use (no connection is held across a Stripe call). They read without the customer's lock, so
//! their records are observed at a time of the database's clock read before those reads
//! (`Store::observation_time`): a webhook about the same customer racing with them, or a
//! fulfilment making a new card its default, is never undone by their older read
//! (docs/ARCHITECTURE.md, "A customer's record: the newest observation wins"). Card removals are
//! left to the `payment_method.detached` webhook: a card missing from a list read a moment ago
//! may have been attached since, and a detach recorded here could never be undone.
//!
//! The backfill walks Stripe's customer list (newest first) page by page with `starting_after`
//! and records each page together with its cursor (`customer_sync`), so an interrupted sync
//! continues after the last page it recorded. Its requests go through the Stripe client, which
//! paces them (`KASSA_STRIPE_MAX_RPS`) and retries Stripe's `429 rate_limit` with backoff.

use crate::fields::FieldError;
use crate::records::{customer_record, payment_method_record};
use crate::Error;
use futures_util::{stream, StreamExt, TryStreamExt};
use kassa_store::customer_sync::advance_customer_sync;
use kassa_store::{customers, OffsetDateTime, Store, SyncCounts};
use kassa_stripe::objects::{Customer, PaymentMethod};
use kassa_stripe::resources::{ListCustomers, ListPaymentMethods};
use kassa_stripe::{Client, Mode};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The name of the customer sync's cursor row.
pub const CUSTOMERS_SYNC: &str = "customers";

/// The cursor row of the customer sync of `mode`: test mode keeps [`CUSTOMERS_SYNC`], live mode
/// has its own, so a sync of one mode never resumes after the other mode's last page.
pub fn customers_sync_cursor(mode: Mode) -> &'static str {
    match mode {
        Mode::Test => CUSTOMERS_SYNC,
        Mode::Live => "customers:live",
    }
}

/// Stripe's largest page (`limit` "can range between 1 and 100").
const PAGE: u8 = 100;

/// What Stripe said about a customer Kassa looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Recorded with this many saved cards.
    Recorded {
        /// Card payment methods attached to the customer.
        cards: usize,
    },
    /// Stripe has the customer as deleted; recorded as deleted.
    Deleted,
    /// Stripe has no such customer (`resource_missing`).
    Missing,
}

/// Refuses the customer `id`, named in `field` by a call in `mode`, when Kassa holds it in the
/// other mode: an object id never crosses modes, and no Stripe call is made for it. An id Kassa
/// does not hold is left to Stripe (which knows each mode's objects apart).
pub async fn check_customer_mode(
    store: &Store,
    id: &str,
    mode: Mode,
    field: &str,
) -> Result<Result<(), FieldError>, kassa_store::StoreError> {
    let Some(record) = store.customer(id.trim()).await? else {
        return Ok(Ok(()));
    };
    if record.livemode == mode.is_live() {
        return Ok(Ok(()));
    }
    Ok(Err(crate::fields::other_mode(
        field,
        "customer",
        id.trim(),
        Mode::from_livemode(record.livemode),
        mode,
    )))
}

/// The customer's card payment methods, every page.
async fn cards_of(stripe: &Client, customer_id: &str) -> Result<Vec<PaymentMethod>, Error> {
    let mut cards = Vec::new();
    let mut starting_after = None;
    loop {
        let page = stripe
            .payment_methods()
            .list(&ListPaymentMethods {
                customer: Some(customer_id.to_owned()),
                type_: Some("card".into()),
                limit: Some(PAGE),
                starting_after: starting_after.take(),
            })
            .await?;
        starting_after = page.data.last().map(|pm| pm.id.clone());
        cards.extend(page.data);
        if !page.has_more || starting_after.is_none() {
            return Ok(cards);
        }
    }
}

/// Writes a customer and its cards; returns (customer was new, cards, new cards).
async fn record(
    conn: &mut kassa_store::PgConnection,
    customer: &Customer,
    cards: &[PaymentMethod],
    observed_at: OffsetDateTime,
) -> Result<(bool, i64, i64), Error> {
    // Read without the customer's lock (a `customer.*` re-fetch or a fulfilment may hold it):
    // observed at `observed_at`, read from the database's clock before the Stripe reads.
    let new_customer =
        customers::upsert_customer_read_without_lock(conn, &customer_record(customer), observed_at)
            .await?;
    let mut new_cards = 0;
    for card in cards {
        let record = payment_method_record(card, Some(&customer.id));
        if customers::upsert_payment_method_read_at(conn, &record, observed_at).await? {
            new_cards += 1;
        }
    }
    Ok((new_customer, cards.len() as i64, new_cards))
}

/// Fetches customer `id` and its saved cards from Stripe and records them.
pub async fn import_customer(stripe: &Client, store: &Store, id: &str) -> Result<Imported, Error> {
    // Read before the Stripe reads, in a statement of its own: the customer and its cards are
    // recorded as observed then (`kassa_store::customers::upsert_customer_read_without_lock`,
    // `upsert_payment_method_read_at`), and no connection is held across a Stripe call.
    let observed_at = store.observation_time().await?;
    let customer = match stripe.customers().retrieve(id, &[]).await {
        Ok(customer) => customer,
        Err(error) if error.is_resource_missing() => return Ok(Imported::Missing),
        Err(error) => return Err(error.into()),
    };
    let cards = if customer.deleted {
        Vec::new()
    } else {
        match cards_of(stripe, id).await {
            Ok(cards) => cards,
            // Deleted between the two reads.
            Err(Error::Stripe(error)) if error.is_resource_missing() => {
                return Ok(Imported::Missing)
            }
            Err(error) => return Err(error),
        }
    };
    let mut tx = store.begin().await?;
    record(&mut tx, &customer, &cards, observed_at).await?;
    tx.commit().await.map_err(kassa_store::StoreError::from)?;
    if customer.deleted {
        info!(customer = id, "customer looked up on Stripe: deleted");
        return Ok(Imported::Deleted);
    }
    info!(
        customer = id,
        cards = cards.len(),
        "customer looked up on Stripe and recorded"
    );
    Ok(Imported::Recorded { cards: cards.len() })
}

/// How to run a customer sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Start from the beginning even if an interrupted sync could be resumed.
    pub restart: bool,
    /// Card lists requested at once (the client's pacing still applies).
    pub concurrency: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            restart: false,
            concurrency: 8,
        }
    }
}

/// What a customer sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The whole sync's counts, pages recorded before a resume included.
    pub counts: SyncCounts,
    /// Resumed an interrupted sync after this customer, with these counts done before.
    pub resumed: Option<(String, SyncCounts)>,
    /// Reached the end of Stripe's list (false: stopped by `shutdown`; run again to continue).
    pub finished: bool,
}

/// Reads the cards of a page of customers (`concurrency` at once) and records the page with the
/// sync's cursor moved past `last`, in one transaction begun after the reads, as observed at
/// `observed_at` (read before the page was listed); returns what the page recorded.
async fn record_page(
    stripe: &Client,
    store: &Store,
    observed_at: OffsetDateTime,
    page: Vec<Customer>,
    last: &str,
    concurrency: usize,
) -> Result<SyncCounts, Error> {
    let with_cards: Vec<(Customer, Option<Vec<PaymentMethod>>)> =
        stream::iter(page.into_iter().filter(|c| !c.deleted))
            .map(|customer| async move {
                match cards_of(stripe, &customer.id).await {
                    Ok(cards) => Ok((customer, Some(cards))),
                    // Deleted since the list was read: skipped.
                    Err(Error::Stripe(error)) if error.is_resource_missing() => {
                        Ok((customer, None))
                    }
                    Err(error) => Err(error),
                }
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
    let mut page_counts = SyncCounts::default();
    let mut tx = store.begin().await?;
    for (customer, cards) in &with_cards {
        let Some(cards) = cards else {
            page_counts.skipped += 1;
            continue;
        };
        let (new_customer, recorded_cards, new_cards) =
            record(&mut tx, customer, cards, observed_at).await?;
        page_counts.customers += 1;
        page_counts.new_customers += i64::from(new_customer);
        page_counts.cards += recorded_cards;
        page_counts.new_cards += new_cards;
    }
    advance_customer_sync(
        &mut tx,
        customers_sync_cursor(stripe.mode()),
        last,
        page_counts,
    )
    .await?;
    tx.commit().await.map_err(kassa_store::StoreError::from)?;
    Ok(page_counts)
}

/// Records every customer of the Stripe account with its saved cards, page by page, resuming an
/// interrupted sync unless `options.restart`. `progress` sees the counts after each page; the
/// sync stops after the page in hand when `shutdown` is cancelled.
pub async fn sync_customers(
    stripe: &Client,
    store: &Store,
    options: &SyncOptions,
    progress: impl Fn(&SyncCounts),
    shutdown: &CancellationToken,
) -> Result<SyncReport, Error> {
    let cursor_name = customers_sync_cursor(stripe.mode());
    let cursor = store.customer_sync(cursor_name).await?;
    let (mut starting_after, mut counts, resumed) = match cursor {
        Some(cursor) if cursor.finished_at.is_none() && !options.restart => {
            match cursor.starting_after {
                Some(after) => {
                    info!(after = %after, customers = cursor.counts.customers, "resuming an interrupted customer sync");
                    (
                        Some(after.clone()),
                        cursor.counts,
                        Some((after, cursor.counts)),
                    )
                }
                None => (None, SyncCounts::default(), None),
            }
        }
        _ => (None, SyncCounts::default(), None),
    };
    if starting_after.is_none() {
        store.restart_customer_sync(cursor_name).await?;
    }
    progress(&counts);
    loop {
        if shutdown.is_cancelled() {
            return Ok(SyncReport {
                counts,
                resumed,
                finished: false,
            });
        }
        // Read before the page is listed: its customers and their cards are recorded as observed
        // then (`kassa_store::customers::upsert_customer_read_without_lock`,
        // `upsert_payment_method_read_at`), and no connection is held across a Stripe call.
        let observed_at = store.observation_time().await?;
        let listed = stripe
            .customers()
            .list(&ListCustomers {
                limit: Some(PAGE),
                starting_after: starting_after.clone(),
                ..Default::default()
            })
            .await;
        let page = match listed {
            Ok(page) => page,
            // The cursor's customer is gone for good: start over (every write is an upsert, so
            // recording a customer twice changes nothing).
            Err(error) if error.is_resource_missing() && starting_after.is_some() => {
                warn!(%error, "the sync's cursor no longer exists at Stripe; starting over");
                store.restart_customer_sync(cursor_name).await?;
                starting_after = None;
                counts = SyncCounts::default();
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let Some(last) = page.data.last().map(|c| c.id.clone()) else {
            break;
        };
        let has_more = page.has_more;
        let page_counts = record_page(
            stripe,
            store,
            observed_at,
            page.data,
            &last,
            options.concurrency,
        )
        .await?;
        counts += page_counts;
        progress(&counts);
        starting_after = Some(last);
        if !has_more {
            break;
        }
    }
    store.finish_customer_sync(cursor_name).await?;
    info!(
        customers = counts.customers,
        cards = counts.cards,
        skipped = counts.skipped,
        "customer sync finished"
    );
    Ok(SyncReport {
        counts,
        resumed,
        finished: true,
    })
}
