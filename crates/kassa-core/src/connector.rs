//! The connector's small Stripe operations for back-office tools and automation platforms —
//! create a customer, create a product, a charge with the **legacy Charges API** — checked here
//! once, so the API (`/api/customers`, `/api/products`, `/api/legacy-charges`) and the command
//! line (`kassa customers create`, `kassa products create`, `kassa legacy-charge`) refuse the
//! same input with the same words, before anything is sent to Stripe.
//!
//! Every request refuses a field it does not know, by name (a misspelt `adress` is an error, not
//! a customer without an address).
//!
//! Stripe keeps the Charges API (`POST /v1/charges`) for existing integrations but recommends
//! PaymentIntents for new ones (they handle authentication such as 3-D Secure); Kassa's own
//! payments use PaymentIntents.

use crate::checkout::PRODUCT_CODE_METADATA;
use crate::fields::{self, field_error, FieldError};
use kassa_stripe::objects::{Address, Shipping};
use kassa_stripe::resources::{CreateCharge, CustomerParams, ProductParams};
use serde::Deserialize;
use serde_json::Value;

/// A customer to create.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    /// E-mail address.
    pub email: Option<Value>,
    /// Full name.
    pub name: Option<Value>,
    /// Phone number, as the customer writes it.
    pub phone: Option<Value>,
    /// Free text, not shown to the customer.
    pub description: Option<Value>,
    /// Postal address: `line1`, `line2`, `city`, `state`, `postal_code`, `country`.
    pub address: Option<Value>,
    /// Key-value pairs.
    pub metadata: Option<Value>,
    /// The mode it is made in (`true`: live); absent, the deployment's default mode.
    #[serde(default)]
    pub livemode: Option<bool>,
}

const ADDRESS_FIELDS: [&str; 6] = ["line1", "line2", "city", "state", "postal_code", "country"];

/// A postal address object; `field` names it in errors (`address.country`). Empty is none.
pub fn address(value: &Option<Value>, field: &str) -> Result<Option<Address>, FieldError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(field_error(field, "must be an object")),
    };
    if let Some(unknown) = map.keys().find(|k| !ADDRESS_FIELDS.contains(&k.as_str())) {
        return Err(field_error(
            format!("{field}.{unknown}"),
            format!("unknown field (expected {})", ADDRESS_FIELDS.join(", ")),
        ));
    }
    let part =
        |name: &str| fields::optional_text(&map.get(name).cloned(), &format!("{field}.{name}"));
    let country = match part("country")? {
        Some(c) if c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(_) => {
            return Err(field_error(
                format!("{field}.country"),
                "a two-letter country code (ISO 3166-1 alpha-2), e.g. DE",
            ))
        }
        None => None,
    };
    let address = Address {
        line1: part("line1")?,
        line2: part("line2")?,
        city: part("city")?,
        state: part("state")?,
        postal_code: part("postal_code")?,
        country,
    };
    Ok(Some(address).filter(|a| *a != Address::default()))
}

/// `shipping` of a legacy charge: Stripe requires `name` and `address.line1` when shipping is
/// given, so their absence is refused here, naming the sub-field.
pub fn shipping(value: &Option<Value>) -> Result<Option<Shipping>, FieldError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(field_error("shipping", "must be an object")),
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["name", "phone", "address"].contains(&k.as_str()))
    {
        return Err(field_error(
            format!("shipping.{unknown}"),
            "unknown field (expected name, phone, address)",
        ));
    }
    let name = fields::optional_text(&map.get("name").cloned(), "shipping.name")?
        .ok_or_else(|| field_error("shipping.name", "required when shipping is given"))?;
    let address = address(&map.get("address").cloned(), "shipping.address")?
        .filter(|a| a.line1.is_some())
        .ok_or_else(|| field_error("shipping.address.line1", "required when shipping is given"))?;
    Ok(Some(Shipping {
        name: Some(name),
        phone: fields::optional_text(&map.get("phone").cloned(), "shipping.phone")?,
        address: Some(address),
    }))
}

