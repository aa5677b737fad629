use super::{
    null_as_default, Charge, Customer, ErrorObject, Expandable, Metadata, PaymentMethod, Timestamp,
};
use serde::{Deserialize, Serialize};

/// A PaymentIntent (`pi_…`): one payment, through its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentIntent {
    /// `pi_…`.
    pub id: String,
    /// Amount in the currency's minor unit (JPY: yen, USD: cents).
    #[serde(default)]
    pub amount: i64,
    /// Amount received so far, minor unit.
    #[serde(default)]
    pub amount_received: i64,
    /// Lower-case ISO currency code.
    #[serde(default)]
    pub currency: String,
    /// Where the payment stands.
    #[serde(default)]
    pub status: PaymentIntentStatus,
    /// The paying customer.
    pub customer: Option<Expandable<Customer>>,
    /// The payment method used or to be used.
    pub payment_method: Option<Expandable<PaymentMethod>>,
    /// Why the last attempt failed (a decline leaves `requires_payment_method` and this).
    pub last_payment_error: Option<ErrorObject>,
    /// The latest charge made.
    pub latest_charge: Option<Expandable<Charge>>,
    /// For Stripe.js on the customer's page; not a server credential, but keep it out of logs.
    pub client_secret: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Where Stripe sends the receipt.
    pub receipt_email: Option<String>,
    /// Why it was cancelled.
    pub cancellation_reason: Option<String>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The `status` of a PaymentIntent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentIntentStatus {
    /// Needs a (new) payment method: also where a declined off-session charge lands.
    RequiresPaymentMethod,
    /// Needs confirming.
    RequiresConfirmation,
    /// Needs the customer (e.g. 3D Secure).
    RequiresAction,
    /// In progress (delayed payment methods).
    Processing,
    /// Authorised, to be captured.
    RequiresCapture,
    /// Cancelled.
    Canceled,
    /// Paid.
    Succeeded,
    /// A status this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}
