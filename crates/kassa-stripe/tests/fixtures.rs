//! Every real Stripe object Kassa types, from Stripe's OpenAPI fixtures (`shared/stripe/fixtures3.json`),
//! deserialises into its type.

use kassa_stripe::objects::{
    Charge, ChargeStatus, CheckoutMode, CheckoutSession, CheckoutSessionStatus, Customer,
    ErrorType, Event, LineItem, PaymentIntent, PaymentIntentStatus, PaymentMethod, Price,
    PriceType, Product, Refund, RefundStatus, SetupIntent, SetupIntentStatus,
};
use kassa_stripe::{Expandable, List};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::OnceLock;

fn resources() -> &'static Value {
    static RESOURCES: OnceLock<Value> = OnceLock::new();
    RESOURCES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/stripe/fixtures3.json"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (shared/ must sit beside the repository)"));
        let json: Value = serde_json::from_str(&text).expect("fixtures3.json is JSON");
        json["resources"].clone()
    })
}

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let value = resources()
        .get(name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("fixture {name} does not deserialise: {e}"))
}

#[test]
fn customer() {
    let c: Customer = fixture("customer");
    assert_eq!(c.id, "cus_QXg1o8vcGmoR32");
    assert!(!c.deleted);
    assert!(c.invoice_settings.default_payment_method.is_none());
    assert_eq!(c.email, None);

    let deleted: Customer = fixture("deleted_customer");
    assert!(deleted.deleted);
    assert_eq!(deleted.id, "cus_QXg1o8vcGmoR32");
}

#[test]
fn payment_method() {
    let pm: PaymentMethod = fixture("payment_method");
    assert_eq!(pm.type_, "card");
    let card = pm.card.expect("a card");
    assert_eq!(
        (
            card.brand.as_str(),
            card.last4.as_str(),
            card.exp_month,
            card.exp_year
        ),
        ("visa", "4242", 8, 2030)
    );
    assert!(pm.customer.is_none());
    assert_eq!(pm.metadata["order_id"], "123456789");
}

#[test]
fn setup_intent() {
    let si: SetupIntent = fixture("setup_intent");
    assert_eq!(si.status, SetupIntentStatus::RequiresPaymentMethod);
    assert_eq!(si.usage.as_deref(), Some("off_session"));
    assert_eq!(
        si.last_setup_error.expect("last_setup_error").type_,
        ErrorType::IdempotencyError
    );
}

#[test]
fn payment_intent() {
    let pi: PaymentIntent = fixture("payment_intent");
    assert_eq!(pi.id, "pi_1PgafyB7WZ01zgkWSjxsAJo3");
    assert_eq!((pi.amount, pi.currency.as_str()), (1099, "usd"));
    assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
    assert!(pi.client_secret.is_some());
    assert!(pi.last_payment_error.is_some());
}

#[test]
fn checkout_session() {
    let cs: CheckoutSession = fixture("checkout.session");
    assert_eq!(cs.mode, CheckoutMode::Payment);
    assert_eq!(cs.status, Some(CheckoutSessionStatus::Open));
    assert_eq!(
        cs.payment_intent.as_ref().map(Expandable::id),
        Some("pi_1PgafyB7WZ01zgkWSjxsAJo3")
    );
    assert_eq!(
        cs.customer_details.and_then(|d| d.email).as_deref(),
        Some("example@example.com")
    );
    assert!(cs
        .url
        .is_some_and(|u| u.starts_with("https://checkout.stripe.com/")));
    assert_eq!(cs.expires_at, 1234567890);
}

#[test]
fn checkout_line_item() {
    let item: LineItem = fixture("item");
    assert_eq!(item.description.as_deref(), Some("T-shirt"));
    assert_eq!(item.price.expect("price").type_, PriceType::OneTime);
    assert!(item.metadata.is_empty(), "null metadata reads as empty");
}

