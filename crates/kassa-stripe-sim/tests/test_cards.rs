//! Stripe's documented test cards and SEPA test accounts over HTTP, table-driven: every `pm_card_…`
//! id behaves as docs.stripe.com/testing says in PaymentIntents (on- and off-session), SetupIntents
//! and Checkout (through the payment page); its `tok_…` token and card number make the same card;
//! an unknown `pm_card_…` is Stripe's `resource_missing`. The expectations are written from the
//! docs here, not read from the simulator's own table.

use std::time::Duration;

use kassa_stripe_sim::cards::TEST_CARDS;
use kassa_stripe_sim::{SimConfig, Simulator};
use serde_json::Value;

const KEY: &str = "sk_test_kassa_cards";

/// What one operation ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 200 and `succeeded` (a Checkout Session: `complete` and paid or set up).
    Ok,
    /// 200 and `requires_action` (3D Secure asked for).
    Action,
    /// 402 `card_error` with this `code` and `decline_code`.
    Declined(&'static str, &'static str),
}

use Expect::{Action, Declined, Ok};

const GENERIC: Expect = Declined("card_declined", "generic_decline");
const AUTH: Expect = Declined("authentication_required", "authentication_required");
const FRAUD: Expect = Declined("card_declined", "fraudulent");

/// One documented card: PaymentIntent on-session, off-session (not set up), SetupIntent, Checkout
/// payment (the customer passes 3D Secure on the page), and the last four digits.
struct Row {
    pm: &'static str,
    on_session: Expect,
    off_session: Expect,
    setup: Expect,
    checkout: Expect,
    last4: &'static str,
}

const fn row(
    pm: &'static str,
    on_session: Expect,
    off_session: Expect,
    setup: Expect,
    checkout: Expect,
    last4: &'static str,
) -> Row {
    Row {
        pm,
        on_session,
        off_session,
        setup,
        checkout,
        last4,
    }
}

const fn succeeds(pm: &'static str, last4: &'static str) -> Row {
    row(pm, Ok, Ok, Ok, Ok, last4)
}

const fn declines(pm: &'static str, e: Expect, last4: &'static str) -> Row {
    row(pm, e, e, e, e, last4)
}

