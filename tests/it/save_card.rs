//! Save-card links: made by the admin API and `kassa customers link`, opened by customers at
//! `/save-card/{token}` (a fresh setup-mode Checkout Session each time, 303), refused with a
//! page that says why when expired, withdrawn or forged; re-pay e-mails carry them, so a reply
//! after the first session expired still reaches a working page. In headless Chromium: a link →
//! the hosted page → the card saved as the customer's default, and an expired link's page.

use crate::browser::{chromium, outcome, pay_on_hosted_page, screenshot};
use crate::charges::{charge, customer_with_card, settled};
use crate::support::app::TestApp;
use crate::support::smtp_sink::SmtpSink;
use crate::support::{assert_error, key};
use fantoccini::Locator;
use kassa_store::ChargeStatus;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "save-card-admin-token";

async fn new_customer(app: &TestApp) -> String {
    let params = kassa_stripe::resources::CustomerParams {
        email: Some(format!("{}@example.com", uuid::Uuid::new_v4().simple())),
        ..Default::default()
    };
    app.stripe()
        .customers()
        .create(&params, &key("customer"))
        .await
        .unwrap()
        .id
}

async fn create_link(app: &TestApp, customer: &str, body: Value) -> (u16, Value) {
    app.post(&format!("/api/customers/{customer}/save-card-links"))
        .token(Some(TOKEN))
        .json(&body)
        .send()
        .await
}

/// GET without following redirects: the status, the Location, the body.
async fn open(url: &str) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(url).send().await.expect("the app answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, location, response.text().await.unwrap_or_default())
}

fn session_of(location: &str) -> String {
    location
        .rsplit('/')
        .find(|part| part.starts_with("cs_"))
        .map(|p| p.split(['?', '#']).next().unwrap_or(p).to_owned())
        .unwrap_or_else(|| panic!("{location} names no Checkout Session"))
}

/// An already expired link, made as the server makes them (signed with the installation's key).
async fn expired_link(app: &TestApp, customer: &str) -> String {
    let mut conn = app.store().pool().acquire().await.unwrap();
    kassa_core::save_card::issue_link(
        &mut conn,
        &app.stack.base_url().unwrap(),
        customer,
        false,
        None,
        kassa_store::OffsetDateTime::now_utc() - Duration::from_secs(60),
    )
    .await
    .unwrap()
    .url
}