#[test]
fn event() {
    let event: Event = fixture("event");
    assert_eq!(event.type_, "plan.created");
    assert_eq!(event.object_id(), Some("price_1PgafmB7WZ01zgkW6dKueIc5"));
    assert_eq!(event.object_type(), Some("plan"));
    assert!(!event.livemode);
    assert_eq!(event.api_version, None);
    assert_eq!(event.request.expect("request").id, None);
    assert!(event.data.previous_attributes.is_none());
}

#[test]
fn charge_and_its_refund_list() {
    let charge: Charge = fixture("charge");
    assert_eq!(charge.status, ChargeStatus::Succeeded);
    assert_eq!(charge.amount, 100);
    assert!(charge.paid);

    let refunds: List<Refund> =
        serde_json::from_value(resources()["charge"]["refunds"].clone()).expect("refund list");
    assert!(refunds.data.is_empty());
    assert_eq!(
        refunds.url,
        "/v1/charges/ch_1PgafuB7WZ01zgkWXYmPNZs8/refunds"
    );
}

#[test]
fn refund() {
    let refund: Refund = fixture("refund");
    assert_eq!(refund.status, Some(RefundStatus::Succeeded));
    assert_eq!(
        refund.charge.as_ref().map(Expandable::id),
        Some("ch_1PgafuB7WZ01zgkWXYmPNZs8")
    );
}

#[test]
fn product_and_price() {
    let product: Product = fixture("product");
    assert_eq!(product.name, "T-shirt");
    assert_eq!(
        product.default_price.as_ref().map(Expandable::id),
        Some("price_1PgafmB7WZ01zgkW02Hf9z6c")
    );
    let price: Price = fixture("price");
    assert_eq!(price.type_, PriceType::Recurring);
    assert_eq!(price.unit_amount, Some(2000));
    assert_eq!(
        price.product.as_ref().map(Expandable::id),
        Some("prod_QXg1hqf4jFNsqG")
    );
}

#[test]
fn unknown_enum_values_and_fields_never_fail() {
    let mut pi = resources()["payment_intent"].clone();
    pi["status"] = "requires_teleportation".into();
    pi["brand_new_field"] = serde_json::json!({"x": 1});
    let pi: PaymentIntent = serde_json::from_value(pi).expect("unknown status is tolerated");
    assert_eq!(pi.status, PaymentIntentStatus::Unknown);

    let mut cs = resources()["checkout.session"].clone();
    cs["mode"] = "barter".into();
    cs["status"] = "paused".into();
    let cs: CheckoutSession = serde_json::from_value(cs).expect("unknown mode is tolerated");
    assert_eq!(cs.mode, CheckoutMode::Unknown);
    assert_eq!(cs.status, Some(CheckoutSessionStatus::Unknown));
}

#[test]
fn expanded_fields_hold_whole_objects() {
    let mut cs = resources()["checkout.session"].clone();
    let mut si = resources()["setup_intent"].clone();
    si["payment_method"] = resources()["payment_method"].clone();
    cs["mode"] = "setup".into();
    cs["setup_intent"] = si;
    let cs: CheckoutSession = serde_json::from_value(cs).expect("expanded session");
    let si = cs
        .setup_intent
        .as_ref()
        .and_then(Expandable::as_object)
        .expect("expanded");
    let pm = si.payment_method.as_ref().expect("payment method");
    assert_eq!(pm.id(), "pm_1Pgc75B7WZ01zgkWlHVgdEGJ");
    assert_eq!(
        pm.as_object()
            .and_then(|p| p.card.as_ref())
            .map(|c| c.last4.as_str()),
        Some("4242")
    );
}

#[test]
fn objects_survive_a_serialise_round_trip() {
    let pi: PaymentIntent = fixture("payment_intent");
    let again: PaymentIntent = serde_json::from_value(serde_json::to_value(&pi).unwrap()).unwrap();
    assert_eq!(pi, again);
    let cs: CheckoutSession = fixture("checkout.session");
    let again: CheckoutSession =
        serde_json::from_value(serde_json::to_value(&cs).unwrap()).unwrap();
    assert_eq!(cs, again);
}
