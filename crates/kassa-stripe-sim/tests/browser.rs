//! What a browser meets on the simulator: the publishable key's few calls (confirm and retrieve with
//! the client secret, PaymentMethods from typed cards) and Stripe's answer for everything else, CORS
//! like Stripe's API, the 3-D Secure challenge page, and the Stripe.js stand-in at `/v3` driving all
//! of it in headless Chromium (fantoccini + chromedriver, as the workspace's browser test): a page on
//! another origin mounts the Payment Element, a declined card shows the decline, 4242 then pays the
//! same PaymentIntent, and 3-D Secure cards are completed or failed in the challenge frame.
//! Screenshots of each step go to `target/screenshots/`.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`scripts/test-tools` installs
//! them); KASSA_CHROMIUM and KASSA_CHROMEDRIVER point at other binaries.

use std::process::Stdio;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::response::Html;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use kassa_stripe_sim::{KeyKind, SimConfig, Simulator};
use serde_json::{json, Value};

const SECRET: &str = "sk_test_kassa_browser";
const PUBLISHABLE: &str = "pk_test_kassa_browser";

struct Sim {
    sim: Simulator,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Sim {
    async fn start() -> Sim {
        Sim {
            sim: Simulator::start(SimConfig::default())
                .await
                .expect("simulator starts"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// A server call with the secret key.
    async fn server(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .send(
                self.http
                    .post(self.url(path))
                    .bearer_auth(SECRET)
                    .form(form),
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    }

    /// A browser call as Stripe.js makes it: the publishable key as the `key` form parameter.
    async fn browser_post(&self, key: &str, path: &str, form: &[(&str, &str)]) -> Reply {
        let mut form = form.to_vec();
        form.push(("key", key));
        self.send(self.http.post(self.url(path)).form(&form)).await
    }

    async fn browser_get(&self, key: &str, path: &str, query: &[(&str, &str)]) -> Reply {
        let mut query = query.to_vec();
        query.push(("key", key));
        self.send(self.http.get(self.url(path)).query(&query)).await
    }

    async fn payment_intent(&self, customer: Option<&str>) -> Value {
        let mut form = vec![
            ("amount", "2000"),
            ("currency", "usd"),
            ("metadata[order]", "A-1"),
        ];
        if let Some(c) = customer {
            form.push(("customer", c));
        }
        self.server("/v1/payment_intents", &form).await
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().expect("an id")
}

fn secret(v: &Value) -> &str {
    v["client_secret"].as_str().expect("a client secret")
}

fn card(number: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("payment_method_data[type]", "card"),
        ("payment_method_data[card][number]", number),
        ("payment_method_data[card][exp_month]", "12"),
        ("payment_method_data[card][exp_year]", "2040"),
        ("payment_method_data[card][cvc]", "123"),
    ]
}

#[tokio::test]
async fn a_publishable_key_may_only_do_what_stripe_js_does() {
    let s = Sim::start().await;
    // Server calls: Stripe's 403 for a publishable key.
    for (method, path) in [
        ("GET", "/v1/customers"),
        ("POST", "/v1/payment_intents"),
        ("GET", "/v1/payment_intents"),
        ("GET", "/v1/payment_intents/search"),
        ("POST", "/v1/customers"),
    ] {
        let rb = if method == "GET" {
            s.http.get(s.url(path))
        } else {
            s.http.post(s.url(path)).form(&[("amount", "100")])
        };
        let r = s.send(rb.bearer_auth(PUBLISHABLE)).await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.body["error"]["code"], "secret_key_required");
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("This API call cannot be made with a publishable API key."));
    }

    // A PaymentMethod from typed card details, with Stripe's checks of the details.
    let r = s
        .browser_post(
            PUBLISHABLE,
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "7"),
                ("card[exp_year]", "31"),
                ("card[cvc]", "123"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["card"]["last4"], "4242");
    assert_eq!(
        (
            r.body["card"]["exp_month"].as_i64(),
            r.body["card"]["exp_year"].as_i64()
        ),
        (Some(7), Some(2031))
    );
    for (field, value, code) in [
        ("card[exp_month]", "13", "invalid_expiry_month"),
        ("card[exp_year]", "2001", "invalid_expiry_year"),
        ("card[cvc]", "12", "invalid_cvc"),
    ] {
        let mut form = vec![
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2040"),
            ("card[cvc]", "123"),
        ];
        form.retain(|(k, _)| *k != field);
        form.push((field, value));
        let r = s
            .browser_post(PUBLISHABLE, "/v1/payment_methods", &form)
            .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (402, Some(code)),
            "{field}={value}"
        );
    }

    // Retrieve: the client secret is required, must match, and shows a publishable key's view.
    let cus = s
        .server("/v1/customers", &[("email", "c@example.com")])
        .await;
    let pi = s.payment_intent(Some(id(&cus))).await;
    let path = format!("/v1/payment_intents/{}", id(&pi));
    let r = s.browser_get(PUBLISHABLE, &path, &[]).await;
    assert_eq!(r.status, 403);
    let r = s
        .browser_get(PUBLISHABLE, &path, &[("client_secret", "pi_x_secret_y")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "client_secret");
    assert_eq!(
        r.body["error"]["message"],
        "The client_secret provided does not match the client_secret associated with the PaymentIntent."
    );
    let r = s
        .browser_get(PUBLISHABLE, &path, &[("client_secret", secret(&pi))])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["amount"], 2000);
    assert_eq!(r.body["status"], "requires_payment_method");
    assert!(r.body.get("customer").is_none(), "{}", r.body);
    assert!(r.body.get("metadata").is_none());
    // The same check guards the server's own use of `client_secret`.
    let r = s
        .send(
            s.http
                .get(s.url(&path))
                .query(&[("client_secret", "pi_x_secret_y")])
                .bearer_auth(SECRET),
        )
        .await;
    assert_eq!(r.status, 400);

    // Confirm with the typed card: a decline is Stripe's 402 card_error carrying the intent…
    let confirm = format!("{path}/confirm");
    let mut declined = card("4000000000000002");
    declined.push(("client_secret", secret(&pi)));
    let r = s.browser_post(PUBLISHABLE, &confirm, &declined).await;
    assert_eq!(r.status, 402, "{}", r.body);
    let e = &r.body["error"];
    assert_eq!(
        (
            e["type"].as_str(),
            e["code"].as_str(),
            e["decline_code"].as_str()
        ),
        (
            Some("card_error"),
            Some("card_declined"),
            Some("generic_decline")
        )
    );
    assert_eq!(e["payment_intent"]["id"], pi["id"]);
    assert_eq!(e["payment_intent"]["status"], "requires_payment_method");
    assert!(e["payment_intent"].get("customer").is_none());
    // …and another card then pays the same PaymentIntent.
    let mut good = card("4242424242424242");
    good.push(("client_secret", secret(&pi)));
    let r = s.browser_post(PUBLISHABLE, &confirm, &good).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("succeeded"))
    );
    let paid = s
        .send(s.http.get(s.url(&path)).bearer_auth(SECRET))
        .await
        .body;
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["customer"], cus["id"]);
    assert_eq!(paid["amount_received"], 2000);
    // Without its client secret, a publishable key confirms nothing.
    let other = s.payment_intent(None).await;
    let r = s
        .browser_post(
            PUBLISHABLE,
            &format!("/v1/payment_intents/{}/confirm", id(&other)),
            &card("4242424242424242"),
        )
        .await;
    assert_eq!(r.status, 403);
    // A live publishable key does not reach test objects.
    let r = s
        .browser_get(
            "pk_live_kassa_browser",
            &path,
            &[("client_secret", secret(&pi))],
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a similar object exists in test mode, but a live mode key was used"));
    let kinds: Vec<Option<KeyKind>> = s
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == confirm)
        .map(|r| r.key_kind)
        .collect();
    assert_eq!(kinds, vec![Some(KeyKind::Publishable); 2]);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn cors_answers_like_stripes_api() {
    let s = Sim::start().await;
    let r = s
        .send(
            s.http
                .get(s.url("/v1/customers"))
                .header("Origin", "http://shop.example")
                .bearer_auth(SECRET),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("Request-Id"));
    // Errors are readable by the browser too.
    let r = s
        .send(s.http.get(s.url("/v1/customers")).bearer_auth(PUBLISHABLE))
        .await;
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (403, Some("*"))
    );
    // A preflight for a request with Authorization and Idempotency-Key.
    let before = s.sim.requests().len();
    let r = s
        .send(
            s.http
                .request(reqwest::Method::OPTIONS, s.url("/v1/payment_methods"))
                .header("Origin", "http://shop.example")
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization,idempotency-key",
                ),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://shop.example")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization,idempotency-key")
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    assert_eq!(
        s.sim.requests().len(),
        before,
        "a preflight is no API request"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn the_challenge_page_completes_or_fails_3d_secure() {
    let s = Sim::start().await;
    let script = s.send(s.http.get(s.url("/v3"))).await;
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("application/javascript"));
    assert!(script.body.as_str().unwrap().contains("function Stripe("));

    // A card that always asks for authentication: requires_action, with the challenge page.
    let ask = |pi: Value, number: &'static str| {
        let s = &s;
        async move {
            let mut form = card(number);
            form.push(("client_secret", secret(&pi)));
            let r = s
                .browser_post(
                    PUBLISHABLE,
                    &format!("/v1/payment_intents/{}/confirm", id(&pi)),
                    &form,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["status"], "requires_action");
            r.body
        }
    };
    let pi = s.payment_intent(None).await;
    let pending = ask(pi.clone(), "4000002760003184").await;
    let page = pending["next_action"]["use_stripe_sdk"]["stripe_js"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(page, s.url(&format!("/3ds/{}", id(&pi))));
    let html = s.send(s.http.get(&page)).await;
    assert_eq!(html.status, 200);
    let html = html.body.as_str().unwrap().to_owned();
    assert!(html.contains("Complete authentication") && html.contains("Fail authentication"));

    let answer = |url: String, outcome: &'static str, client_secret: String| {
        let s = &s;
        async move {
            s.send(s.http.post(url).form(&[
                ("outcome", outcome),
                ("client_secret", client_secret.as_str()),
            ]))
            .await
        }
    };
    let r = answer(page.clone(), "complete", "pi_x_secret_wrong".into()).await;
    assert_eq!(r.status, 400);
    let r = answer(page.clone(), "complete", secret(&pi).into()).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("succeeded"))
    );
    let r = answer(page.clone(), "complete", secret(&pi).into()).await;
    assert_eq!(r.status, 400, "answered once");

    // Failing it: Stripe's payment_intent_authentication_failure, nothing charged.
    let pi = s.payment_intent(None).await;
    ask(pi.clone(), "4000000000003220").await;
    let url = s.url(&format!("/3ds/{}", id(&pi)));
    let r = answer(url, "fail", secret(&pi).into()).await;
    assert_eq!(r.body["status"], "requires_payment_method");
    let failed = s
        .browser_get(
            PUBLISHABLE,
            &format!("/v1/payment_intents/{}", id(&pi)),
            &[("client_secret", secret(&pi))],
        )
        .await
        .body;
    assert_eq!(
        failed["last_payment_error"]["code"],
        "payment_intent_authentication_failure"
    );
    let events = s
        .send(
            s.http
                .get(s.url("/v1/events?type=payment_intent.payment_failed"))
                .bearer_auth(SECRET),
        )
        .await
        .body;
    assert_eq!(events["data"][0]["data"]["object"]["id"], pi["id"]);

    // Authenticated, then declined by the issuer: the decline is on the intent.
    let pi = s.payment_intent(None).await;
    ask(pi.clone(), "4000008400001629").await;
    let r = answer(
        s.url(&format!("/3ds/{}", id(&pi))),
        "complete",
        secret(&pi).into(),
    )
    .await;
    assert_eq!(r.body["status"], "requires_payment_method");

    // A SetupIntent: completing it saves the card to the customer.
    let cus = s.server("/v1/customers", &[]).await;
    let si = s
        .server("/v1/setup_intents", &[("customer", id(&cus))])
        .await;
    let mut form = card("4000002500003155");
    form.push(("client_secret", secret(&si)));
    let r = s
        .browser_post(
            PUBLISHABLE,
            &format!("/v1/setup_intents/{}/confirm", id(&si)),
            &form,
        )
        .await;
    assert_eq!(r.body["status"], "requires_action", "{}", r.body);
    assert!(r.body.get("customer").is_none(), "a publishable key's view");
    let r = answer(
        s.url(&format!("/3ds/{}", id(&si))),
        "complete",
        secret(&si).into(),
    )
    .await;
    assert_eq!(r.body["status"], "succeeded");
    let saved = s
        .send(
            s.http
                .get(s.url(&format!("/v1/customers/{}/payment_methods", id(&cus))))
                .bearer_auth(SECRET),
        )
        .await
        .body;
    assert_eq!(saved["data"][0]["card"]["last4"], "3155");
    s.sim.shutdown().await;
}

