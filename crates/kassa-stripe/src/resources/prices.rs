use super::{merged, resource_handle};
use crate::client::path;
use crate::objects::{List, Metadata, Price};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(Prices, prices, "prices (`/v1/prices`)");

/// Params to create a one-time price.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreatePrice {
    /// Lower-case ISO currency code.
    pub currency: String,
    /// Amount in the currency's minor unit.
    pub unit_amount: Option<i64>,
    /// The product priced (`prod_…`).
    pub product: Option<String>,
    /// Or a product made with the price.
    pub product_data: Option<ProductData>,
    /// Internal name.
    pub nickname: Option<String>,
    /// Your lookup key.
    pub lookup_key: Option<String>,
    /// Key-value pairs.
    pub metadata: Option<Metadata>,
}

/// `product_data`: a product made inline with a price or a line item.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProductData {
    /// The name shown to customers.
    pub name: String,
    /// Shown to customers (line items only).
    pub description: Option<String>,
    /// Key-value pairs on the product.
    pub metadata: Option<Metadata>,
}

/// Filters for listing prices.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListPrices {
    /// Only prices of this product.
    pub product: Option<String>,
    /// Only active or inactive prices.
    pub active: Option<bool>,
    /// Only prices in this currency.
    pub currency: Option<String>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

impl Prices<'_> {
    /// `POST /v1/prices`.
    pub async fn create(
        &self,
        params: &CreatePrice,
        key: &IdempotencyKey,
    ) -> Result<Price, StripeError> {
        self.client
            .post("/v1/prices", params, key, self.expand)
            .await
    }

    /// `GET /v1/prices/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<Price, StripeError> {
        let path = path(&["v1", "prices", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `GET /v1/prices`.
    pub async fn list(&self, params: &ListPrices) -> Result<List<Price>, StripeError> {
        self.client.get("/v1/prices", params, self.expand).await
    }
}
