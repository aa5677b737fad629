//! What can go wrong while Kassa does its work, split by what to do about it: try again later
//! ([`Error::is_transient`]) or not.

use kassa_store::StoreError;
use kassa_stripe::StripeError;

/// A failed step of Kassa's work (fulfilling, charging, recording).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Stripe answered with an error (or did not answer).
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The work cannot be done as it is: retrying changes nothing.
    #[error("{0}")]
    Permanent(String),
    /// Not done yet, for a reason of Kassa's own that time may cure (e.g. Stripe's answer to a
    /// charge was lost and Stripe does not show the PaymentIntent yet): try again later.
    #[error("{0}")]
    Retry(String),
}

impl Error {
    /// Worth retrying later (Stripe 5xx/429/409/network, database unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Stripe(error) => error.is_transient(),
            Error::Store(error) => error.is_transient(),
            Error::Permanent(_) => false,
            Error::Retry(_) => true,
        }
    }

    /// The object asked for does not exist at Stripe.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Stripe(e) if e.is_resource_missing())
    }
}