// --- in a real browser --------------------------------------------------------------------------------

fn program(variable: &str, default: &str) -> String {
    let path = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver \
         (`scripts/test-tools` does) or set {variable}"
    );
    path
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let binary = program("KASSA_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(r) = http.get(format!("{url}/status")).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("chromedriver answers within 20 s");
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The merchant's page, on its own origin: loads the stand-in from the simulator, mounts the Payment
/// Element and confirms on submit, writing the result where the test reads it.
const SHOP_PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Shop</title><script src="SIM_BASE/v3"></script>
<style>body{font-family:sans-serif;max-width:28rem;margin:1rem auto;padding:0 1rem}</style></head>
<body><main><h1>Tea, 20.00 USD</h1>
<form id="payment-form"><div id="payment-element"></div><button id="pay" type="submit">Pay</button></form>
<p id="result" role="status" data-attempt="0"></p></main>
<script>
  const params = new URLSearchParams(location.search);
  const secret = params.get("secret");
  const stripe = Stripe(params.get("key"));
  const elements = stripe.elements({ clientSecret: secret, appearance: { variables: { colorPrimary: "#0a7d5a" } } });
  elements.create("payment").mount("#payment-element");
  const result = document.getElementById("result");
  let attempt = 0;
  document.getElementById("payment-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const r = secret.startsWith("seti_")
      ? await stripe.confirmSetup({ elements, redirect: "if_required" })
      : await stripe.confirmPayment({ elements, confirmParams: { return_url: location.href }, redirect: "if_required" });
    if (r.error) {
      result.dataset.status = "error";
      result.dataset.code = r.error.code || "";
      result.dataset.declineCode = r.error.decline_code || "";
      result.dataset.intentStatus = (r.error.payment_intent || {}).status || "";
      result.textContent = r.error.message;
    } else {
      const intent = r.paymentIntent || r.setupIntent;
      result.dataset.status = intent.status;
      result.textContent = "Payment " + intent.status;
    }
    result.dataset.attempt = String(++attempt);
  });
