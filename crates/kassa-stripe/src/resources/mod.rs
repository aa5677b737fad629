//! One handle per Stripe resource (`client.customers()`, `client.payment_intents()`, …), with typed
//! params. Every POST takes the caller's [`IdempotencyKey`](crate::IdempotencyKey); every call can
//! expand fields, through `retrieve(id, expand)` or the handle's `.expand(&[…])`.

mod charges;
mod checkout_sessions;
mod customers;
mod events;
mod payment_intents;
mod payment_methods;
mod prices;
mod products;
mod refunds;
mod setup_intents;

pub use charges::{Charges, CreateCharge, ListCharges};
pub use checkout_sessions::{
    CheckoutLineItem, CheckoutSessions, CreateCheckoutSession, IntentData, ListCheckoutSessions,
    PriceData,
};
pub use customers::{CustomerParams, Customers, InvoiceSettingsParams, ListCustomers};
pub use events::{Events, ListEvents};
pub use payment_intents::{
    CreatePaymentIntent, ListPaymentIntents, PaymentIntents, UpdatePaymentIntent,
};
pub use payment_methods::{ListPaymentMethods, PaymentMethods};
pub use prices::{CreatePrice, ListPrices, Prices, ProductData};
pub use products::{ListProducts, ProductParams, Products, SearchProducts};
pub use refunds::{CreateRefund, ListRefunds, Refunds};
pub use setup_intents::{CreateSetupIntent, SetupIntents};

use crate::objects::Timestamp;
use serde::Serialize;

/// Paging of a list: `limit` (1–100, Stripe's default 10) and a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListParams {
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
    /// The first id of the next page (paging backwards).
    pub ending_before: Option<String>,
}

/// A time range filter such as `created[gte]=…` (`None` bounds are not sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RangeQuery {
    /// Strictly after.
    pub gt: Option<Timestamp>,
    /// At or after.
    pub gte: Option<Timestamp>,
    /// Strictly before.
    pub lt: Option<Timestamp>,
    /// At or before.
    pub lte: Option<Timestamp>,
}

/// The handle's expansions followed by the call's own.
fn merged<'a>(handle: &[&'a str], call: &[&'a str]) -> Vec<&'a str> {
    handle.iter().chain(call).copied().collect()
}

/// Defines a resource handle: the struct, its `Client` accessor and `.expand(…)`.
macro_rules! resource_handle {
    ($name:ident, $accessor:ident, $what:literal) => {
        #[doc = concat!("Calls on ", $what, "; get one with [`Client::", stringify!($accessor), "`](crate::Client::", stringify!($accessor), ").")]
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a> {
            client: &'a crate::Client,
            expand: &'a [&'a str],
        }

        impl crate::Client {
            #[doc = concat!("Calls on ", $what, ".")]
            pub fn $accessor(&self) -> $name<'_> {
                $name {
                    client: self,
                    expand: &[],
                }
            }
        }

        impl<'a> $name<'a> {
            /// Expands these fields (e.g. `["customer"]`, `["data.customer"]` for lists) on every
            /// call made through this handle.
            pub fn expand(self, expand: &'a [&'a str]) -> Self {
                Self { expand, ..self }
            }
        }
    };
}
pub(crate) use resource_handle;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::Form;

    #[test]
    fn ranges_and_paging_encode_as_stripe_documents() {
        #[derive(Serialize)]
        struct Q {
            created: RangeQuery,
            #[serde(flatten)]
            page: ListParams,
        }
        let form = Form::from_params(&Q {
            created: RangeQuery {
                gte: Some(1_700_000_000),
                ..Default::default()
            },
            page: ListParams {
                limit: Some(100),
                starting_after: Some("evt_9".into()),
                ending_before: None,
            },
        })
        .unwrap();
        let encoded = form.encode();
        let mut fields: Vec<&str> = encoded.split('&').collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "created%5Bgte%5D=1700000000",
                "limit=100",
                "starting_after=evt_9"
            ]
        );
    }

    #[test]
    fn merged_expansions_keep_order() {
        assert_eq!(merged(&["a"], &["b", "c"]), ["a", "b", "c"]);
    }
}
