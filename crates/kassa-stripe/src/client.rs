//! The HTTP transport: authentication, the pinned API version, timeouts and retries.

use crate::error::StripeError;
use crate::form::Form;
use crate::idempotency::IdempotencyKey;
use crate::key::{ApiKey, KeyError, Mode};
use backon::{BackoffBuilder, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// The Stripe API version every request is pinned to (sent as `Stripe-Version`), so the shape of
/// responses does not change when the account's default version is upgraded.
pub const STRIPE_VERSION: &str = "2025-12-15.clover";

/// Stripe's API base URL, the default of `KASSA_STRIPE_API_BASE`.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// How to reach Stripe. Build with [`ClientConfig::new`] and override fields as needed.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `sk_…` or `rk_…` (a restricted key is recommended); publishable keys are refused.
    pub api_key: SecretString,
    /// Scheme, host and optional path prefix, e.g. `https://api.stripe.com` or a simulator's URL.
    pub api_base: String,
    /// Retries after the first attempt for network errors, 409, 429 and 5xx (default 3).
    pub max_retries: u32,
    /// Time allowed to open a connection (default 10 s).
    pub connect_timeout: Duration,
    /// Time allowed for one attempt, answer body included (default 80 s, as Stripe's libraries).
    pub timeout: Duration,
    /// The first retry's delay; each next one doubles, plus up to 100 % jitter (default 500 ms).
    pub initial_retry_delay: Duration,
    /// The longest backoff delay, and the cap on a `Retry-After` the server asks for (default 5 s).
    pub max_retry_delay: Duration,
    /// Requests per second this client sends at most, evenly spaced (default: no limit).
    /// Stripe allows about 100/s in live mode and 25/s in test mode per account; pacing below
    /// that avoids `rate_limit` 429s instead of paying for them with backoff.
    pub max_requests_per_second: Option<NonZeroU32>,
    /// Requests per second this client sends at most to any one endpoint (one named operation
    /// such as `POST /v1/payment_intents` or `GET /v1/customers/{id}`, whatever the id), evenly
    /// spaced (default: no limit). Stripe limits each endpoint to about 25/s besides the
    /// account-wide limit (docs: rate limits).
    pub max_requests_per_second_per_endpoint: Option<NonZeroU32>,
}

impl ClientConfig {
    /// Defaults for everything but the key: Stripe's API, 3 retries, 10 s / 80 s timeouts.
    pub fn new(api_key: SecretString) -> Self {
        ClientConfig {
            api_key,
            api_base: DEFAULT_API_BASE.to_owned(),
            max_retries: 3,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(80),
            initial_retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(5),
            max_requests_per_second: None,
            max_requests_per_second_per_endpoint: None,
        }
    }
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The API key is not a usable server-side key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The API base is not an http(s) URL without query or fragment.
    #[error(
        "invalid Stripe API base {0:?}: expected an http(s) URL such as https://api.stripe.com"
    )]
    ApiBase(String),
    /// The HTTP client could not be set up (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A Stripe API client; cheap to clone (one connection pool shared by the clones).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    key: ApiKey,
    /// Without a trailing slash, so `base + "/v1/…"` is the URL.
    api_base: String,
    max_retries: u32,
    initial_retry_delay: Duration,
    max_retry_delay: Duration,
    pace: Option<DefaultDirectRateLimiter>,
    endpoint_pace: Option<DefaultKeyedRateLimiter<String>>,
}

/// One failed attempt, with what the server said about retrying it.
struct Failure {
    error: StripeError,
    should_retry: Option<bool>,
    retry_after: Option<Duration>,
}

