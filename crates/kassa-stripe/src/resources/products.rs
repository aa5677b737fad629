use super::{merged, resource_handle};
use crate::client::path;
use crate::objects::{List, Metadata, Product, SearchResult};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(Products, products, "products (`/v1/products`)");

/// Fields to create (`name` required) or update a product.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProductParams {
    /// The name shown to customers.
    pub name: Option<String>,
    /// Shown to customers.
    pub description: Option<String>,
    /// Whether it can be bought.
    pub active: Option<bool>,
    /// Key-value pairs, e.g. `product_code`.
    pub metadata: Option<Metadata>,
}

/// Filters for listing products.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListProducts {
    /// Only active or inactive products.
    pub active: Option<bool>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

/// A product search, e.g. `query: "metadata['product_code']:'A1'"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchProducts {
    /// Stripe's search query language.
    pub query: String,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// `next_page` of the previous result.
    pub page: Option<String>,
}

impl Products<'_> {
    /// `POST /v1/products`.
    pub async fn create(
        &self,
        params: &ProductParams,
        key: &IdempotencyKey,
    ) -> Result<Product, StripeError> {
        self.client
            .post("/v1/products", params, key, self.expand)
            .await
    }

    /// `GET /v1/products/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<Product, StripeError> {
        let path = path(&["v1", "products", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `POST /v1/products/{id}`.
    pub async fn update(
        &self,
        id: &str,
        params: &ProductParams,
        key: &IdempotencyKey,
    ) -> Result<Product, StripeError> {
        let path = path(&["v1", "products", id])?;
        self.client.post(&path, params, key, self.expand).await
    }

    /// `GET /v1/products`.
    pub async fn list(&self, params: &ListProducts) -> Result<List<Product>, StripeError> {
        self.client.get("/v1/products", params, self.expand).await
    }

    /// `GET /v1/products/search`. Stripe's search index lags writes by up to about a minute, so
    /// a product created moments ago may not be found yet.
    pub async fn search(
        &self,
        params: &SearchProducts,
    ) -> Result<SearchResult<Product>, StripeError> {
        self.client
            .get("/v1/products/search", params, self.expand)
            .await
    }
}
