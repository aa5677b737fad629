use super::{null_as_default, Charge, Expandable, Metadata, PaymentIntent, Timestamp};
use serde::{Deserialize, Serialize};

/// A Refund (`re_…`) of a charge or PaymentIntent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    /// `re_…`.
    pub id: String,
    /// Amount refunded, minor unit.
    #[serde(default)]
    pub amount: i64,
    /// Lower-case ISO currency code.
    #[serde(default)]
    pub currency: String,
    /// The refunded charge.
    pub charge: Option<Expandable<Charge>>,
    /// The refunded PaymentIntent.
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// Where the refund stands.
    pub status: Option<RefundStatus>,
    /// `duplicate`, `fraudulent`, `requested_by_customer`, …
    pub reason: Option<String>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The `status` of a Refund.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Not settled yet.
    Pending,
    /// Needs an action (some payment methods).
    RequiresAction,
    /// Refunded.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Canceled,
    /// A status this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}
