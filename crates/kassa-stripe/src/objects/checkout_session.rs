use super::{
    null_as_default, Customer, Expandable, List, Metadata, PaymentIntent, Price, SetupIntent,
    Timestamp,
};
use serde::{Deserialize, Serialize};

/// A Checkout Session (`cs_…`): a hosted page where a customer pays or saves a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutSession {
    /// `cs_test_…` / `cs_live_…`.
    pub id: String,
    /// `payment`, `setup` or `subscription`.
    #[serde(default)]
    pub mode: CheckoutMode,
    /// `open`, then `complete` or `expired`.
    pub status: Option<CheckoutSessionStatus>,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: Option<CheckoutPaymentStatus>,
    /// The page to send the customer to, while the session is open.
    pub url: Option<String>,
    /// When the session expires (30 minutes to 24 hours after creation).
    #[serde(default)]
    pub expires_at: Timestamp,
    /// The customer, given at creation or created by Checkout.
    pub customer: Option<Expandable<Customer>>,
    /// What the customer entered (e-mail, name) once the session is complete.
    pub customer_details: Option<CustomerDetails>,
    /// The e-mail given at creation.
    pub customer_email: Option<String>,
    /// The SetupIntent of a `setup` session (expand it to get its payment method).
    pub setup_intent: Option<Expandable<SetupIntent>>,
    /// The PaymentIntent of a `payment` session.
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// Lower-case ISO currency code.
    pub currency: Option<String>,
    /// Total in the currency's minor unit.
    pub amount_total: Option<i64>,
    /// Your reference.
    pub client_reference_id: Option<String>,
    /// Where the customer goes after success.
    pub success_url: Option<String>,
    /// Where the customer goes on cancel.
    pub cancel_url: Option<String>,
    /// The items bought; only present when expanded (`expand[]=line_items`).
    pub line_items: Option<List<LineItem>>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The `mode` of a Checkout Session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutMode {
    /// One-time payment.
    Payment,
    /// Save a card for later.
    Setup,
    /// Start a subscription.
    Subscription,
    /// A mode this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}

/// The `status` of a Checkout Session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutSessionStatus {
    /// Waiting for the customer.
    Open,
    /// The customer completed it.
    Complete,
    /// Expired unused.
    Expired,
    /// A status this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}

/// The `payment_status` of a Checkout Session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutPaymentStatus {
    /// Paid.
    Paid,
    /// Not paid (yet).
    Unpaid,
    /// Nothing to pay (setup mode).
    NoPaymentRequired,
    /// A status this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}

/// `customer_details` of a Checkout Session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerDetails {
    /// E-mail entered.
    pub email: Option<String>,
    /// Name entered.
    pub name: Option<String>,
    /// Phone entered.
    pub phone: Option<String>,
}

/// A line item of a Checkout Session (object `item`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    /// `li_…`.
    pub id: String,
    /// Usually the product name.
    pub description: Option<String>,
    /// How many.
    pub quantity: Option<u64>,
    /// Total, minor unit.
    #[serde(default)]
    pub amount_total: i64,
    /// Subtotal before discounts and taxes, minor unit.
    #[serde(default)]
    pub amount_subtotal: i64,
    /// Lower-case ISO currency code.
    #[serde(default)]
    pub currency: String,
    /// The price used.
    pub price: Option<Price>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}