/// docs.stripe.com/testing, table by table.
const ROWS: &[Row] = &[
    // Cards by brand.
    succeeds("pm_card_visa", "4242"),
    succeeds("pm_card_visa_debit", "5556"),
    succeeds("pm_card_mastercard", "4444"),
    succeeds("pm_card_mastercard_debit", "8210"),
    succeeds("pm_card_mastercard_prepaid", "5100"),
    succeeds("pm_card_amex", "0005"),
    succeeds("pm_card_amex_threeDSecureNotSupported", "0005"),
    succeeds("pm_card_discover", "1117"),
    succeeds("pm_card_diners", "0004"),
    succeeds("pm_card_jcb", "0505"),
    succeeds("pm_card_unionpay", "0005"),
    // Declined payments (both the `visa_` ids and the older ones).
    declines("pm_card_visa_chargeDeclined", GENERIC, "0002"),
    declines("pm_card_chargeDeclined", GENERIC, "0002"),
    declines(
        "pm_card_visa_chargeDeclinedInsufficientFunds",
        Declined("card_declined", "insufficient_funds"),
        "9995",
    ),
    declines(
        "pm_card_chargeDeclinedInsufficientFunds",
        Declined("card_declined", "insufficient_funds"),
        "9995",
    ),
    declines(
        "pm_card_visa_chargeDeclinedLostCard",
        Declined("card_declined", "lost_card"),
        "9987",
    ),
    declines(
        "pm_card_chargeDeclinedLostCard",
        Declined("card_declined", "lost_card"),
        "9987",
    ),
    declines(
        "pm_card_visa_chargeDeclinedStolenCard",
        Declined("card_declined", "stolen_card"),
        "9979",
    ),
    declines(
        "pm_card_chargeDeclinedStolenCard",
        Declined("card_declined", "stolen_card"),
        "9979",
    ),
    declines(
        "pm_card_chargeDeclinedExpiredCard",
        Declined("expired_card", "expired_card"),
        "0069",
    ),
    declines(
        "pm_card_chargeDeclinedIncorrectCvc",
        Declined("incorrect_cvc", "incorrect_cvc"),
        "0127",
    ),
    declines(
        "pm_card_chargeDeclinedProcessingError",
        Declined("processing_error", "processing_error"),
        "0119",
    ),
    declines(
        "pm_card_visa_chargeDeclinedVelocityLimitExceeded",
        Declined("card_declined", "card_velocity_exceeded"),
        "6975",
    ),
    // "Attaching this card to a Customer object succeeds, but attempts to charge the customer fail."
    row(
        "pm_card_chargeCustomerFail",
        GENERIC,
        GENERIC,
        Ok,
        GENERIC,
        "0341",
    ),
    // Fraud prevention.
    declines("pm_card_radarBlock", FRAUD, "0019"),
    declines("pm_card_chargeDeclinedFraudulent", FRAUD, "0019"),
    declines("pm_card_riskLevelHighest", FRAUD, "4954"),
    succeeds("pm_card_riskLevelElevated", "9235"),
    succeeds("pm_card_cvcCheckFail", "0101"),
    succeeds("pm_card_avsZipFail", "0036"),
    succeeds("pm_card_avsLine1Fail", "0028"),
    succeeds("pm_card_avsFail", "0010"),
    succeeds("pm_card_avsUnchecked", "0044"),
    succeeds("pm_card_bypassPending", "0077"),
    succeeds("pm_card_createDispute", "0259"),
    // Authentication and setup.
    row(
        "pm_card_authenticationRequiredOnSetup",
        Action,
        AUTH,
        Action,
        Ok,
        "3155",
    ),
    row(
        "pm_card_authenticationRequired",
        Action,
        AUTH,
        Action,
        Ok,
        "3184",
    ),
    row(
        "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds",
        Action,
        AUTH,
        Action,
        Declined("card_declined", "insufficient_funds"),
        "3178",
    ),
    row(
        "pm_card_authenticationRequiredSetupForOffSession",
        Action,
        Ok,
        Action,
        Ok,
        "0446",
    ),
    // 3D Secure.
    row(
        "pm_card_threeDSecure2Required",
        Action,
        AUTH,
        Action,
        Ok,
        "3220",
    ),
    row(
        "pm_card_threeDSecureRequired",
        Action,
        AUTH,
        Action,
        Ok,
        "3063",
    ),
    row(
        "pm_card_threeDSecureRequiredChargeDeclined",
        Action,
        AUTH,
        Action,
        GENERIC,
        "1629",
    ),
    row(
        "pm_card_threeDSecureRequiredProcessingError",
        Action,
        AUTH,
        Action,
        Declined("processing_error", "processing_error"),
        "1280",
    ),
    succeeds("pm_card_threeDSecureOptional", "3055"),
];

struct Api {
    sim: Simulator,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        Api {
            sim: Simulator::start(SimConfig::default()).await.unwrap(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.sim.base_url()))
            .bearer_auth(KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, form).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, &[]).await
    }

    async fn customer(&self) -> String {
        let (_, c) = self.post("/v1/customers", &[]).await;
        c["id"].as_str().unwrap().to_owned()
    }
}

/// Whether an answer is what `e` expects.
fn matches(e: Expect, status: u16, body: &Value) -> bool {
    match e {
        Ok => status == 200 && (body["status"] == "succeeded" || body["status"] == "complete"),
        Action => status == 200 && body["status"] == "requires_action",
        Declined(code, decline) => {
            status == 402
                && body["error"]["type"] == "card_error"
                && body["error"]["code"] == code
                && body["error"]["decline_code"] == decline
        }
    }
}

