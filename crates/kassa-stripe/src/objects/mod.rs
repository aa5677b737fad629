//! Typed Stripe objects, as much of each as Kassa reads.
//!
//! Unknown fields are ignored and unknown enum values become `Unknown`, so a new Stripe field or
//! status never breaks deserialisation. Fields that may be expanded are [`Expandable`].

mod address;
mod charge;
mod checkout_session;
mod customer;
mod error_object;
mod event;
mod payment_intent;
mod payment_method;
mod price;
mod product;
mod refund;
mod setup_intent;

pub use address::{Address, Shipping};
pub use charge::{Charge, ChargeStatus};
pub use checkout_session::{
    CheckoutMode, CheckoutPaymentStatus, CheckoutSession, CheckoutSessionStatus, CustomerDetails,
    LineItem,
};
pub use customer::{Customer, CustomerInvoiceSettings};
pub use error_object::{ErrorObject, ErrorType};
pub use event::{Event, EventData, EventRequest};
pub use payment_intent::{PaymentIntent, PaymentIntentStatus};
pub use payment_method::{BillingDetails, Card, PaymentMethod};
pub use price::{Price, PriceType, Recurring};
pub use product::Product;
pub use refund::{Refund, RefundStatus};
pub use setup_intent::{SetupIntent, SetupIntentStatus};

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Stripe metadata: string keys to string values (ordered, so encodings are deterministic).
pub type Metadata = BTreeMap<String, String>;

/// Seconds since the Unix epoch, as Stripe sends times.
pub type Timestamp = i64;

/// An object with a Stripe id (`cus_…`, `pm_…`, …).
pub trait StripeObject {
    /// The object's id.
    fn id(&self) -> &str;
}

/// A field Stripe sends as an id unless the request asked to `expand` it into the object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    /// Not expanded: the id only.
    Id(String),
    /// Expanded: the whole object.
    Object(Box<T>),
}

impl<T: StripeObject> Expandable<T> {
    /// The id, whether or not the field was expanded.
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) => id,
            Expandable::Object(object) => object.id(),
        }
    }

    /// The object, if the field was expanded.
    pub fn as_object(&self) -> Option<&T> {
        match self {
            Expandable::Id(_) => None,
            Expandable::Object(object) => Some(object),
        }
    }

    /// The object, if the field was expanded, by value.
    pub fn into_object(self) -> Option<T> {
        match self {
            Expandable::Id(_) => None,
            Expandable::Object(object) => Some(*object),
        }
    }
}

/// One page of a list (`GET /v1/customers`, `/v1/events`, …); page on with `starting_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    /// The objects on this page, newest first for most lists.
    pub data: Vec<T>,
    /// Whether more objects follow this page.
    pub has_more: bool,
    /// The list's URL path, e.g. `/v1/customers`.
    #[serde(default)]
    pub url: String,
}

impl<T: StripeObject> List<T> {
    /// The id to pass as `starting_after` for the next page, if there is one.
    pub fn next_starting_after(&self) -> Option<&str> {
        if self.has_more {
            self.data.last().map(StripeObject::id)
        } else {
            None
        }
    }
}

/// One page of a search (`GET /v1/products/search`); page on with `page = next_page`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult<T> {
    /// The matching objects on this page.
    pub data: Vec<T>,
    /// Whether more results follow.
    pub has_more: bool,
    /// The cursor for the next page.
    #[serde(default)]
    pub next_page: Option<String>,
    /// The search's URL path.
    #[serde(default)]
    pub url: String,
}

/// Reads `null` as the type's default (Stripe sends `"metadata": null` on some objects).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

macro_rules! impl_stripe_object {
    ($($ty:ty),* $(,)?) => {
        $(impl StripeObject for $ty {
            fn id(&self) -> &str {
                &self.id
            }
        })*
    };
}

impl_stripe_object!(
    Charge,
    CheckoutSession,
    Customer,
    Event,
    LineItem,
    PaymentIntent,
    PaymentMethod,
    Price,
    Product,
    Refund,
    SetupIntent,
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expandable_reads_an_id_or_an_object() {
        let id: Expandable<Customer> = serde_json::from_value(json!("cus_1")).unwrap();
        assert_eq!(id.id(), "cus_1");
        assert!(id.as_object().is_none());

        let object: Expandable<Customer> =
            serde_json::from_value(json!({"id": "cus_2", "object": "customer", "email": "a@b.c"}))
                .unwrap();
        assert_eq!(object.id(), "cus_2");
        assert_eq!(object.as_object().unwrap().email.as_deref(), Some("a@b.c"));
        assert_eq!(object.into_object().unwrap().id, "cus_2");
    }

    #[test]
    fn list_pages_on_from_the_last_id() {
        let page: List<Customer> = serde_json::from_value(json!({
            "object": "list", "url": "/v1/customers", "has_more": true,
            "data": [{"id": "cus_1"}, {"id": "cus_2"}]
        }))
        .unwrap();
        assert_eq!(page.next_starting_after(), Some("cus_2"));
        let last = List::<Customer> {
            has_more: false,
            ..page
        };
        assert_eq!(last.next_starting_after(), None);
    }
}
