use super::{null_as_default, Expandable, Metadata, Price, Timestamp};
use serde::{Deserialize, Serialize};

/// A Product (`prod_…`); Kassa finds its own by `metadata.product_code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// `prod_…`.
    pub id: String,
    /// The name shown to customers.
    #[serde(default)]
    pub name: String,
    /// Whether it can be bought.
    #[serde(default)]
    pub active: bool,
    /// Shown to customers.
    pub description: Option<String>,
    /// Its default price.
    pub default_price: Option<Expandable<Price>>,
    /// Your key-value pairs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Live mode or test mode object.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
    /// Last update time.
    pub updated: Option<Timestamp>,
}