impl Client {
    /// Checks the key and base URL and builds the HTTP client. No request is made.
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        let key = ApiKey::parse(config.api_key)?;
        let api_base = config.api_base.trim_end_matches('/').to_owned();
        match Url::parse(&api_base) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.has_host()
                    && url.query().is_none()
                    && url.fragment().is_none() => {}
            _ => return Err(ConfigError::ApiBase(config.api_base)),
        }

        let mut auth = HeaderValue::try_from(format!("Bearer {}", key.expose()))
            .map_err(|_| ConfigError::Key(KeyError::Malformed))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert("Stripe-Version", HeaderValue::from_static(STRIPE_VERSION));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("kassa-stripe/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()
            .map_err(ConfigError::Http)?;

        Ok(Client {
            inner: Arc::new(Inner {
                http,
                key,
                api_base,
                max_retries: config.max_retries,
                initial_retry_delay: config.initial_retry_delay,
                max_retry_delay: config.max_retry_delay,
                // Burst 1: one request every 1/N s, never a burst the server's bucket must absorb.
                pace: config.max_requests_per_second.map(|n| {
                    RateLimiter::direct(Quota::per_second(n).allow_burst(NonZeroU32::MIN))
                }),
                endpoint_pace: config
                    .max_requests_per_second_per_endpoint
                    .map(|n| RateLimiter::keyed(Quota::per_second(n).allow_burst(NonZeroU32::MIN))),
            }),
        })
    }

    /// The key's kind (mode, restricted); never the key itself.
    pub fn api_key(&self) -> &ApiKey {
        &self.inner.key
    }

    /// Where requests go (`https://api.stripe.com`, or a simulator's address), without a
    /// trailing slash.
    pub fn api_base(&self) -> &str {
        &self.inner.api_base
    }

    /// Test or live, from the key: events whose `livemode` differs must be refused.
    pub fn mode(&self) -> Mode {
        self.inner.key.mode
    }

    /// `GET {api_base}{path}` with `query` form-encoded and `expand[i]` appended; retried on
    /// transient failures. `path` is taken as given (e.g. `/v1/balance`).
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &(impl Serialize + ?Sized),
        expand: &[&str],
    ) -> Result<T, StripeError> {
        let mut form = Form::from_params(query)?;
        form.expand(expand);
        self.execute(Method::GET, path, form, None).await
    }

    /// `POST {api_base}{path}` with `params` form-encoded and `expand[i]` appended, under the
    /// caller's idempotency key, which every retry repeats.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &(impl Serialize + ?Sized),
        key: &IdempotencyKey,
        expand: &[&str],
    ) -> Result<T, StripeError> {
        let mut form = Form::from_params(params)?;
        form.expand(expand);
        self.execute(Method::POST, path, form, Some(key)).await
    }

    async fn execute<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: Form,
        key: Option<&IdempotencyKey>,
    ) -> Result<T, StripeError> {
        let separator = if path.starts_with('/') { "" } else { "/" };
        let mut url = Url::parse(&format!("{}{separator}{path}", self.inner.api_base))
            .map_err(|e| StripeError::InvalidParams(format!("bad path {path:?}: {e}")))?;
        let body = if method == Method::GET {
            if !form.is_empty() {
                url.query_pairs_mut().extend_pairs(form.pairs());
            }
            None
        } else {
            Some(form.encode())
        };

        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.inner.initial_retry_delay)
            .with_max_delay(self.inner.max_retry_delay)
            .with_max_times(self.inner.max_retries as usize)
            .with_jitter()
            .build();
        let mut attempt = 1;
        loop {
            let failure = match self
                .attempt(&method, &url, body.as_ref(), key, attempt)
                .await
            {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            // Stripe-Should-Retry, when present, overrides our own idea of what is transient.
            let retry = failure
                .should_retry
                .unwrap_or_else(|| failure.error.is_transient());
            let Some(backoff) = retry.then(|| delays.next()).flatten() else {
                return Err(failure.error);
            };
            let delay = match failure.retry_after {
                Some(asked) => backoff.max(asked.min(self.inner.max_retry_delay)),
                None => backoff,
            };
            tracing::debug!(
                %method,
                path = url.path(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %failure.error,
                "retrying Stripe request"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&String>,
        key: Option<&IdempotencyKey>,
        attempt: u32,
    ) -> Result<T, Failure> {
        // The endpoint's pace first, then the account's: a request waiting for its endpoint
        // does not hold a slot of the account-wide pace meanwhile.
        if let Some(pace) = &self.inner.endpoint_pace {
            pace.until_key_ready(&operation(method, url.path())).await;
        }
        if let Some(pace) = &self.inner.pace {
            pace.until_ready().await;
        }
        let started = Instant::now();
        let mut request = self.inner.http.request(method.clone(), url.clone());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key.as_str());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.clone());
        }

        let transport = |err: reqwest::Error| {
            tracing::debug!(%method, path = url.path(), attempt, error = %err, "Stripe request failed");
            Failure {
                // Drop the URL: its query may hold customer data such as an e-mail filter.
                error: StripeError::Transport(err.without_url()),
                should_retry: None,
                retry_after: None,
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let request_id = header("request-id").map(str::to_owned);
        let should_retry = match header("stripe-should-retry") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let retry_after = header(RETRY_AFTER.as_str())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok());
        let replayed = header("idempotent-replayed") == Some("true");
        let bytes = response.bytes().await.map_err(transport)?;

        tracing::debug!(
            %method,
            path = url.path(),
            status,
            request_id = request_id.as_deref().unwrap_or(""),
            idempotency_key = key.map(IdempotencyKey::as_str).unwrap_or(""),
            replayed,
            attempt,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Stripe request"
        );

        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|source| Failure {
                error: StripeError::Decode {
                    status,
                    request_id,
                    source,
                },
                should_retry: None,
                retry_after: None,
            });
        }
        let error = StripeError::from_response(status, &bytes, request_id);
        if let StripeError::Card { code, .. } = &error {
            // HTTP 402: the rate behind the "402 rate" panel and alert of deploy/.
            let code = code.clone().unwrap_or_else(|| "none".to_owned());
            metrics::counter!("kassa_stripe_card_errors_total", "code" => code).increment(1);
        }
        Err(Failure {
            error,
            should_retry,
            retry_after,
        })
    }
}

