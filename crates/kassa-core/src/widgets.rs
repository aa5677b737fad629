//! Payment widgets: a payment form a merchant drops into any page (`widget.js`) or links to
//! (`/pay/{widget}`).
//!
//! - [`plan_widget`] checks a widget request field by field (the admin API and `kassa widgets
//!   create` share it); [`widget_json`] is how both show one.
//! - [`page_intent`] gives a page load its one PaymentIntent (created under a key derived from
//!   the widget and the page's token, recorded, and found again on a retry or a second card).
//! - [`set_details`] puts what the customer chose on that PaymentIntent before it is confirmed:
//!   the product (its amount is the widget's, never the browser's) and the receipt address.
//! - [`check_client_secret`] lets the holder of a PaymentIntent's `client_secret` — the browser
//!   that paid — ask for its confirmation without the admin token.

use crate::fields::{self, field_error, FieldError};
use crate::keys;
use kassa_store::payments::{RECEIPT_EMAIL_METADATA, SOURCE_METADATA, WIDGET_SOURCE};
use kassa_store::{NewWidget, Store, StoreError, WidgetProduct, WidgetRecord};
use kassa_stripe::money::{format_amount, validate_amount, Currency};
use kassa_stripe::objects::{Metadata, PaymentIntent, PaymentIntentStatus};
use kassa_stripe::resources::{CreatePaymentIntent, UpdatePaymentIntent};
use kassa_stripe::{Client, Mode, StripeError};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tracing::info;

/// Metadata key naming the widget a PaymentIntent was made for.
pub const WIDGET_METADATA: &str = "kassa_widget";
/// Metadata key that, set to `off`, keeps the merchant's notification e-mail of a payment from
/// being sent (a widget with `notify_merchant: false`).
pub const NOTIFY_METADATA: &str = "kassa_notify";

/// Most products one widget offers.
pub const MAX_PRODUCTS: usize = 20;

/// What can go wrong with a widget.
#[derive(Debug, thiserror::Error)]
pub enum WidgetError {
    /// A field of the request is refused; nothing was sent or stored.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such widget (or PaymentIntent of it).
    #[error("{0}")]
    NotFound(String),
    /// The widget is of the other mode than this server's Stripe key.
    #[error("{0}")]
    WrongMode(String),
    /// The client secret does not belong to the PaymentIntent.
    #[error("the client_secret does not match the PaymentIntent")]
    ClientSecret,
    /// The PaymentIntent cannot change any more (it succeeded or was canceled).
    #[error("{0}")]
    Settled(String),
    /// Stripe refused or did not answer.
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Kassa could not build an Idempotency-Key (a bug, not the caller's).
    #[error("idempotency key: {0}")]
    Key(String),
}

/// A widget as `POST /api/widgets` takes it (JSON). Unknown fields are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetRequest {
    /// A fixed amount in minor units (a JSON integer); or give `products`.
    pub amount: Option<Value>,
    /// ISO code, any case; default `usd`.
    pub currency: Option<String>,
    /// `[{name, amount}]`: what the customer picks from.
    pub products: Option<Vec<Value>>,
    /// Shown to the customer and on the PaymentIntent.
    pub description: Option<String>,
    /// `test` or `live`; default the server's mode.
    pub mode: Option<String>,
    /// The same as `mode`, as every other JSON body of the API names a mode (`true`: live);
    /// given with `mode`, both must agree.
    pub livemode: Option<bool>,
    /// Ask the customer for an e-mail address (default false).
    pub collect_email: Option<bool>,
    /// E-mail the customer a receipt when they gave an address (default true).
    pub send_receipt: Option<bool>,
    /// E-mail the merchant (`KASSA_NOTIFY_EMAIL`) about each payment (default true).
    pub notify_merchant: Option<bool>,
    /// Where the customer goes after paying (`http://` or `https://`).
    pub success_url: Option<String>,
}