#[tokio::test]
async fn every_documented_test_card_behaves_as_documented_everywhere() {
    let api = Api::start().await;
    let mut misses = Vec::new();
    for r in ROWS {
        let customer = api.customer().await;
        // PaymentIntent, on-session.
        let (s, b) = api
            .post(
                "/v1/payment_intents",
                &[
                    ("amount", "2000"),
                    ("currency", "usd"),
                    ("payment_method", r.pm),
                    ("confirm", "true"),
                ],
            )
            .await;
        if !matches(r.on_session, s, &b) {
            misses.push(format!(
                "{} on-session: expected {:?}, got {s} {b}",
                r.pm, r.on_session
            ));
        }
        if s == 402 {
            // Stripe: the error carries the PaymentIntent, now requires_payment_method.
            let pi = &b["error"]["payment_intent"];
            if pi["status"] != "requires_payment_method"
                || pi["last_payment_error"]["code"] != b["error"]["code"]
            {
                misses.push(format!(
                    "{} on-session 402 without its PaymentIntent: {b}",
                    r.pm
                ));
            }
        }
        // PaymentIntent, off-session, with a customer, never set up.
        let (s, b) = api
            .post(
                "/v1/payment_intents",
                &[
                    ("amount", "2000"),
                    ("currency", "usd"),
                    ("customer", &customer),
                    ("payment_method", r.pm),
                    ("off_session", "true"),
                    ("confirm", "true"),
                ],
            )
            .await;
        if !matches(r.off_session, s, &b) {
            misses.push(format!(
                "{} off-session: expected {:?}, got {s} {b}",
                r.pm, r.off_session
            ));
        }
        // SetupIntent created with confirm, as `stripe trigger setup_intent.*` does.
        let (s, b) = api
            .post(
                "/v1/setup_intents",
                &[
                    ("customer", &customer),
                    ("payment_method", r.pm),
                    ("confirm", "true"),
                ],
            )
            .await;
        if !matches(r.setup, s, &b) {
            misses.push(format!(
                "{} setup: expected {:?}, got {s} {b}",
                r.pm, r.setup
            ));
        }
        // Checkout, through the payment page.
        let (_, session) = api
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "payment"),
                    ("success_url", "https://shop.example/ok"),
                    ("line_items[0][price_data][currency]", "usd"),
                    ("line_items[0][price_data][unit_amount]", "1500"),
                    ("line_items[0][price_data][product_data][name]", "Tea"),
                    ("line_items[0][quantity]", "2"),
                ],
            )
            .await;
        let cs = session["id"].as_str().unwrap();
        let (s, b) = api
            .post(
                &format!("/v1/payment_pages/{cs}/confirm"),
                &[("payment_method", r.pm), ("expected_amount", "3000")],
            )
            .await;
        if !matches(r.checkout, s, &b) {
            misses.push(format!(
                "{} checkout: expected {:?}, got {s} {b}",
                r.pm, r.checkout
            ));
        }
        let (_, after) = api.get(&format!("/v1/checkout/sessions/{cs}")).await;
        let paid = r.checkout == Ok;
        if (after["status"] == "complete") != paid || (after["payment_status"] == "paid") != paid {
            misses.push(format!("{} checkout session afterwards: {after}", r.pm));
        }
        // The card itself.
        let (s, pm) = api.get(&format!("/v1/payment_methods/{}", r.pm)).await;
        if s != 200
            || pm["card"]["last4"] != r.last4
            || !pm["id"].as_str().unwrap_or_default().starts_with("pm_")
        {
            misses.push(format!("{} retrieve: {s} {pm}", r.pm));
        }
    }
    assert!(
        misses.is_empty(),
        "{} misses:\n{}",
        misses.len(),
        misses.join("\n")
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn every_card_of_the_simulator_is_in_the_documented_table_and_its_ids_agree() {
    let api = Api::start().await;
    for card in TEST_CARDS {
        assert!(
            ROWS.iter().any(|r| r.pm == card.pm),
            "{} ({}) has no documented row",
            card.pm,
            card.number
        );
        let last4 = &card.number[card.number.len() - 4..];
        // The token and the number make a PaymentMethod of the same card.
        let (s, by_token) = api
            .post(
                "/v1/payment_methods",
                &[("type", "card"), ("card[token]", card.token)],
            )
            .await;
        assert_eq!(s, 200, "{}: {by_token}", card.token);
        let (s, by_number) = api
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", card.number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{}: {by_number}", card.number);
        for pm in [&by_token, &by_number] {
            assert_eq!(pm["card"]["last4"], last4, "{}", card.pm);
        }
        assert_eq!(
            by_token["card"]["fingerprint"],
            by_number["card"]["fingerprint"]
        );
    }
    // Stripe: "Incorrect number decline — 4242424242424241 — incorrect_number".
    let (s, b) = api
        .post(
            "/v1/payment_methods",
            &[("type", "card"), ("card[number]", "4242424242424241")],
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (402, Some("incorrect_number"))
    );
    // An unknown test id is Stripe's resource_missing: 404 on its own URL, 400 as a parameter.
    let (s, b) = api.get("/v1/payment_methods/pm_card_noSuchCard").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    let (s, b) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_noSuchCard"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("resource_missing"))
    );
    assert_eq!(b["error"]["param"], "payment_method");
    let (s, b) = api
        .post(
            "/v1/payment_methods",
            &[("type", "card"), ("card[token]", "tok_noSuchCard")],
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("resource_missing"))
    );
    // What the simulator does not implement is Stripe's own 404.
    let (s, b) = api.get("/v1/invoices").await;
    assert_eq!(s, 404);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Unrecognized request URL (GET: /v1/invoices)."));
    assert_eq!(b["error"]["type"], "invalid_request_error");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn radar_blocks_never_reach_the_network_and_checks_are_reported() {
    let api = Api::start().await;
    let (s, b) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_radarBlock"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(s, 402);
    let charge = b["error"]["charge"].as_str().expect("a failed charge");
    let (_, charge) = api.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(charge["status"], "failed");
    assert_eq!(charge["outcome"]["type"], "blocked");
    assert_eq!(charge["outcome"]["network_status"], "not_sent_to_network");
    let (_, pm) = api.get("/v1/payment_methods/pm_card_avsZipFail").await;
    assert_eq!(pm["card"]["checks"]["address_postal_code_check"], "fail");
    assert_eq!(pm["card"]["checks"]["address_line1_check"], "pass");
    let (_, pm) = api.get("/v1/payment_methods/pm_card_cvcCheckFail").await;
    assert_eq!(pm["card"]["checks"]["cvc_check"], "fail");
    let (_, pm) = api.get("/v1/payment_methods/pm_card_visa_debit").await;
    assert_eq!(pm["card"]["funding"], "debit");
    api.sim.shutdown().await;
}

