//! Kassa's own Stripe writes whose answers its records hold (`stripe_own_writes`).
//!
//! Echo rule: an event whose `request.idempotency_key` is a key of this installation and whose
//! object is recorded here under that key is an echo of a write whose answer Kassa already
//! recorded; it needs no re-fetch. A row is written in the transaction that upserts the record
//! from the write's answer, so it exists exactly when that record (or a newer one) committed.
//! Every other event — from the Dashboard, another program, Stripe itself, or a write of Kassa's
//! whose record rolled back — is re-fetched as before.
//!
//! The writer holds [`lock_own_key`] on its key from before it sends the write until its
//! transaction ends, and the echo check takes the same lock first: an echo that arrives while the
//! write's transaction is still open waits for its commit (or rollback) instead of re-fetching.

use sqlx::PgConnection;

use crate::StoreError;

/// Holds `idempotency_key` until the caller's transaction ends: a writer takes it before it sends
/// the write, an echo check before it looks for the write's note.
pub async fn lock_own_key(
    conn: &mut PgConnection,
    idempotency_key: &str,
) -> Result<(), StoreError> {
    crate::events::lock_stripe_object(conn, idempotency_key).await
}

/// Notes, in the transaction that records the answer, that the write sent under
/// `idempotency_key` produced `object_id` and that the record now holds it.
pub async fn record_own_write(
    conn: &mut PgConnection,
    idempotency_key: &str,
    object_id: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO stripe_own_writes (idempotency_key, object_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        idempotency_key,
        object_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// [`record_own_write`] for several writes in one statement: `writes` are (key, object) pairs.
pub async fn record_own_writes(
    conn: &mut PgConnection,
    writes: &[(&str, &str)],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let (keys, objects): (Vec<String>, Vec<String>) = writes
        .iter()
        .map(|(key, object)| ((*key).to_owned(), (*object).to_owned()))
        .unzip();
    sqlx::query!(
        "INSERT INTO stripe_own_writes (idempotency_key, object_id)
         SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT DO NOTHING",
        &keys,
        &objects,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the answer of the write sent under `idempotency_key` about `object_id` is in Kassa's
/// records (see the [module documentation](self)). Take [`lock_own_key`] first.
pub async fn own_write_recorded(
    conn: &mut PgConnection,
    idempotency_key: &str,
    object_id: &str,
) -> Result<bool, StoreError> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM stripe_own_writes
                          WHERE idempotency_key = $1 AND object_id = $2) AS "found!""#,
        idempotency_key,
        object_id,
    )
    .fetch_one(conn)
    .await?;
    Ok(found)
}