/// Checks `request` and returns the widget to store, with a fresh `wid_…` id; `server_mode` is
/// the mode of this server's Stripe key (the default).
pub fn plan_widget(request: &WidgetRequest, server_mode: Mode) -> Result<NewWidget, FieldError> {
    let currency = fields::currency(request.currency.as_deref().unwrap_or("usd"), "currency")?;
    let description = request
        .description
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    if description.is_empty() || description.chars().count() > 500 {
        return Err(field_error("description", "required, 1 to 500 characters"));
    }
    let products = match &request.products {
        None => Vec::new(),
        Some(list) if list.is_empty() => Vec::new(),
        Some(list) if list.len() > MAX_PRODUCTS => {
            return Err(field_error(
                "products",
                format!("at most {MAX_PRODUCTS} products"),
            ))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, item)| product(item, i, &currency))
            .collect::<Result<_, _>>()?,
    };
    let amount = match (&request.amount, products.is_empty()) {
        (None | Some(Value::Null), false) => None,
        (None | Some(Value::Null), true) => {
            return Err(field_error(
                "amount",
                "give an amount or a list of products",
            ))
        }
        (Some(value), true) => Some(fields::chargeable_amount(Some(value), &currency, "amount")?),
        (Some(_), false) => {
            return Err(field_error(
                "amount",
                "give either an amount or products, not both",
            ))
        }
    };
    let named = match request.mode.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("test") => Some(false),
        Some("live") => Some(true),
        Some(other) => {
            return Err(field_error(
                "mode",
                format!("{other:?}: must be test or live"),
            ))
        }
    };
    let livemode = match (named, request.livemode) {
        (Some(mode), Some(livemode)) if mode != livemode => {
            return Err(field_error(
                "livemode",
                format!(
                    "{livemode} contradicts \"mode\": {:?} (give one of them)",
                    request.mode.as_deref().unwrap_or_default()
                ),
            ))
        }
        (named, livemode) => livemode.or(named).unwrap_or(server_mode.is_live()),
    };
    let success_url = match request.success_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(absolute_url(url, "success_url")?),
    };
    Ok(NewWidget {
        id: new_widget_id(),
        livemode,
        description: description.to_owned(),
        currency: currency.code().to_owned(),
        amount,
        products,
        collect_email: request.collect_email.unwrap_or(false),
        send_receipt: request.send_receipt.unwrap_or(true),
        notify_merchant: request.notify_merchant.unwrap_or(true),
        success_url,
    })
}

fn product(item: &Value, index: usize, currency: &Currency) -> Result<WidgetProduct, FieldError> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(field_error(
            format!("products[{index}].name"),
            "required, 1 to 200 characters",
        ));
    }
    let amount = fields::chargeable_amount(
        item.get("amount"),
        currency,
        &format!("products[{index}].amount"),
    )?;
    Ok(WidgetProduct {
        name: name.to_owned(),
        amount,
    })
}

/// `url` if it is an absolute `http`/`https` URL.
pub fn absolute_url(url: &str, field: &str) -> Result<String, FieldError> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
            Ok(parsed.to_string())
        }
        _ => Err(field_error(
            field,
            format!("{url:?} is not an absolute http(s) URL"),
        )),
    }
}

/// `wid_` and 24 random letters and digits.
fn new_widget_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("wid_{}", &id[..24])
}