async fn sepa_method(api: &Api, iban: &str) -> String {
    let (s, pm) = api
        .post(
            "/v1/payment_methods",
            &[
                ("type", "sepa_debit"),
                ("sepa_debit[iban]", iban),
                ("billing_details[name]", "Jenny Rosen"),
                ("billing_details[email]", "jenny@example.com"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{pm}");
    pm["id"].as_str().unwrap().to_owned()
}

async fn sepa_payment(api: &Api, iban: &str) -> Value {
    let pm = sepa_method(api, iban).await;
    let (s, pi) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "eur"),
                ("payment_method_types[]", "sepa_debit"),
                ("payment_method", &pm),
                ("confirm", "true"),
                ("mandate_data[customer_acceptance][type]", "offline"),
                // The charge as it was when the confirm answered, in the same answer: a debit due
                // at once settles at the simulator's next clock tick, which a later read could
                // already see.
                ("expand[]", "latest_charge"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{pi}");
    pi
}

async fn settled(api: &Api, pi: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, b) = api.get(&format!("/v1/payment_intents/{pi}")).await;
            if b["status"] != "processing" {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{pi} never left processing"))
}

#[tokio::test]
async fn sepa_debits_are_processing_then_settle_as_their_test_iban_says() {
    let api = Api::start().await;
    let ok = sepa_payment(&api, "AT611904300234573201").await;
    let later = sepa_payment(&api, "AT321904300235473204").await;
    let fails = sepa_payment(&api, "AT861904300235473202").await;
    for pi in [&ok, &later, &fails] {
        assert_eq!(pi["status"], "processing");
        let ch = &pi["latest_charge"];
        assert_eq!(ch["status"], "pending");
        assert_eq!(ch["payment_method_details"]["type"], "sepa_debit");
        assert!(ch["payment_method_details"]["sepa_debit"]["mandate"]
            .as_str()
            .unwrap()
            .starts_with("mandate_"));
    }
    let ok = settled(&api, ok["id"].as_str().unwrap()).await;
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["amount_received"], 1000);
    let fails = settled(&api, fails["id"].as_str().unwrap()).await;
    assert_eq!(fails["status"], "requires_payment_method");
    assert!(fails["last_payment_error"]["code"].is_string());
    // "after at least three minutes": still processing once the others have settled.
    let (_, later) = api
        .get(&format!(
            "/v1/payment_intents/{}",
            later["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(later["status"], "processing");
    // Three minutes pass on the simulator's clock: the slow debit settles in that same call.
    let advanced = api.sim.advance_clock(181);
    assert_eq!(advanced.debits_settled, 1, "{advanced:?}");
    let (_, later) = api
        .get(&format!(
            "/v1/payment_intents/{}",
            later["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(later["status"], "succeeded");
    assert_eq!(later["amount_received"], 1000);

    // A bad checksum is refused; a card-only PaymentIntent refuses a debit; no mandate, no debit.
    let (s, b) = api
        .post(
            "/v1/payment_methods",
            &[
                ("type", "sepa_debit"),
                ("sepa_debit[iban]", "AT611904300234573202"),
                ("billing_details[name]", "J"),
                ("billing_details[email]", "j@example.com"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_bank_account_iban"))
    );
    let pm = sepa_method(&api, "AT611904300234573201").await;
    let (s, b) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "eur"),
                ("payment_method", &pm),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("payment_intent_incompatible_payment_method"))
    );
    let (s, b) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "eur"),
                ("payment_method_types[]", "sepa_debit"),
                ("payment_method", &pm),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"]["param"].as_str()),
        (400, Some("mandate_data"))
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_checkout_paid_by_sepa_debit_completes_unpaid_then_announces_the_result() {
    let api = Api::start().await;
    let mut sessions = Vec::new();
    for iban in ["AT611904300234573201", "AT861904300235473202"] {
        let (s, session) = api
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "payment"),
                    ("payment_method_types[]", "sepa_debit"),
                    ("success_url", "https://shop.example/ok"),
                    ("line_items[0][price_data][currency]", "eur"),
                    ("line_items[0][price_data][unit_amount]", "1500"),
                    ("line_items[0][price_data][product_data][name]", "Tea"),
                    ("line_items[0][quantity]", "2"),
                    ("payment_intent_data[setup_future_usage]", "off_session"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{session}");
        let cs = session["id"].as_str().unwrap().to_owned();
        let (s, page) = api.get(&format!("/v1/payment_pages/{cs}")).await;
        assert_eq!(
            (s, page["line_items"]["data"][0]["quantity"].as_i64()),
            (200, Some(2))
        );
        let pm = sepa_method(&api, iban).await;
        let (s, b) = api
            .post(
                &format!("/v1/payment_pages/{cs}/confirm"),
                &[("payment_method", &pm), ("expected_amount", "2999")],
            )
            .await;
        assert_eq!(
            (s, b["error"]["param"].as_str()),
            (400, Some("expected_amount"))
        );
        let (s, done) = api
            .post(
                &format!("/v1/payment_pages/{cs}/confirm"),
                &[("payment_method", &pm), ("expected_amount", "3000")],
            )
            .await;
        assert_eq!(s, 200, "{done}");
        assert_eq!(done["status"], "complete");
        assert_eq!(done["payment_status"], "unpaid");
        // Saving the method for later needs a customer: Checkout made one, and attached the method.
        let customer = done["customer"].as_str().expect("a customer");
        let (_, pm) = api.get(&format!("/v1/payment_methods/{pm}")).await;
        assert_eq!(pm["customer"], customer);
        sessions.push(cs);
    }
    let events = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, list) = api
                .get("/v1/events?type=checkout.session.async_payment_*")
                .await;
            let data = list["data"].as_array().cloned().unwrap_or_default();
            if data.len() == 2 {
                return data;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both debits settle");
    let of = |cs: &str| {
        events
            .iter()
            .find(|e| e["data"]["object"]["id"] == cs)
            .cloned()
            .unwrap()
    };
    let paid = of(&sessions[0]);
    assert_eq!(paid["type"], "checkout.session.async_payment_succeeded");
    assert_eq!(paid["data"]["object"]["payment_status"], "paid");
    let failed = of(&sessions[1]);
    assert_eq!(failed["type"], "checkout.session.async_payment_failed");
    assert_eq!(failed["data"]["object"]["payment_status"], "unpaid");
    api.sim.shutdown().await;
}
