use super::{merged, resource_handle, RangeQuery};
use crate::client::path;
use crate::objects::{Event, List};
use crate::StripeError;
use serde::Serialize;

resource_handle!(Events, events, "events (`/v1/events`, the last 30 days)");

/// Filters for listing events: the polling backstop for missed webhooks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListEvents {
    /// One type, e.g. `charge.succeeded` (`*` wildcards allowed, e.g. `charge.*`).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Up to 20 types.
    pub types: Option<Vec<String>>,
    /// Creation time range, e.g. `gte` the last poll.
    pub created: Option<RangeQuery>,
    /// Only events whose webhooks were (not) all delivered.
    pub delivery_success: Option<bool>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
    /// The first id of the next page (paging backwards).
    pub ending_before: Option<String>,
}

impl Events<'_> {
    /// `GET /v1/events/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<Event, StripeError> {
        let path = path(&["v1", "events", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `GET /v1/events`, newest first.
    pub async fn list(&self, params: &ListEvents) -> Result<List<Event>, StripeError> {
        self.client.get("/v1/events", params, self.expand).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::Form;

    #[test]
    fn list_events_encodes_type_types_and_created() {
        let form = Form::from_params(&ListEvents {
            type_: Some("charge.*".into()),
            types: Some(vec!["refund.created".into(), "charge.succeeded".into()]),
            created: Some(RangeQuery {
                gte: Some(1_700_000_000),
                ..Default::default()
            }),
            limit: Some(100),
            ..Default::default()
        })
        .unwrap();
        let mut pairs = form.pairs().to_vec();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("created[gte]".to_owned(), "1700000000".to_owned()),
                ("limit".to_owned(), "100".to_owned()),
                ("type".to_owned(), "charge.*".to_owned()),
                ("types[0]".to_owned(), "refund.created".to_owned()),
                ("types[1]".to_owned(), "charge.succeeded".to_owned()),
            ]
        );
    }
}
