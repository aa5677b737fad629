use super::{merged, resource_handle};
use crate::client::path;
use crate::objects::{Metadata, SetupIntent};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(
    SetupIntents,
    setup_intents,
    "SetupIntents (`/v1/setup_intents`)"
);

/// Params to create a SetupIntent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateSetupIntent {
    /// The customer the card is saved for.
    pub customer: Option<String>,
    /// A PaymentMethod to set up.
    pub payment_method: Option<String>,
    /// `off_session` (default) or `on_session`.
    pub usage: Option<String>,
    /// e.g. `["card"]`.
    pub payment_method_types: Option<Vec<String>>,
    /// Confirm at once.
    pub confirm: Option<bool>,
    /// Key-value pairs.
    pub metadata: Option<Metadata>,
}

impl SetupIntents<'_> {
    /// `POST /v1/setup_intents`.
    pub async fn create(
        &self,
        params: &CreateSetupIntent,
        key: &IdempotencyKey,
    ) -> Result<SetupIntent, StripeError> {
        self.client
            .post("/v1/setup_intents", params, key, self.expand)
            .await
    }

    /// `GET /v1/setup_intents/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<SetupIntent, StripeError> {
        let path = path(&["v1", "setup_intents", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }
}
