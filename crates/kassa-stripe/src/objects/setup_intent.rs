use super::{
    null_as_default, Customer, ErrorObject, Expandable, Metadata, PaymentMethod, Timestamp,
};
use serde::{Deserialize, Serialize};

/// A SetupIntent (`seti_…`): how a card is saved for later, off-session use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupIntent {
    /// `seti_…`.
    pub id: String,
    /// Where the setup stands.
    #[serde(default)]
    pub status: SetupIntentStatus,
    /// The customer the card is saved for.
    pub customer: Option<Expandable<Customer>>,
    /// The card being (or that was) set up.
    pub payment_method: Option<Expandable<PaymentMethod>>,
    /// `off_session` or `on_session`.
    pub usage: Option<String>,
    /// For Stripe.js on the customer's page; not a server credential, but keep it out of logs.
    pub client_secret: Option<String>,
    /// Why the last setup attempt failed.
    pub last_setup_error: Option<ErrorObject>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The `status` of a SetupIntent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupIntentStatus {
    /// Needs a (new) payment method.
    RequiresPaymentMethod,
    /// Needs confirming.
    RequiresConfirmation,
    /// Needs the customer (e.g. 3D Secure).
    RequiresAction,
    /// In progress.
    Processing,
    /// Cancelled.
    Canceled,
    /// The payment method is set up.
    Succeeded,
    /// A status this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}
