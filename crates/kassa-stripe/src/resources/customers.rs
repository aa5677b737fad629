use super::{merged, resource_handle};
use crate::client::path;
use crate::objects::{Address, Customer, List, Metadata};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(Customers, customers, "customers (`/v1/customers`)");

/// Fields to create or update a customer; `None` fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CustomerParams {
    /// E-mail address.
    pub email: Option<String>,
    /// Full name or business name.
    pub name: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Postal address.
    pub address: Option<Address>,
    /// Free text.
    pub description: Option<String>,
    /// A PaymentMethod to attach at creation.
    pub payment_method: Option<String>,
    /// Invoice and off-session defaults.
    pub invoice_settings: Option<InvoiceSettingsParams>,
    /// Key-value pairs to set (an empty value unsets a key).
    pub metadata: Option<Metadata>,
}

/// `invoice_settings` params of a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InvoiceSettingsParams {
    /// The PaymentMethod charged by default (`pm_…`).
    pub default_payment_method: Option<String>,
}

/// Filters for listing customers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListCustomers {
    /// Exact, case-sensitive e-mail.
    pub email: Option<String>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

impl Customers<'_> {
    /// `POST /v1/customers`.
    pub async fn create(
        &self,
        params: &CustomerParams,
        key: &IdempotencyKey,
    ) -> Result<Customer, StripeError> {
        self.client
            .post("/v1/customers", params, key, self.expand)
            .await
    }

    /// `GET /v1/customers/{id}`; a deleted customer comes back with `deleted: true`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<Customer, StripeError> {
        let path = path(&["v1", "customers", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `POST /v1/customers/{id}`.
    pub async fn update(
        &self,
        id: &str,
        params: &CustomerParams,
        key: &IdempotencyKey,
    ) -> Result<Customer, StripeError> {
        let path = path(&["v1", "customers", id])?;
        self.client.post(&path, params, key, self.expand).await
    }

    /// Makes `payment_method` the customer's default for invoices and off-session charges
    /// (`invoice_settings[default_payment_method]`).
    pub async fn set_default_payment_method(
        &self,
        id: &str,
        payment_method: &str,
        key: &IdempotencyKey,
    ) -> Result<Customer, StripeError> {
        let params = CustomerParams {
            invoice_settings: Some(InvoiceSettingsParams {
                default_payment_method: Some(payment_method.to_owned()),
            }),
            ..Default::default()
        };
        self.update(id, &params, key).await
    }

    /// `GET /v1/customers`, newest first.
    pub async fn list(&self, params: &ListCustomers) -> Result<List<Customer>, StripeError> {
        self.client.get("/v1/customers", params, self.expand).await
    }
}
