//! The installation id: generated once by the migrations (`installation`, one row) and never
//! changed. It tells this installation's Stripe objects and Idempotency-Keys from those of any
//! other installation sharing the Stripe account. [`Store::connect`] reads it once, so
//! [`Store::installation_id`] costs nothing.

use sqlx::PgExecutor;

use crate::{Store, StoreError};

/// Reads the installation id from the database (one row, written by the migrations).
pub async fn read_installation_id<'e>(executor: impl PgExecutor<'e>) -> Result<String, StoreError> {
    let id = sqlx::query_scalar!("SELECT id FROM installation WHERE singleton")
        .fetch_optional(executor)
        .await?;
    id.ok_or(StoreError::Permanent(sqlx::Error::RowNotFound))
}

impl Store {
    /// This installation's id (16 hex digits), as read at [`Store::connect`].
    pub fn installation_id(&self) -> &str {
        &self.installation
    }
}
