//! Sealed settings (`settings`): one row per setting name, holding only the ciphertext, its nonce
//! and when it was set. Sealing and opening are kassa-core's; this module stores bytes.
//! [`Store::begin_settings_rewrite`] locks every row for a master-key rotation, which replaces
//! them all in one transaction.

use crate::{OffsetDateTime, Store, StoreError};

/// A stored, sealed setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSetting {
    /// The setting's name (the `KASSA_*` variable it stands for).
    pub name: String,
    /// `test` or `live` when the value says its mode.
    pub mode: Option<String>,
    /// Ciphertext and authentication tag.
    pub sealed: Vec<u8>,
    /// The value's own nonce.
    pub nonce: Vec<u8>,
    /// When the value was last set (a rotation of the master key keeps it).
    pub set_at: OffsetDateTime,
}

/// What [`Store::put_sealed_setting`] writes.
#[derive(Clone, Copy, Debug)]
pub struct NewSealedSetting<'a> {
    /// The setting's name.
    pub name: &'a str,
    /// `test` or `live`, when known.
    pub mode: Option<&'a str>,
    /// Ciphertext and tag.
    pub sealed: &'a [u8],
    /// The nonce it was sealed with.
    pub nonce: &'a [u8],
}

impl Store {
    /// Every stored setting, by name.
    pub async fn sealed_settings(&self) -> Result<Vec<SealedSetting>, StoreError> {
        let rows = sqlx::query_as!(
            SealedSetting,
            "SELECT name, mode, sealed, nonce, set_at FROM settings ORDER BY name"
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Stores (or replaces) one setting, stamped now.
    pub async fn put_sealed_setting(
        &self,
        setting: NewSealedSetting<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO settings (name, mode, sealed, nonce, set_at) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (name) DO UPDATE
             SET mode = EXCLUDED.mode, sealed = EXCLUDED.sealed, nonce = EXCLUDED.nonce, set_at = now()",
            setting.name,
            setting.mode,
            setting.sealed,
            setting.nonce,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Begins a rewrite of every setting (a master-key rotation): the rows are read and locked
    /// in one transaction, replaced with [`SettingsRewrite::replace`], and all take effect at
    /// [`SettingsRewrite::commit`] or none.
    pub async fn begin_settings_rewrite(&self) -> Result<SettingsRewrite, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as!(
            SealedSetting,
            "SELECT name, mode, sealed, nonce, set_at FROM settings ORDER BY name FOR UPDATE"
        )
        .fetch_all(&mut *tx)
        .await?;
        Ok(SettingsRewrite { tx, rows })
    }
}

/// Every setting locked in one transaction; see [`Store::begin_settings_rewrite`].
pub struct SettingsRewrite {
    tx: crate::Transaction,
    rows: Vec<SealedSetting>,
}

impl SettingsRewrite {
    /// The settings as they were when the rewrite began.
    pub fn rows(&self) -> &[SealedSetting] {
        &self.rows
    }

    /// Replaces one setting's ciphertext and nonce, keeping its mode and `set_at`.
    pub async fn replace(
        &mut self,
        name: &str,
        sealed: &[u8],
        nonce: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE settings SET sealed = $2, nonce = $3 WHERE name = $1",
            name,
            sealed,
            nonce,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Makes every replacement take effect at once.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
