use super::{null_as_default, Expandable, Metadata, Product, Timestamp};
use serde::{Deserialize, Serialize};

/// A Price (`price_…`) of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// `price_…`.
    pub id: String,
    /// Whether it can be used for new purchases.
    #[serde(default)]
    pub active: bool,
    /// Lower-case ISO currency code.
    #[serde(default)]
    pub currency: String,
    /// Amount in the currency's minor unit (absent for decimal or custom amounts).
    pub unit_amount: Option<i64>,
    /// The amount as a decimal string, minor unit.
    pub unit_amount_decimal: Option<String>,
    /// The product priced.
    pub product: Option<Expandable<Product>>,
    /// `one_time` or `recurring`.
    #[serde(rename = "type", default)]
    pub type_: PriceType,
    /// Billing interval of a recurring price.
    pub recurring: Option<Recurring>,
    /// Your lookup key.
    pub lookup_key: Option<String>,
    /// Internal name.
    pub nickname: Option<String>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// The `type` of a Price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceType {
    /// Charged once.
    OneTime,
    /// Charged every interval.
    Recurring,
    /// A type this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}

/// `recurring` of a Price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recurring {
    /// `day`, `week`, `month` or `year`.
    pub interval: String,
    /// Number of intervals between charges.
    #[serde(default)]
    pub interval_count: u64,
}