/// The Stripe parameters of a customer request; the first problem names its field.
pub fn customer_params(request: &CustomerRequest) -> Result<CustomerParams, FieldError> {
    let email = fields::optional_text(&request.email, "email")?;
    if let Some(email) = &email {
        fields::email(email, "email")?;
    }
    Ok(CustomerParams {
        email,
        name: fields::optional_text(&request.name, "name")?,
        phone: fields::optional_text(&request.phone, "phone")?,
        description: fields::optional_text(&request.description, "description")?,
        address: address(&request.address, "address")?,
        metadata: Some(fields::metadata(&request.metadata)?).filter(|m| !m.is_empty()),
        ..Default::default()
    })
}

/// A product to create.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    /// Required.
    pub name: Option<Value>,
    /// Shown to customers.
    pub description: Option<Value>,
    /// Kept as `metadata.product_code` (what the checkout API upserts by).
    pub product_code: Option<Value>,
    /// Key-value pairs.
    pub metadata: Option<Value>,
    /// The mode it is made in (`true`: live); absent, the deployment's default mode.
    #[serde(default)]
    pub livemode: Option<bool>,
}

/// The Stripe parameters of a product request; the first problem names its field.
pub fn product_params(request: &ProductRequest) -> Result<ProductParams, FieldError> {
    let name = fields::optional_text(&request.name, "name")?
        .ok_or_else(|| field_error("name", "required"))?;
    let mut metadata = fields::metadata(&request.metadata)?;
    if let Some(code) = fields::optional_text(&request.product_code, "product_code")? {
        metadata.insert(PRODUCT_CODE_METADATA.into(), code);
    }
    Ok(ProductParams {
        name: Some(name),
        description: fields::optional_text(&request.description, "description")?,
        metadata: Some(metadata).filter(|m| !m.is_empty()),
        ..Default::default()
    })
}

/// A legacy charge: a token (`tok_visa`) or a customer's default source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyChargeRequest {
    /// Integer minor units.
    pub amount: Option<Value>,
    /// ISO code, any case.
    pub currency: Option<Value>,
    /// A token (`tok_visa`) or a card of `customer`.
    pub source: Option<Value>,
    /// `cus_…`: charged on their default source unless `source` is given.
    pub customer: Option<Value>,
    /// Shown in Stripe.
    pub description: Option<Value>,
    /// Key-value pairs.
    pub metadata: Option<Value>,
    /// Where the goods go: `name` and `address.line1` required, `phone` optional.
    pub shipping: Option<Value>,
    /// The mode it is made in (`true`: live); absent, the deployment's default mode.
    #[serde(default)]
    pub livemode: Option<bool>,
}

/// Checks a legacy charge request against Stripe's money rules; the first problem names its field.
pub fn validate_legacy_charge(request: &LegacyChargeRequest) -> Result<CreateCharge, FieldError> {
    let currency = fields::optional_text(&request.currency, "currency")?
        .ok_or_else(|| field_error("currency", "required"))?;
    let currency = fields::currency(&currency, "currency")?;
    let amount = fields::chargeable_amount(request.amount.as_ref(), &currency, "amount")?;
    let source = fields::optional_text(&request.source, "source")?;
    let customer = fields::optional_text(&request.customer, "customer")?;
    if source.is_none() && customer.is_none() {
        return Err(field_error(
            "source",
            "give a source (e.g. tok_visa) or a customer",
        ));
    }
    let metadata = fields::metadata(&request.metadata)?;
    Ok(CreateCharge {
        amount,
        currency: currency.code().to_owned(),
        customer,
        source,
        description: fields::optional_text(&request.description, "description")?,
        metadata: Some(metadata).filter(|m| !m.is_empty()),
        shipping: shipping(&request.shipping)?,
        ..Default::default()
    })
}