/// Whether `id` looks like a widget id (before any lookup).
pub fn is_widget_id(id: &str) -> bool {
    id.strip_prefix("wid_").is_some_and(|rest| {
        (8..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn display(amount: i64, currency: &str) -> String {
    Currency::parse(currency)
        .map(|c| format_amount(amount, &c))
        .unwrap_or_else(|_| format!("{amount} {}", currency.to_uppercase()))
}

/// A widget as the admin API and the command line show it: what a browser learns of it
/// ([`public_json`]) and its settings.
pub fn widget_json(widget: &WidgetRecord) -> Value {
    let mut shown = public_json(widget);
    shown["object"] = json!("widget");
    shown["mode"] = json!(if widget.livemode { "live" } else { "test" });
    shown["send_receipt"] = json!(widget.send_receipt);
    shown["notify_merchant"] = json!(widget.notify_merchant);
    shown["success_url"] = json!(widget.success_url);
    shown["created"] = json!(widget.created_at.unix_timestamp());
    shown
}

/// What a browser learns of a widget: what it sells and what to ask, nothing of its settings.
pub fn public_json(widget: &WidgetRecord) -> Value {
    json!({
        "id": widget.id,
        "description": widget.description,
        "currency": widget.currency,
        "amount": widget.amount,
        "amount_display": widget.amount.map(|a| display(a, &widget.currency)),
        "products": widget.products.iter().map(|p| json!({
            "name": p.name,
            "amount": p.amount,
            "amount_display": display(p.amount, &widget.currency),
        })).collect::<Vec<_>>(),
        "collect_email": widget.collect_email,
    })
}

/// Whether `token` is a page-load token: 16 to 64 of `A-Z a-z 0-9 _ -`.
pub fn is_page_token(token: &str) -> bool {
    (16..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_mode(stripe: &Client, widget: &WidgetRecord) -> Result<(), WidgetError> {
    if widget.livemode == stripe.mode().is_live() {
        Ok(())
    } else {
        Err(WidgetError::WrongMode(format!(
            "widget {} is a {} widget and this server uses a {} key",
            widget.id,
            if widget.livemode { "live" } else { "test" },
            stripe.mode(),
        )))
    }
}

/// The amount and description of `product` (an index into the widget's products; the first
/// when not given) or of the widget's fixed amount.
fn priced(widget: &WidgetRecord, product: Option<usize>) -> Result<(i64, String), FieldError> {
    if let Some(amount) = widget.amount {
        return Ok((amount, widget.description.clone()));
    }
    let index = product.unwrap_or(0);
    let chosen = widget
        .products
        .get(index)
        .ok_or_else(|| field_error("product", format!("no product {index}")))?;
    Ok((
        chosen.amount,
        format!("{} — {}", widget.description, chosen.name),
    ))
}

/// The PaymentIntent of one page load of `widget`: created the first time the page asks (with
/// the first product's amount when the customer picks one; [`set_details`] changes it), then the
/// same one on every later ask of that page — a retry, another card, the script loaded twice.
pub async fn page_intent(
    stripe: &Client,
    store: &Store,
    widget: &WidgetRecord,
    page_token: &str,
) -> Result<PaymentIntent, WidgetError> {
    check_mode(stripe, widget)?;
    if !is_page_token(page_token) {
        return Err(field_error("token", "16 to 64 characters of A-Z, a-z, 0-9, _ and -").into());
    }
    if let Some(id) = store.page_intent(&widget.id, page_token).await? {
        return Ok(stripe.payment_intents().retrieve(&id, &[]).await?);
    }
    let (amount, description) = priced(widget, None)?;
    let mut metadata = Metadata::new();
    metadata.insert(SOURCE_METADATA.into(), WIDGET_SOURCE.into());
    metadata.insert(WIDGET_METADATA.into(), widget.id.clone());
    if !widget.notify_merchant {
        metadata.insert(NOTIFY_METADATA.into(), "off".into());
    }
    let params = CreatePaymentIntent {
        amount,
        currency: widget.currency.clone(),
        payment_method_types: Some(vec!["card".into()]),
        description: Some(description),
        metadata: Some(metadata),
        ..Default::default()
    };
    // Two requests of one page racing each other send the same key: one PaymentIntent.
    let key = keys::content(
        store.installation_id(),
        "widget_intent",
        &format!("{}:{page_token}", widget.id),
    )
    .map_err(|e| WidgetError::Key(e.to_string()))?;
    let intent = stripe.payment_intents().create(&params, &key).await?;
    let id = store
        .claim_page_intent(&widget.id, page_token, &intent.id)
        .await?;
    info!(widget = %widget.id, payment_intent = %id, "widget payment intent created");
    if id == intent.id {
        Ok(intent)
    } else {
        Ok(stripe.payment_intents().retrieve(&id, &[]).await?)
    }
}

/// What the customer chose, sent with the PaymentIntent's `client_secret` before confirming.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentDetails {
    /// The PaymentIntent's client secret.
    pub client_secret: Option<String>,
    /// The customer's address (required when the widget asks for one).
    pub email: Option<String>,
    /// The index of the chosen product (widgets with products).
    pub product: Option<usize>,
}

/// The PaymentIntent `payment_intent_id` of `widget`, if `client_secret` is its own.
pub async fn check_client_secret(
    stripe: &Client,
    payment_intent_id: &str,
    client_secret: &str,
) -> Result<PaymentIntent, WidgetError> {
    // A secret names its intent (`pi_…_secret_…`): another intent's is refused unread.
    if !client_secret.starts_with(&format!("{payment_intent_id}_secret_")) {
        return Err(WidgetError::ClientSecret);
    }
    let intent = match stripe
        .payment_intents()
        .retrieve(payment_intent_id, &[])
        .await
    {
        Ok(intent) => intent,
        Err(error) if error.is_resource_missing() => {
            return Err(WidgetError::NotFound(format!(
                "no PaymentIntent {payment_intent_id}"
            )))
        }
        Err(error) => return Err(error.into()),
    };
    let expected = intent.client_secret.as_deref().unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(client_secret.as_bytes())) {
        return Err(WidgetError::ClientSecret);
    }
    Ok(intent)
}

/// Puts the customer's choice on the page's PaymentIntent before the browser confirms it: the
/// chosen product's amount and name, and the receipt address (kept in metadata; Kassa sends the
/// receipt). Only the widget's own PaymentIntent, with its client secret, while unpaid.
pub async fn set_details(
    stripe: &Client,
    store: &Store,
    widget: &WidgetRecord,
    payment_intent_id: &str,
    details: &PaymentDetails,
) -> Result<PaymentIntent, WidgetError> {
    check_mode(stripe, widget)?;
    let secret = details.client_secret.as_deref().unwrap_or_default();
    let intent = check_client_secret(stripe, payment_intent_id, secret).await?;
    if intent.metadata.get(WIDGET_METADATA) != Some(&widget.id) {
        return Err(WidgetError::NotFound(format!(
            "PaymentIntent {payment_intent_id} is not one of widget {}",
            widget.id
        )));
    }
    let changeable = matches!(
        intent.status,
        PaymentIntentStatus::RequiresPaymentMethod
            | PaymentIntentStatus::RequiresConfirmation
            | PaymentIntentStatus::RequiresAction
    );
    if !changeable {
        return Err(WidgetError::Settled(format!(
            "PaymentIntent {payment_intent_id} is paid or canceled already"
        )));
    }
    let email = match details.email.as_deref().map(str::trim) {
        Some(email) if !email.is_empty() => {
            fields::email(email, "email")?;
            Some(email.to_owned())
        }
        _ if widget.collect_email => return Err(field_error("email", "required").into()),
        _ => None,
    };
    if widget.amount.is_some() && details.product.is_some_and(|p| p > 0) {
        return Err(field_error("product", "this widget sells one thing").into());
    }
    let (amount, description) = priced(widget, details.product)?;
    let currency = Currency::parse(&widget.currency).map_err(|e| field_error("currency", e))?;
    validate_amount(amount, &currency).map_err(|e| field_error("product", e))?;
    let mut metadata = Metadata::new();
    if let (Some(email), true) = (&email, widget.send_receipt) {
        metadata.insert(RECEIPT_EMAIL_METADATA.into(), email.clone());
    }
    let unchanged = intent.amount == amount
        && intent.description.as_deref() == Some(description.as_str())
        && metadata
            .iter()
            .all(|(k, v)| intent.metadata.get(k) == Some(v));
    if unchanged {
        return Ok(intent);
    }
    let params = UpdatePaymentIntent {
        amount: (intent.amount != amount).then_some(amount),
        description: Some(description),
        metadata: (!metadata.is_empty()).then_some(metadata),
        ..Default::default()
    };
    // Setting the same fields again is harmless, and a later choice must not be answered with
    // an earlier one's saved result: a fresh key each time.
    let key = keys::fresh(store.installation_id(), "widget_details")
        .map_err(|e| WidgetError::Key(e.to_string()))?;
    Ok(stripe
        .payment_intents()
        .update(payment_intent_id, &params, &key)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> WidgetRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_widget_has_an_amount_or_products_never_both_or_neither() {
        let w = plan_widget(
            &request(json!({"amount": 1500, "currency": "EUR", "description": "Tea"})),
            Mode::Test,
        )
        .unwrap();
        assert_eq!((w.amount, w.currency.as_str()), (Some(1500), "eur"));
        assert!(is_widget_id(&w.id), "{}", w.id);
        assert!(!w.livemode);
        let w = plan_widget(
            &request(json!({"description": "Tea", "products": [
                {"name": "Small", "amount": 300}, {"name": "Large", "amount": 500}]})),
            Mode::Test,
        )
        .unwrap();
        assert_eq!(w.amount, None);
        assert_eq!(w.products[1].amount, 500);
        let e = plan_widget(&request(json!({"description": "Tea"})), Mode::Test).unwrap_err();
        assert_eq!(e.field, "amount");
        let e = plan_widget(
            &request(json!({"description": "Tea", "amount": 100,
                            "products": [{"name": "x", "amount": 100}]})),
            Mode::Test,
        )
        .unwrap_err();
        assert_eq!(e.field, "amount");
        let e = plan_widget(
            &request(json!({"description": "Tea", "products": [{"name": "x", "amount": "1.00"}]})),
            Mode::Test,
        )
        .unwrap_err();
        assert_eq!(e.field, "products[0].amount");
    }

    #[test]
    fn mode_description_and_success_url_are_checked() {
        let e = plan_widget(&request(json!({"amount": 500})), Mode::Test).unwrap_err();
        assert_eq!(e.field, "description");
        let e = plan_widget(
            &request(json!({"amount": 500, "description": "x", "mode": "prod"})),
            Mode::Test,
        )
        .unwrap_err();
        assert_eq!(e.field, "mode");
        let e = plan_widget(
            &request(
                json!({"amount": 500, "description": "x", "success_url": "javascript:alert(1)"}),
            ),
            Mode::Test,
        )
        .unwrap_err();
        assert_eq!(e.field, "success_url");
        let w = plan_widget(
            &request(json!({"amount": 500, "description": "x", "mode": "live"})),
            Mode::Test,
        )
        .unwrap();
        assert!(w.livemode);
        assert!(serde_json::from_value::<WidgetRequest>(json!({"amout": 5})).is_err());
    }

    #[test]
    fn livemode_names_the_mode_as_every_body_does_and_must_agree_with_mode() {
        let planned = |body: Value, default: Mode| plan_widget(&request(body), default);
        let w = planned(
            json!({"amount": 500, "description": "x", "livemode": true}),
            Mode::Test,
        )
        .unwrap();
        assert!(w.livemode);
        let w = planned(
            json!({"amount": 500, "description": "x", "livemode": false}),
            Mode::Live,
        )
        .unwrap();
        assert!(!w.livemode);
        let w = planned(json!({"amount": 500, "description": "x"}), Mode::Live).unwrap();
        assert!(w.livemode, "neither: the default mode");
        let w = planned(
            json!({"amount": 500, "description": "x", "mode": "live", "livemode": true}),
            Mode::Test,
        )
        .unwrap();
        assert!(w.livemode);
        let e = planned(
            json!({"amount": 500, "description": "x", "mode": "test", "livemode": true}),
            Mode::Test,
        )
        .unwrap_err();
        assert_eq!(e.field, "livemode");
        assert!(e.message.contains("contradicts"), "{}", e.message);
    }

    #[test]
    fn jpy_amounts_are_whole_yen() {
        let w = plan_widget(
            &request(json!({"amount": 1000, "currency": "jpy", "description": "Tea"})),
            Mode::Test,
        )
        .unwrap();
        let record = WidgetRecord {
            id: w.id,
            livemode: false,
            description: w.description,
            currency: w.currency,
            amount: w.amount,
            products: w.products,
            collect_email: false,
            send_receipt: true,
            notify_merchant: true,
            success_url: None,
            created_at: kassa_store::OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(public_json(&record)["amount_display"], "¥1,000");
        // The browser sees what is sold and asked; the admin view adds the settings.
        let public = public_json(&record);
        let keys = |v: &Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&public),
            [
                "amount",
                "amount_display",
                "collect_email",
                "currency",
                "description",
                "id",
                "products"
            ]
        );
        let admin = widget_json(&record);
        for key in keys(&public) {
            assert_eq!(admin[&key], public[&key], "{key}");
        }
        assert_eq!(admin["object"], "widget");
        assert_eq!(admin["mode"], "test");
        assert_eq!(admin["send_receipt"], true);
        assert_eq!(admin["notify_merchant"], true);
        assert_eq!(admin["success_url"], Value::Null);
        assert_eq!(admin["created"], 0);
        assert_eq!(keys(&admin).len(), 13);
    }

    #[test]
    fn page_tokens_and_widget_ids_are_checked_before_any_lookup() {
        assert!(is_page_token("abcdefghijklmnop"));
        assert!(!is_page_token("short"));
        assert!(!is_page_token("abcdefghijklmnop'; --"));
        assert!(is_widget_id("wid_0123456789abcdef01234567"));
        assert!(!is_widget_id("wid_../../etc"));
        assert!(!is_widget_id("pi_0123456789"));
    }
}
