//! Save-card links (`save_card_links`) and the installation's key that signs their tokens
//! (`link_signing_keys`).
//!
//! The key is made once: [`Store::link_signing_key`] stores the caller's fresh candidate unless
//! a key exists, and answers the stored one, so every process of an installation signs alike.

use sqlx::{PgConnection, PgExecutor};

use crate::{OffsetDateTime, Store, StoreError};

/// A link to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSaveCardLink {
    /// `scl_…`.
    pub id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// Live or test mode.
    pub livemode: bool,
    /// The charge of a re-pay link.
    pub charge_id: Option<i64>,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// A stored link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveCardLinkRecord {
    /// `scl_…`.
    pub id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// Live or test mode.
    pub livemode: bool,
    /// The charge of a re-pay link.
    pub charge_id: Option<i64>,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Checkout Sessions made from it.
    pub opened: i32,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Stores `link` (in the caller's transaction when the caller is one).
pub async fn insert_save_card_link<'e>(
    executor: impl PgExecutor<'e>,
    link: &NewSaveCardLink,
) -> Result<SaveCardLinkRecord, StoreError> {
    Ok(sqlx::query_as!(
        SaveCardLinkRecord,
        "INSERT INTO save_card_links (id, customer_id, livemode, charge_id, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, customer_id, livemode, charge_id, expires_at, revoked_at, opened, created_at",
        link.id,
        link.customer_id,
        link.livemode,
        link.charge_id,
        link.expires_at,
    )
    .fetch_one(executor)
    .await?)
}

/// The installation's link key: `candidate` if none is stored yet, else the stored one.
pub async fn link_signing_key(
    conn: &mut PgConnection,
    candidate: &[u8],
) -> Result<Vec<u8>, StoreError> {
    sqlx::query!(
        "INSERT INTO link_signing_keys (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        candidate,
    )
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar!("SELECT secret FROM link_signing_keys WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?,
    )
}

impl Store {
    /// Stores `link`.
    pub async fn insert_save_card_link(
        &self,
        link: &NewSaveCardLink,
    ) -> Result<SaveCardLinkRecord, StoreError> {
        insert_save_card_link(self.pool(), link).await
    }

    /// The installation's link key: `candidate` if none is stored yet, else the stored one.
    pub async fn link_signing_key(&self, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        link_signing_key(&mut conn, candidate).await
    }

    /// The link `id`.
    pub async fn save_card_link(&self, id: &str) -> Result<Option<SaveCardLinkRecord>, StoreError> {
        Ok(sqlx::query_as!(
            SaveCardLinkRecord,
            "SELECT id, customer_id, livemode, charge_id, expires_at, revoked_at, opened, created_at
             FROM save_card_links WHERE id = $1",
            id,
        )
        .fetch_optional(self.pool())
        .await?)
    }

    /// Revokes the link `id`; false when there is no such link (revoking twice is fine).
    pub async fn revoke_save_card_link(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "UPDATE save_card_links SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
            id,
        )
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Counts one Checkout Session made from the link `id`.
pub async fn link_opened(conn: &mut PgConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE save_card_links SET opened = opened + 1, last_opened_at = now() WHERE id = $1",
        id,
    )
    .execute(conn)
    .await?;
    Ok(())
}
