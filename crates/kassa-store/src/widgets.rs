//! Payment widgets (`widgets`) and the PaymentIntent of each page load (`widget_intents`).
//!
//! A widget holds everything a payment form needs from the server — amount (or the products the
//! customer picks from), currency, description, mode, and what to e-mail — so the browser never
//! names an amount. [`Store::claim_page_intent`] keeps one PaymentIntent per page load: the first
//! request of a page token records its intent, later ones find it.

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::{OffsetDateTime, Store, StoreError};

/// One product a widget's customer may pick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidgetProduct {
    /// Shown to the customer.
    pub name: String,
    /// Minor units.
    pub amount: i64,
}

/// A widget to store (already checked by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWidget {
    /// `wid_…`.
    pub id: String,
    /// Live or test mode.
    pub livemode: bool,
    /// Shown to the customer and on the PaymentIntent.
    pub description: String,
    /// Lower-case ISO code.
    pub currency: String,
    /// A fixed amount in minor units, or `None` with [`NewWidget::products`].
    pub amount: Option<i64>,
    /// What the customer picks from (empty with a fixed amount).
    pub products: Vec<WidgetProduct>,
    /// Ask the customer for an e-mail address.
    pub collect_email: bool,
    /// E-mail the customer a receipt (needs their address).
    pub send_receipt: bool,
    /// E-mail the merchant (`KASSA_NOTIFY_EMAIL`) about each payment.
    pub notify_merchant: bool,
    /// Where the customer goes after paying.
    pub success_url: Option<String>,
}

/// A stored widget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WidgetRecord {
    /// `wid_…`.
    pub id: String,
    /// Live or test mode.
    pub livemode: bool,
    /// Shown to the customer and on the PaymentIntent.
    pub description: String,
    /// Lower-case ISO code.
    pub currency: String,
    /// A fixed amount in minor units.
    pub amount: Option<i64>,
    /// What the customer picks from.
    pub products: Vec<WidgetProduct>,
    /// Ask the customer for an e-mail address.
    pub collect_email: bool,
    /// E-mail the customer a receipt.
    pub send_receipt: bool,
    /// E-mail the merchant about each payment.
    pub notify_merchant: bool,
    /// Where the customer goes after paying.
    pub success_url: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

struct Row {
    id: String,
    livemode: bool,
    description: String,
    currency: String,
    amount: Option<i64>,
    products: serde_json::Value,
    collect_email: bool,
    send_receipt: bool,
    notify_merchant: bool,
    success_url: Option<String>,
    created_at: OffsetDateTime,
}

impl Row {
    fn record(self) -> Result<WidgetRecord, StoreError> {
        let products = serde_json::from_value(self.products).map_err(|e| {
            StoreError::Permanent(sqlx::Error::Decode(
                format!("widget {}: products: {e}", self.id).into(),
            ))
        })?;
        Ok(WidgetRecord {
            id: self.id,
            livemode: self.livemode,
            description: self.description,
            currency: self.currency,
            amount: self.amount,
            products,
            collect_email: self.collect_email,
            send_receipt: self.send_receipt,
            notify_merchant: self.notify_merchant,
            success_url: self.success_url,
            created_at: self.created_at,
        })
    }
}

/// Stores `widget`.
pub async fn insert_widget<'e>(
    executor: impl PgExecutor<'e>,
    widget: &NewWidget,
) -> Result<WidgetRecord, StoreError> {
    let products = serde_json::to_value(&widget.products).map_err(|e| {
        StoreError::Permanent(sqlx::Error::Encode(
            format!("widget {}: products: {e}", widget.id).into(),
        ))
    })?;
    sqlx::query_as!(
        Row,
        "INSERT INTO widgets (id, livemode, description, currency, amount, products, collect_email,
                              send_receipt, notify_merchant, success_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING id, livemode, description, currency, amount, products, collect_email,
                   send_receipt, notify_merchant, success_url, created_at",
        widget.id,
        widget.livemode,
        widget.description,
        widget.currency,
        widget.amount,
        products,
        widget.collect_email,
        widget.send_receipt,
        widget.notify_merchant,
        widget.success_url,
    )
    .fetch_one(executor)
    .await?
    .record()
}

/// The PaymentIntent of the page load `page_token` of `widget_id`, if it has one.
pub async fn page_intent<'e>(
    executor: impl PgExecutor<'e>,
    widget_id: &str,
    page_token: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT payment_intent_id FROM widget_intents WHERE widget_id = $1 AND page_token = $2",
        widget_id,
        page_token,
    )
    .fetch_optional(executor)
    .await?)
}

impl Store {
    /// Stores `widget`.
    pub async fn insert_widget(&self, widget: &NewWidget) -> Result<WidgetRecord, StoreError> {
        insert_widget(self.pool(), widget).await
    }

    /// The widget `id`.
    pub async fn widget(&self, id: &str) -> Result<Option<WidgetRecord>, StoreError> {
        sqlx::query_as!(
            Row,
            "SELECT id, livemode, description, currency, amount, products, collect_email,
                    send_receipt, notify_merchant, success_url, created_at
             FROM widgets WHERE id = $1",
            id,
        )
        .fetch_optional(self.pool())
        .await?
        .map(Row::record)
        .transpose()
    }

    /// Widgets, newest first, at most `limit`, only those of `livemode` when given.
    pub async fn widgets(
        &self,
        livemode: Option<bool>,
        limit: i64,
    ) -> Result<Vec<WidgetRecord>, StoreError> {
        sqlx::query_as!(
            Row,
            "SELECT id, livemode, description, currency, amount, products, collect_email,
                    send_receipt, notify_merchant, success_url, created_at
             FROM widgets WHERE ($2::boolean IS NULL OR livemode = $2)
             ORDER BY created_at DESC, id LIMIT $1",
            limit,
            livemode,
        )
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(Row::record)
        .collect()
    }

    /// The page load `page_token` of `widget_id` has the PaymentIntent `payment_intent_id`
    /// unless it has one already; returns the page load's PaymentIntent.
    pub async fn claim_page_intent(
        &self,
        widget_id: &str,
        page_token: &str,
        payment_intent_id: &str,
    ) -> Result<String, StoreError> {
        sqlx::query!(
            "INSERT INTO widget_intents (widget_id, page_token, payment_intent_id)
             VALUES ($1, $2, $3)
             ON CONFLICT (widget_id, page_token) DO NOTHING",
            widget_id,
            page_token,
            payment_intent_id,
        )
        .execute(self.pool())
        .await?;
        page_intent(self.pool(), widget_id, page_token)
            .await?
            .ok_or_else(|| {
                StoreError::Permanent(sqlx::Error::Protocol(format!(
                    "widget {widget_id}: the page load's PaymentIntent vanished"
                )))
            })
    }

    /// The PaymentIntent of the page load `page_token` of `widget_id`, if it has one.
    pub async fn page_intent(
        &self,
        widget_id: &str,
        page_token: &str,
    ) -> Result<Option<String>, StoreError> {
        page_intent(self.pool(), widget_id, page_token).await
    }
}
