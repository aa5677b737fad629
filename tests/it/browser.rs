//! The browser test: headless Chromium, driven through chromedriver (WebDriver) by
//! fantoccini, clicks Buy on the merchant page, pays with the Visa test card on the simulator's
//! hosted Checkout page, lands on the success page, and the payment is in the database.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test-tools` installs them); the
//! paths can be overridden with KASSA_CHROMIUM and KASSA_CHROMEDRIVER.

use crate::support::app::TestApp;
use crate::support::eventually;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

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
        let http = reqwest::Client::new();
        eventually(
            Duration::from_secs(20),
            "chromedriver to answer",
            || async {
                let status = http.get(format!("{url}/status")).send().await.ok()?;
                status.status().is_success().then_some(())
            },
        )
        .await;
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A headless Chromium session through its own chromedriver; [`BrowserSession::close`] ends
/// both and removes the profile.
pub struct BrowserSession {
    pub browser: fantoccini::Client,
    driver: Driver,
    profile: std::path::PathBuf,
}

impl BrowserSession {
    pub async fn close(self) {
        let _ = self.browser.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
        drop(self.driver);
    }
}

/// Headless Chromium showing pages at `size` (`"width,height"` CSS pixels), e.g. a phone's
/// `"360,900"` (emulated: a headless window is at least 500 px wide).
pub async fn chromium(size: &str) -> BrowserSession {
    let (width, height) = size
        .split_once(',')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .expect("width,height");
    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!("kassa-chromium-{}", uuid::Uuid::new_v4()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": program("KASSA_CHROMIUM", "/usr/bin/chromium"),
            // As root in a container; no network beyond localhost here, so nothing in the
            // background either.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                format!("--window-size={size}"),
                format!("--user-data-dir={}", profile.display()),
            ],
            "mobileEmulation": {
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}
            }
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    BrowserSession {
        browser,
        driver,
        profile,
    }
}

/// Saves what the browser shows as `target/screenshots/{name}.png`.
pub async fn screenshot(browser: &fantoccini::Client, name: &str) -> Result<(), CmdError> {
    let png = browser.screenshot().await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    Ok(())
}

/// Waits for the `#outcome` of the page a payment or a saved card lands on (the merchant's
/// success page, a widget's thanks page).
pub async fn outcome(browser: &fantoccini::Client) -> Result<Element, CmdError> {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("outcome"))
        .await
}

/// What a customer does on Stripe's (the simulator's) hosted Checkout page once it loads: types
/// `email` when given, picks the test `card`, and submits; `shot` names a screenshot of the
/// filled page. Answers the hosted page's URL.
pub async fn pay_on_hosted_page(
    browser: &fantoccini::Client,
    email: Option<&str>,
    card: &str,
    shot: Option<&str>,
) -> Result<url::Url, CmdError> {
    let cards = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("select[name=payment_method]"))
        .await?;
    let hosted = browser.current_url().await?;
    if let Some(email) = email {
        browser
            .find(Locator::Css("input[name=email]"))
            .await?
            .send_keys(email)
            .await?;
    }
    cards.select_by_value(card).await?;
    if let Some(shot) = shot {
        screenshot(browser, shot).await?;
    }
    browser
        .find(Locator::Css("button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(hosted)
}

#[tokio::test]
async fn a_customer_buys_in_a_real_browser_and_the_payment_is_recorded() {
    let app = TestApp::spawn().await;
    let session = chromium("1280,900").await;
    let browser = &session.browser;
    let result = async {
        let base = app.stack.base_url().unwrap();
        browser.goto(&format!("{base}/")).await?;
        browser
            .find(Locator::Id("email"))
            .await?
            .send_keys("browser-buyer@example.com")
            .await?;
        browser.find(Locator::Id("buy")).await?.click().await?;
        let on_checkout = pay_on_hosted_page(browser, None, "pm_card_visa", None).await?;
        assert!(
            on_checkout.as_str().starts_with(&app.sim().base_url()),
            "{on_checkout}"
        );
        // Back on the merchant's success page.
        let outcome = outcome(browser).await?;
        let landed = browser.current_url().await?;
        let text = outcome.text().await?;
        let status = outcome.attr("data-status").await?;
        Ok::<_, CmdError>((landed, text, status))
    }
    .await;
    session.close().await;
    let (landed, text, status) = result.expect("the browser flow");

    assert_eq!(landed.path(), "/success", "{landed}");
    assert_eq!(status.as_deref(), Some("paid"), "{text}");
    assert!(text.contains("$20.00"), "{text}");
    let session_id = landed
        .query_pairs()
        .find(|(k, _)| k == "session_id")
        .map(|(_, v)| v.into_owned())
        .expect("success_url carried {CHECKOUT_SESSION_ID}");
    let payment = app
        .store()
        .payment_by_session(&session_id)
        .await
        .unwrap()
        .expect("the payment is in the database");
    assert_eq!((payment.amount, payment.currency.as_str()), (2000, "usd"));
    assert_eq!(
        payment.receipt_email.as_deref(),
        Some("browser-buyer@example.com")
    );
    // The webhook arrives too and finds it recorded: still one payment.
    let event = eventually(Duration::from_secs(20), "the completed event", || async {
        app.stripe_events("checkout.session.completed")
            .await
            .into_iter()
            .find(|e| e["data"]["object"]["id"] == session_id.as_str())
    })
    .await;
    app.processed(event["id"].as_str().unwrap()).await;
    assert_eq!(app.store().count_payments().await.unwrap(), 1);
    app.cleanup().await;
}
