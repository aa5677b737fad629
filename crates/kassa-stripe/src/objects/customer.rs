use super::{null_as_default, Address, Expandable, Metadata, PaymentMethod, Timestamp};
use serde::{Deserialize, Serialize};

/// A Stripe Customer (`cus_…`); a deleted one has `deleted: true` and little else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// `cus_…`.
    pub id: String,
    /// The customer's e-mail address.
    pub email: Option<String>,
    /// Full name or business name.
    pub name: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Postal address.
    #[serde(default)]
    pub address: Option<Address>,
    /// Free text, not shown to the customer.
    pub description: Option<String>,
    /// Defaults for invoices and off-session charges.
    #[serde(default, deserialize_with = "null_as_default")]
    pub invoice_settings: CustomerInvoiceSettings,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
    /// True on a deleted customer (`{"id", "object", "deleted": true}`).
    #[serde(default)]
    pub deleted: bool,
}

/// `invoice_settings` of a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerInvoiceSettings {
    /// The card charged by default (`pm_…`), expandable.
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
}
