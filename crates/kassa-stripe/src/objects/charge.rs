use super::{null_as_default, Customer, Expandable, Metadata, PaymentIntent, Shipping, Timestamp};
use serde::{Deserialize, Serialize};

/// A Charge (`ch_…`, or `py_…`): one attempt to move money (also the legacy Charges API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// `ch_…`.
    pub id: String,
    /// Amount in the currency's minor unit.
    #[serde(default)]
    pub amount: i64,
    /// Amount captured, minor unit.
    #[serde(default)]
    pub amount_captured: i64,
    /// Amount refunded, minor unit.
    #[serde(default)]
    pub amount_refunded: i64,
    /// Lower-case ISO currency code.
    #[serde(default)]
    pub currency: String,
    /// `succeeded`, `pending` or `failed`.
    #[serde(default)]
    pub status: ChargeStatus,
    /// Whether it succeeded or was authorised.
    #[serde(default)]
    pub paid: bool,
    /// Whether it was captured.
    #[serde(default)]
    pub captured: bool,
    /// Whether it was fully refunded.
    #[serde(default)]
    pub refunded: bool,
    /// The customer charged.
    pub customer: Option<Expandable<Customer>>,
    /// The PaymentIntent it belongs to.
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// The payment method's id (not expandable).
    pub payment_method: Option<String>,
    /// Failure code, e.g. `card_declined`.
    pub failure_code: Option<String>,
    /// Failure message.
    pub failure_message: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Where Stripe sends the receipt.
    pub receipt_email: Option<String>,
    /// Shipping details, if given.
    #[serde(default)]
    pub shipping: Option<Shipping>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The `status` of a Charge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Paid.
    Succeeded,
    /// Not settled yet.
    Pending,
    /// Failed.
    Failed,
    /// A status this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}
