//! What can go wrong while handling an event, split by what to do about it.

use kassa_store::StoreError;
use kassa_stripe::StripeError;

/// A failed handling attempt.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Stripe answered with an error (or did not answer).
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The event cannot be handled as it is: retrying changes nothing.
    #[error("{0}")]
    Permanent(String),
    /// Not done yet, for a reason of Kassa's own that time may cure (e.g. Stripe's answer to a
    /// charge was lost and Stripe does not show the PaymentIntent yet): try again later.
    #[error("{0}")]
    Retry(String),
}

impl HandlerError {
    /// Worth retrying later (Stripe 5xx/429/409/network, database unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Stripe(error) => error.is_transient(),
            HandlerError::Store(error) => error.is_transient(),
            HandlerError::Permanent(_) => false,
            HandlerError::Retry(_) => true,
        }
    }
}
