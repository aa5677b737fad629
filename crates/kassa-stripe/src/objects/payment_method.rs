use super::{null_as_default, Customer, Expandable, Metadata, Timestamp};
use serde::{Deserialize, Serialize};

/// A PaymentMethod (`pm_…`): a saved card, possibly attached to a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// `pm_…`.
    pub id: String,
    /// `card`, `sepa_debit`, … (kept as text: Stripe adds types often).
    #[serde(rename = "type", default)]
    pub type_: String,
    /// Card details when `type` is `card`.
    pub card: Option<Card>,
    /// The customer it is attached to, if any.
    pub customer: Option<Expandable<Customer>>,
    /// Billing name, e-mail, phone.
    pub billing_details: Option<BillingDetails>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The card of a card PaymentMethod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// `visa`, `mastercard`, `amex`, … or `unknown`.
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// Expiry month, 1–12.
    pub exp_month: u32,
    /// Four-digit expiry year.
    pub exp_year: u32,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    pub funding: Option<String>,
    /// Two-letter issuing country.
    pub country: Option<String>,
    /// Same card number, same fingerprint (per account).
    pub fingerprint: Option<String>,
}

/// Billing details of a PaymentMethod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BillingDetails {
    /// Billing e-mail.
    pub email: Option<String>,
    /// Cardholder name.
    pub name: Option<String>,
    /// Billing phone.
    pub phone: Option<String>,
}