</script></body></html>"##;

async fn shop(sim_base: String) -> String {
    let page = SHOP_PAGE.replace("SIM_BASE", &sim_base);
    let app = axum::Router::new().route(
        "/pay",
        axum::routing::get(move |_: RawQuery| {
            let page = page.clone();
            async move { Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots");
    dir
}

async fn snap(browser: &Client, name: &str) -> Result<(), fantoccini::error::CmdError> {
    let png = browser.screenshot().await?;
    std::fs::write(
        screenshot_dir().join(format!("sim-stripe-js-{name}.png")),
        png,
    )
    .expect("screenshot written");
    Ok(())
}

async fn field(browser: &Client, name: &str) -> Result<Element, fantoccini::error::CmdError> {
    browser
        .find(Locator::Css(&format!(
            "#payment-element input[name='{name}']"
        )))
        .await
}

/// Types a card into the mounted Payment Element, replacing what was there.
async fn type_card(browser: &Client, number: &str) -> Result<(), fantoccini::error::CmdError> {
    for (name, value) in [
        ("cardnumber", number),
        ("exp-date", "12 / 34"),
        ("cvc", "123"),
    ] {
        let input = field(browser, name).await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    Ok(())
}

/// Clicks Pay and waits for the page to show the result of this attempt.
async fn pay(browser: &Client, attempt: u32) -> Result<Element, fantoccini::error::CmdError> {
    browser.find(Locator::Id("pay")).await?.click().await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("#result[data-attempt='{attempt}']")))
        .await
}

/// Answers the 3-D Secure challenge in its frame.
async fn authenticate(browser: &Client, button: &str) -> Result<(), fantoccini::error::CmdError> {
    let frame = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("iframe[title='3D Secure authentication']"))
        .await?;
    frame.enter_frame().await?;
    let answer = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id(button))
        .await?;
    // A screenshot is of the whole page, the frame included.
    snap(browser, &format!("3ds-challenge-{button}")).await?;
    answer.click().await?;
    browser.enter_parent_frame().await?;
    Ok(())
}

async fn open(
    browser: &Client,
    shop: &str,
    intent: &Value,
) -> Result<(), fantoccini::error::CmdError> {
    browser
        .goto(&format!(
            "{shop}/pay?key={PUBLISHABLE}&secret={}",
            secret(intent)
        ))
        .await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#payment-element input[name='cardnumber']"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_stripe_js_stand_in_pays_in_a_real_browser() {
    let s = Sim::start().await;
    let shop = shop(s.sim.base_url()).await;
    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!(
        "kassa-sim-chromium-{}-{}",
        std::process::id(),
        s.sim.local_addr().port()
    ));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": program("KASSA_CHROMIUM", "/usr/bin/chromium"),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=420,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    let declined_then_paid = s.payment_intent(None).await;
    let three_ds_ok = s.payment_intent(None).await;
    let three_ds_failed = s.payment_intent(None).await;
    let flows = async {
        // The form: every field labelled, reachable with Tab in order.
        open(&browser, &shop, &declined_then_paid).await?;
        let labels = browser
            .execute(
                "return [...document.querySelectorAll('#payment-element input')].map(i => \
                 (document.querySelector(`label[for='${i.id}']`) || {}).textContent)",
                vec![],
            )
            .await?;
        field(&browser, "cardnumber").await?.click().await?;
        browser
            .active_element()
            .await?
            .send_keys(&Key::Tab.to_string())
            .await?;
        let after_tab = browser.active_element().await?.attr("name").await?;
        snap(&browser, "1-form").await?;

        // A declined card: the decline on the page, the intent ready for another card.
        type_card(&browser, "4000000000000002").await?;
        let declined = pay(&browser, 1).await?;
        let declined = (
            declined.attr("data-status").await?,
            declined.attr("data-decline-code").await?,
            declined.attr("data-intent-status").await?,
            declined.text().await?,
        );
        snap(&browser, "2-declined").await?;
        // 4242 on the same PaymentIntent.
        type_card(&browser, "4242 4242 4242 4242").await?;
        let paid = pay(&browser, 2).await?.attr("data-status").await?;
        snap(&browser, "3-paid").await?;

        // 3-D Secure, completed.
        open(&browser, &shop, &three_ds_ok).await?;
        type_card(&browser, "4000002760003184").await?;
        browser.find(Locator::Id("pay")).await?.click().await?;
        authenticate(&browser, "complete").await?;
        let authenticated = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#result[data-attempt='1']"))
            .await?
            .attr("data-status")
            .await?;
        snap(&browser, "4-3ds-completed").await?;

        // 3-D Secure, failed.
        open(&browser, &shop, &three_ds_failed).await?;
        type_card(&browser, "4000002760003184").await?;
        browser.find(Locator::Id("pay")).await?.click().await?;
        authenticate(&browser, "fail").await?;
        let failed = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#result[data-attempt='1']"))
            .await?;
        let failed = (
            failed.attr("data-status").await?,
            failed.attr("data-code").await?,
            failed.text().await?,
        );
        snap(&browser, "5-3ds-failed").await?;
        Ok::<_, fantoccini::error::CmdError>((
            labels,
            after_tab,
            declined,
            paid,
            authenticated,
            failed,
        ))
    }
    .await;
    let _ = browser.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    let (labels, after_tab, declined, paid, authenticated, failed) =
        flows.expect("the browser flows");

    assert_eq!(
        labels,
        json!(["Card number", "Expiration date (MM / YY)", "Security code"])
    );
    assert_eq!(after_tab.as_deref(), Some("exp-date"));
    assert_eq!(declined.0.as_deref(), Some("error"));
    assert_eq!(declined.1.as_deref(), Some("generic_decline"));
    assert_eq!(declined.2.as_deref(), Some("requires_payment_method"));
    assert_eq!(declined.3, "Your card was declined.");
    assert_eq!(paid.as_deref(), Some("succeeded"));
    assert_eq!(authenticated.as_deref(), Some("succeeded"));
    assert_eq!(failed.0.as_deref(), Some("error"));
    assert_eq!(
        failed.1.as_deref(),
        Some("payment_intent_authentication_failure")
    );
    assert_eq!(
        failed.2,
        "We are unable to authenticate your payment method. Please choose a different payment method and try again."
    );

    // What Stripe holds: one PaymentIntent each, paid or not, every browser call made with the
    // publishable key and from another origin (CORS let the page read the answers).
    let status = |intent: Value| {
        let s = &s;
        async move {
            s.send(
                s.http
                    .get(s.url(&format!("/v1/payment_intents/{}", id(&intent))))
                    .bearer_auth(SECRET),
            )
            .await
            .body
        }
    };
    let first = status(declined_then_paid.clone()).await;
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["amount_received"], 2000);
    let charges = s
        .send(
            s.http
                .get(s.url(&format!("/v1/charges?payment_intent={}", id(&first))))
                .bearer_auth(SECRET),
        )
        .await
        .body;
    let outcomes: Vec<&str> = charges["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|c| c["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        outcomes.iter().filter(|s| **s == "succeeded").count(),
        1,
        "{charges}"
    );
    assert_eq!(status(three_ds_ok).await["status"], "succeeded");
    assert_eq!(
        status(three_ds_failed).await["status"],
        "requires_payment_method"
    );
    let pi_count = s
        .sim
        .requests()
        .iter()
        .filter(|r| r.operation == "POST /v1/payment_intents")
        .count();
    assert_eq!(pi_count, 3, "the browser never creates a PaymentIntent");
    assert!(s
        .sim
        .requests()
        .iter()
        .filter(|r| r
            .operation
            .starts_with("POST /v1/payment_intents/{id}/confirm"))
        .all(|r| r.key_kind == Some(KeyKind::Publishable)));
    drop(driver);
    s.sim.shutdown().await;
}