/// The words of Stripe's API paths Kassa calls; any other segment is an id.
const PATH_WORDS: &[&str] = &[
    "attach",
    "balance",
    "cancel",
    "capture",
    "charges",
    "checkout",
    "confirm",
    "customers",
    "detach",
    "events",
    "expire",
    "line_items",
    "payment_intents",
    "payment_methods",
    "prices",
    "products",
    "refunds",
    "search",
    "sessions",
    "setup_intents",
    "v1",
];

/// The endpoint a request counts toward, as Stripe names them for rate limits: the method and
/// the path with each id replaced by `{id}` ("Stripe treats each named API operation as a
/// separate endpoint … Requests to `GET /v1/payment_intents/{id}` for different PaymentIntent IDs
/// count toward the same endpoint limit", docs: rate limits).
pub fn operation(method: &Method, path: &str) -> String {
    let mut name = method.as_str().to_owned();
    name.push(' ');
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        name.push('/');
        name.push_str(if PATH_WORDS.contains(&segment) {
            segment
        } else {
            "{id}"
        });
    }
    name
}

/// Builds `/seg/seg/…` from literal segments and ids, percent-encoding what is not URL-safe and
/// refusing ids that would change the path (empty, `.`, `..`), e.g. `["v1", "customers", id]`.
pub(crate) fn path(segments: &[&str]) -> Result<String, StripeError> {
    let mut path = String::new();
    for segment in segments {
        if segment.is_empty() || *segment == "." || *segment == ".." {
            return Err(StripeError::InvalidParams(format!(
                "{segment:?} cannot be an id in a URL path"
            )));
        }
        path.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                path.push(char::from(byte));
            } else {
                let _ = write!(path, "%{byte:02X}");
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str) -> ClientConfig {
        ClientConfig::new(SecretString::from(key))
    }

    #[test]
    fn builds_with_secret_or_restricted_keys_only() {
        let client = Client::new(config("rk_live_abc")).unwrap();
        assert_eq!(client.mode(), Mode::Live);
        assert!(client.api_key().restricted);
        assert!(matches!(
            Client::new(config("pk_test_abc")),
            Err(ConfigError::Key(KeyError::Publishable))
        ));
    }

    #[test]
    fn api_base_must_be_http_without_query() {
        for good in [
            "https://api.stripe.com",
            "http://127.0.0.1:12111/",
            "http://sim/prefix",
        ] {
            let cfg = ClientConfig {
                api_base: good.to_owned(),
                ..config("sk_test_abc")
            };
            assert!(Client::new(cfg).is_ok(), "{good}");
        }
        for bad in ["api.stripe.com", "ftp://x", "https://x/?a=b", ""] {
            let cfg = ClientConfig {
                api_base: bad.to_owned(),
                ..config("sk_test_abc")
            };
            assert!(
                matches!(Client::new(cfg), Err(ConfigError::ApiBase(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let client = Client::new(config("sk_test_TopSecretValue")).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("TopSecretValue"), "{debug}");
        let cfg = format!("{:?}", config("sk_test_TopSecretValue"));
        assert!(!cfg.contains("TopSecretValue"), "{cfg}");
    }

    #[test]
    fn operations_name_endpoints_whatever_the_id() {
        assert_eq!(
            operation(&Method::GET, "/v1/customers/cus_Abc123"),
            "GET /v1/customers/{id}"
        );
        assert_eq!(
            operation(&Method::GET, "/v1/customers/cus_Other9"),
            "GET /v1/customers/{id}"
        );
        assert_eq!(
            operation(&Method::POST, "/v1/payment_methods/pm_1/attach"),
            "POST /v1/payment_methods/{id}/attach"
        );
        assert_eq!(
            operation(&Method::POST, "/v1/payment_intents"),
            "POST /v1/payment_intents"
        );
        assert_eq!(
            operation(&Method::GET, "/v1/checkout/sessions/cs_test_a1"),
            "GET /v1/checkout/sessions/{id}"
        );
    }

    #[test]
    fn paths_encode_ids_and_refuse_traversal() {
        assert_eq!(
            path(&["v1", "checkout", "sessions", "cs_test_a1"]).unwrap(),
            "/v1/checkout/sessions/cs_test_a1"
        );
        assert_eq!(
            path(&["v1", "customers", "a/b?c d"]).unwrap(),
            "/v1/customers/a%2Fb%3Fc%20d"
        );
        for bad in ["", ".", ".."] {
            assert!(matches!(
                path(&["v1", "customers", bad]),
                Err(StripeError::InvalidParams(_))
            ));
        }
    }
}
