//! Idempotency keys: always given by the caller, derived from the job, never invented here.

use std::fmt;

/// Stripe accepts idempotency keys of up to 255 characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// An `Idempotency-Key` for a Stripe POST, e.g. `kassa:evt_1:create_customer`.
///
/// The same key is sent on every retry of one call, so a request that reached Stripe before a
/// network failure is replayed instead of executed twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a string cannot be an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// The key is empty.
    #[error("an idempotency key cannot be empty")]
    Empty,
    /// Longer than Stripe's limit.
    #[error(
        "an idempotency key has at most {MAX_IDEMPOTENCY_KEY_LEN} characters, this one has {0}"
    )]
    TooLong(usize),
    /// Whitespace, control or non-ASCII characters, which do not survive an HTTP header intact.
    #[error("an idempotency key may hold only visible ASCII characters")]
    InvalidCharacter,
}

impl IdempotencyKey {
    /// Validates the key: 1 to 255 visible ASCII characters.
    pub fn new(key: impl Into<String>) -> Result<Self, IdempotencyKeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::InvalidCharacter);
        }
        // All ASCII from here on, so bytes and characters count the same.
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(IdempotencyKeyError::TooLong(key.len()));
        }
        Ok(IdempotencyKey(key))
    }

    /// The key as sent in the header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_job_derived_keys_up_to_255_characters() {
        let key = IdempotencyKey::new("kassa:evt_1:create_customer").unwrap();
        assert_eq!(key.as_str(), "kassa:evt_1:create_customer");
        assert_eq!(key.to_string(), "kassa:evt_1:create_customer");
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_unprintable_keys() {
        assert_eq!(IdempotencyKey::new(""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::new("k".repeat(256)),
            Err(IdempotencyKeyError::TooLong(256))
        );
        for bad in ["a b", "a\nb", "a\0", "kässa"] {
            assert_eq!(
                IdempotencyKey::new(bad),
                Err(IdempotencyKeyError::InvalidCharacter),
                "{bad:?}"
            );
        }
    }
}