#[tokio::test]
async fn a_link_opens_a_fresh_setup_session_each_time_until_it_expires_or_is_revoked() {
    let app = TestApp::builder().admin_token(TOKEN).spawn().await;
    let base = app.stack.base_url().unwrap();
    let customer = new_customer(&app).await;
    let (status, link) = create_link(&app, &customer, json!({"expires_in": "7d"})).await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{base}/save-card/")), "{url}");
    assert_eq!(link["customer"], customer.as_str());
    assert_eq!(link["mode"], "test");
    let week = link["expires_at"].as_i64().unwrap() - crate::support::now();
    assert!((7 * 86_400 - 60..=7 * 86_400).contains(&week), "{link}");

    // Opened twice: two fresh setup-mode sessions for the customer, on the simulator's page.
    let (status, first, _) = open(&url).await;
    assert_eq!(status, 303);
    let first = first.unwrap();
    assert!(first.starts_with(&app.sim().base_url()), "{first}");
    let (_, second, _) = open(&url).await;
    let (first, second) = (session_of(&first), session_of(&second.unwrap()));
    assert_ne!(first, second, "a fresh session each time");
    let session = app
        .stripe()
        .checkout_sessions()
        .retrieve(&second, &[])
        .await
        .unwrap();
    assert_eq!(format!("{:?}", session.mode), "Setup");
    assert_eq!(
        session.customer.as_ref().map(|c| c.id().to_owned()),
        Some(customer.clone())
    );

    // Completing it saves the card as the customer's default (the webhook path).
    app.complete(&second, "pm_card_visa");
    let card = crate::support::eventually(Duration::from_secs(20), "the default card", || async {
        app.stripe()
            .customers()
            .retrieve(&customer, &[])
            .await
            .ok()?
            .invoice_settings
            .default_payment_method
    })
    .await;
    assert!(card.id().starts_with("pm_"));

    // A forged token: any changed character.
    let last = if url.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{last}", &url[..url.len() - 1]);
    let (status, _, page) = open(&forged).await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("data-code=\"link_not_found\""), "{page}");
    let (status, _, page) = open(&format!("{base}/save-card/garbage")).await;
    assert_eq!(status, 404, "{page}");

    // Revoked: a page that says so, never Stripe's error.
    let (status, answer) = app
        .post(&format!(
            "/api/save-card-links/{}/revoke",
            link["id"].as_str().unwrap()
        ))
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, page) = open(&url).await;
    assert_eq!(status, 410);
    assert!(page.contains("This link was withdrawn"), "{page}");

    // Expired.
    let (status, _, page) = open(&expired_link(&app, &customer).await).await;
    assert_eq!(status, 410);
    assert!(page.contains("This link has expired"), "{page}");

    // Refusals of the API.
    let (status, answer) = create_link(&app, "cus_nobody", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "customer");
    let (status, answer) = create_link(&app, &customer, json!({"expires_in": "1y"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "expires_in");
    let (status, answer) = app
        .post(&format!("/api/customers/{customer}/save-card-links"))
        .send()
        .await;
    assert_eq!(status, 401);
    assert_error(&answer, "unauthorized", "no token");

    // The command line makes the same links.
    let output = app
        .kassa_command(&["customers", "link", &customer, "--expires", "2h"])
        .env("KASSA_PUBLIC_URL", &base)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (status, location, _) = open(printed["url"].as_str().unwrap()).await;
    assert_eq!(status, 303, "{printed}");
    assert!(location.unwrap().starts_with(&app.sim().base_url()));
    let output = app
        .kassa_command(&["customers", "revoke-link", printed["id"].as_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, _, _) = open(printed["url"].as_str().unwrap()).await;
    assert_eq!(status, 410);
    app.cleanup().await;
}

#[tokio::test]
async fn a_repay_e_mail_link_still_works_after_the_first_session_expired() {
    let sink = SmtpSink::start().await;
    let app = TestApp::builder().smtp(sink.url()).spawn().await;
    let base = app.stack.base_url().unwrap();
    // Attaches, then every charge of it is declined.
    let customer = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let id = charge(&app, &customer, 1999, "usd").await;
    let flagged = settled(&app, id, ChargeStatus::RequiresRecheckout).await;
    let first_session = flagged.recheckout_session_id.clone().unwrap();
    let link = flagged.recheckout_url.clone().unwrap();
    let received = sink.wait_for(1).await;
    let message = mail_parser::MessageParser::default()
        .parse(&received[0].data)
        .expect("a MIME message");
    let text = message.body_text(0).expect("a plain-text part").to_string();
    assert!(link.contains("/save-card/"), "{link}");
    assert!(
        text.contains(&link),
        "the e-mail carries the save-card link:\n{text}"
    );

    // 25 simulated hours: the first session expired (and the reminder went out).
    app.advance_stripe_clock(25 * 3600).await;
    let reminded = crate::support::eventually(Duration::from_secs(30), "the reminder", || async {
        let charge = app.store().charge(id).await.ok()??;
        (charge.reminders_sent == 1).then_some(charge)
    })
    .await;
    assert_ne!(
        reminded.recheckout_session_id.as_deref(),
        Some(first_session.as_str())
    );

    // The first e-mail's link, opened now on this app in a browser: a working page, where the
    // customer saves a card and the charge goes again on it.
    let path = &link[link.find("/save-card/").unwrap()..];
    let session = chromium("500,900").await;
    let browser = &session.browser;
    let flow = async {
        browser.goto(&format!("{base}{path}")).await?;
        let hosted = pay_on_hosted_page(
            browser,
            Some("late@example.com"),
            "pm_card_visa",
            Some("repay-1-late-link-hosted-page"),
        )
        .await?;
        let outcome = outcome(browser).await?.attr("data-status").await?;
        screenshot(browser, "repay-2-card-saved").await?;
        Ok::<_, fantoccini::error::CmdError>((hosted, outcome))
    }
    .await;
    session.close().await;
    let (hosted, outcome) = flow.expect("the browser flow");
    assert!(
        hosted.as_str().starts_with(&app.sim().base_url()),
        "{hosted}"
    );
    assert_eq!(outcome.as_deref(), Some("card_saved"));
    let fresh = session_of(hosted.as_str());
    assert_ne!(fresh, first_session);

    // The link's fresh session was the charge's re-pay session: the charge went again.
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    assert_eq!(done.attempt, 2);
    assert_eq!(done.recheckout_session_id.as_deref(), Some(fresh.as_str()));
    // Settled: the link has nothing more to do, and says so.
    let (status, _, page) = open(&format!("{base}{path}")).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("link_closed"), "{page}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_save_card_link_saves_the_card_in_a_real_browser() {
    let app = TestApp::builder().admin_token(TOKEN).spawn().await;
    let customer = new_customer(&app).await;
    let (_, link) = create_link(&app, &customer, json!({})).await;
    let url = link["url"].as_str().unwrap().to_owned();
    let expired = expired_link(&app, &customer).await;
    let session = chromium("360,900").await;
    let browser = &session.browser;
    let flow = async {
        browser.goto(&url).await?;
        let hosted = pay_on_hosted_page(
            browser,
            Some("saver@example.com"),
            "pm_card_visa",
            Some("save-card-1-hosted-page"),
        )
        .await?;
        let outcome = outcome(browser).await?;
        screenshot(browser, "save-card-2-saved").await?;
        let saved = outcome.attr("data-status").await?;
        browser.goto(&expired).await?;
        let refused = browser.find(Locator::Id("link-outcome")).await?;
        screenshot(browser, "save-card-3-expired").await?;
        let heading = browser.find(Locator::Css("h1")).await?.text().await?;
        Ok::<_, fantoccini::error::CmdError>((
            hosted,
            saved,
            refused.attr("data-code").await?,
            heading,
        ))
    }
    .await;
    session.close().await;
    let (hosted, saved, code, heading) = flow.expect("the browser flow");
    assert!(
        hosted.as_str().starts_with(&app.sim().base_url()),
        "{hosted}"
    );
    assert_eq!(saved.as_deref(), Some("card_saved"));
    assert_eq!(code.as_deref(), Some("link_expired"));
    assert_eq!(heading, "This link has expired");
    // The success page fulfilled it synchronously: the card is the customer's default.
    let card = app.default_card(&customer).await;
    assert!(card.starts_with("pm_"), "{card}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_demo_shop_has_a_save_your_card_page() {
    let app = TestApp::spawn().await;
    let base = app.stack.base_url().unwrap();
    let (status, _, page) = open(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/save-your-card\""), "{page}");
    let (status, _, page) = open(&format!("{base}/save-your-card")).await;
    assert_eq!(status, 200);
    assert!(page.contains("action=\"/save-your-card\""), "{page}");
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/save-your-card"))
        .form(&[("email", "saver@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let session = app
        .stripe()
        .checkout_sessions()
        .retrieve(&session_of(&location), &[])
        .await
        .unwrap();
    assert_eq!(format!("{:?}", session.mode), "Setup");
    assert_eq!(session.customer_email.as_deref(), Some("saver@example.com"));
    app.cleanup().await;
}
