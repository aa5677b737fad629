//! The worker's customer import, offered to the back-office API and the charge commands
//! ([`kassa_ingress::admin::CustomerLookup`]): a customer Kassa has not recorded is fetched from
//! Stripe with its saved cards and recorded before a charge to it is judged.

use kassa_ingress::admin::{CustomerLookup, LookedUp, LookupError};
use kassa_ingress::checkout::BoxFuture;
use kassa_store::Store;
use kassa_stripe::Client;
use kassa_worker::customer_sync::{import_customer, Imported};

/// Looks customers up on Stripe with this client and records them in this store.
#[derive(Clone)]
pub struct StripeCustomers {
    stripe: Client,
    store: Store,
}

impl StripeCustomers {
    /// Lookups through `stripe`, recorded in `store`.
    pub fn new(stripe: Client, store: Store) -> Self {
        Self { stripe, store }
    }
}

impl CustomerLookup for StripeCustomers {
    fn look_up(&self, id: String) -> BoxFuture<Result<LookedUp, LookupError>> {
        let this = self.clone();
        Box::pin(async move {
            match import_customer(&this.stripe, &this.store, &id).await {
                Ok(Imported::Recorded { .. }) => Ok(LookedUp::Recorded),
                Ok(Imported::Deleted) => Ok(LookedUp::Deleted),
                Ok(Imported::Missing) => Ok(LookedUp::Missing),
                Err(error) => Err(LookupError {
                    transient: error.is_transient(),
                    message: error.to_string(),
                }),
            }
        })
    }
}
