use serde::{Deserialize, Serialize};

/// A postal address, as Stripe writes it on customers and shipping details (and takes it as a
/// parameter: `None` fields are not sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street, PO box or company name.
    pub line1: Option<String>,
    /// Apartment, suite, unit or building.
    pub line2: Option<String>,
    /// City, district, suburb, town or village.
    pub city: Option<String>,
    /// State, county, province or region.
    pub state: Option<String>,
    /// ZIP or postal code.
    pub postal_code: Option<String>,
    /// Two-letter country code (ISO 3166-1 alpha-2).
    pub country: Option<String>,
}

/// Shipping details of a charge: Stripe requires `name` and `address.line1` when they are given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipping {
    /// Recipient name.
    pub name: Option<String>,
    /// Recipient phone.
    pub phone: Option<String>,
    /// Where it goes.
    pub address: Option<Address>,
}
