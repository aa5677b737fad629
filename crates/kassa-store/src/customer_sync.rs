//! The cursor of a customer backfill (`customer_sync`): how far through Stripe's customer list
//! it got and what it recorded so far. The backfill records each page of customers together
//! with [`advance_customer_sync`] in one transaction, so an interrupted backfill resumes exactly
//! after the last page it recorded.

use sqlx::PgConnection;

use crate::{OffsetDateTime, Store, StoreError};

/// What a backfill recorded so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Customers recorded.
    pub customers: i64,
    /// Of those, customers Kassa had no row for.
    pub new_customers: i64,
    /// Saved cards recorded.
    pub cards: i64,
    /// Of those, cards Kassa had no row for.
    pub new_cards: i64,
    /// Customers gone (deleted at Stripe) between the list and the reading of their cards.
    pub skipped: i64,
}

impl std::ops::AddAssign for SyncCounts {
    fn add_assign(&mut self, other: Self) {
        self.customers += other.customers;
        self.new_customers += other.new_customers;
        self.cards += other.cards;
        self.new_cards += other.new_cards;
        self.skipped += other.skipped;
    }
}

/// Where a backfill stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncCursor {
    /// The last customer id of the last recorded page; `None` before the first page.
    pub starting_after: Option<String>,
    /// What it recorded so far.
    pub counts: SyncCounts,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When it reached the end of the list; `None` while under way or interrupted.
    pub finished_at: Option<OffsetDateTime>,
}

/// Moves backfill `name` past a recorded page, in the transaction that recorded it: the cursor
/// becomes `starting_after` and `page` is added to the counts.
pub async fn advance_customer_sync(
    conn: &mut PgConnection,
    name: &str,
    starting_after: &str,
    page: SyncCounts,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE customer_sync SET starting_after = $2,
             customers = customers + $3, new_customers = new_customers + $4,
             cards = cards + $5, new_cards = new_cards + $6, skipped = skipped + $7,
             updated_at = now()
         WHERE name = $1",
        name,
        starting_after,
        page.customers,
        page.new_customers,
        page.cards,
        page.new_cards,
        page.skipped,
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The cursor of backfill `name`, if one ever started.
    pub async fn customer_sync(&self, name: &str) -> Result<Option<SyncCursor>, StoreError> {
        let row = sqlx::query!(
            "SELECT starting_after, customers, new_customers, cards, new_cards, skipped,
                    started_at, finished_at
             FROM customer_sync WHERE name = $1",
            name,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| SyncCursor {
            starting_after: row.starting_after,
            counts: SyncCounts {
                customers: row.customers,
                new_customers: row.new_customers,
                cards: row.cards,
                new_cards: row.new_cards,
                skipped: row.skipped,
            },
            started_at: row.started_at,
            finished_at: row.finished_at,
        }))
    }

    /// Starts backfill `name` from the beginning of the list, counts at zero.
    pub async fn restart_customer_sync(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO customer_sync (name) VALUES ($1)
             ON CONFLICT (name) DO UPDATE SET starting_after = NULL, customers = 0,
                 new_customers = 0, cards = 0, new_cards = 0, skipped = 0,
                 started_at = now(), updated_at = now(), finished_at = NULL",
            name,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks backfill `name` finished: it reached the end of Stripe's list.
    pub async fn finish_customer_sync(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE customer_sync SET finished_at = now(), updated_at = now() WHERE name = $1",
            name,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
