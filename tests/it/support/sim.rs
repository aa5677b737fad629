//! Every call a test makes to the Stripe simulator over HTTP, in one place: its `/_sim/…`
//! controls (as people and Stripe's CLI drive it) and reads of its `/v1` API as the test's own
//! Stripe account. (A test in the same process may also use the simulator's Rust handle,
//! `TestApp::sim()`, for faults and the request log.)

use serde_json::Value;

/// The API key tests use against a simulator (any `sk_test_` key works there).
pub const TEST_API_KEY: &str = "sk_test_kassa_tests";

/// The live-mode key tests use against a simulator: a restricted one, as recommended (any
/// `sk_live_`/`rk_live_` key opens the simulator's live mode).
pub const LIVE_API_KEY: &str = "rk_live_kassa_tests";

/// The publishable key of [`TEST_API_KEY`]'s mode that two-mode apps hand out.
pub const TEST_PUBLISHABLE_KEY: &str = "pk_test_kassa_tests";

/// The publishable key of [`LIVE_API_KEY`]'s mode that two-mode apps hand out.
pub const LIVE_PUBLISHABLE_KEY: &str = "pk_live_kassa_tests";

/// Sends a `/v1` request as the test's Stripe account; Stripe's JSON answer.
async fn as_account(request: reqwest::RequestBuilder) -> Value {
    let response = request.bearer_auth(TEST_API_KEY).send().await.unwrap();
    response.json().await.unwrap()
}

/// `GET {base}{path}` of the simulator's `/v1` API with `query`, as raw JSON.
pub async fn get(base: &str, path: &str, query: &[(&str, &str)]) -> Value {
    as_account(
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .query(query),
    )
    .await
}

/// The `data` of a `/v1` list at `path` (one page of up to 100), as raw JSON.
pub async fn list(base: &str, path: &str, query: &[(&str, &str)]) -> Vec<Value> {
    let mut query = query.to_vec();
    if !query.iter().any(|(name, _)| *name == "limit") {
        query.push(("limit", "100"));
    }
    let list = get(base, path, &query).await;
    list["data"].as_array().cloned().unwrap_or_default()
}

/// `POST {base}{path}` of the simulator's `/v1` API with a form body, as raw JSON.
pub async fn post_form(base: &str, path: &str, form: &[(&str, &str)]) -> Value {
    as_account(
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .form(form),
    )
    .await
}

/// `DELETE {base}{path}` of the simulator's `/v1` API, as raw JSON.
pub async fn delete(base: &str, path: &str) -> Value {
    as_account(reqwest::Client::new().delete(format!("{base}{path}"))).await
}

/// Lets `seconds` pass on Stripe's side: `POST /_sim/clock/advance`.
pub async fn advance_clock(base: &str, seconds: u32) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{base}/_sim/clock/advance"))
        .json(&serde_json::json!({ "seconds": seconds }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// A card that pays in `mode` on the simulator: Stripe's test Visa, or the simulator's live card
/// (Stripe declines test cards in live mode).
pub fn card_of(mode: kassa_stripe::Mode) -> &'static str {
    match mode {
        kassa_stripe::Mode::Test => "pm_card_visa",
        kassa_stripe::Mode::Live => "pm_card_simulatorLive",
    }
}

/// The fingerprint the simulator's request log shows for the tests' key of `mode`.
pub fn fingerprint_of(mode: kassa_stripe::Mode) -> String {
    kassa_stripe_sim::key_fingerprint(match mode {
        kassa_stripe::Mode::Test => TEST_API_KEY,
        kassa_stripe::Mode::Live => LIVE_API_KEY,
    })
}
