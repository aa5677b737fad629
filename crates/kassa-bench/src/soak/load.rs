//! The load: setup sessions created through Stripe's API and completed as customers would,
//! back-office charges of the cards Kassa saved, and the injected permanent failures; all spread
//! over `--load-secs` and recorded for the checks.

use super::SoakArgs;
use anyhow::{bail, Context};
use kassa_broker::Topology;
use kassa_store::{NewCharge, Store};
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::CreateCheckoutSession;
use kassa_stripe::{Client, IdempotencyKey};
use kassa_stripe_sim::Simulator;
use rand::Rng;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Webhook events Stripe sends for one completed setup session and Kassa's handling of it
/// (session created, setup intent, completion, customer, attach, default card), measured on the
/// simulator; used only to size the run from `--events`.
const EVENTS_PER_SESSION: usize = 6;
/// Events of one successful off-session charge (PaymentIntent created and succeeded, charge succeeded).
const EVENTS_PER_CHARGE: usize = 3;
/// The card that attaches but declines every charge (Stripe's `pm_card_chargeCustomerFail`).
const DECLINING_CARD: &str = "pm_card_chargeCustomerFail";

/// Setup sessions to create: what `--events` leaves after the charges' events, at least 10.
pub fn sessions_wanted(args: &SoakArgs) -> usize {
    args.events
        .saturating_sub(args.charges * EVENTS_PER_CHARGE)
        .div_ceil(EVENTS_PER_SESSION)
        .max(10)
}

/// A session the soak created and completed, and whether the card it saved declines.
pub struct Session {
    pub id: String,
    pub declining: bool,
}

/// What the run created, shared between the load, the chaos controller and the checks.
pub struct Run {
    pub sim: Simulator,
    pub client: Client,
    pub store: Store,
    pub topology: Topology,
    pub sessions: Mutex<Vec<Session>>,
    /// Charge ids, and whether their card declines.
    pub charges: Mutex<Vec<(i64, bool)>>,
    /// Ids of the injected permanent failures: the only events allowed in the dead letters.
    pub poison: Mutex<Vec<String>>,
    pub webhook_url: String,
    pub webhook_secret: String,
    pub http: reqwest::Client,
}

/// A lock that a panicked holder did not spoil: the data are plain records.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Run {
    /// The injected permanent failure: a correctly signed live-mode event reaching this
    /// test-mode deployment (a webhook endpoint configured in the wrong mode). Kassa refuses
    /// to act on it ever ("test and live never mix") and dead-letters it at once.
    pub async fn inject_poison(&self, n: usize) -> anyhow::Result<()> {
        let id = format!("evt_soakpoison{:08x}{n}", rand::random::<u32>());
        let body = json!({
            "id": id, "object": "event", "type": "customer.updated", "livemode": true,
            "created": unix_now(), "api_version": kassa_stripe_sim::DEFAULT_API_VERSION,
            "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
            "data": {"object": {"id": format!("cus_soakpoison{n}"), "object": "customer", "livemode": true}},
        })
        .to_string();
        lock(&self.poison).push(id.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let signature =
                kassa_stripe::webhook::sign(&self.webhook_secret, unix_now(), body.as_bytes());
            let sent = self
                .http
                .post(&self.webhook_url)
                .header("Stripe-Signature", signature)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the injected event {id} was not accepted within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates a setup session through the API (retrying what the injected faults refuse, with
    /// the same Idempotency-Key) and completes it as the customer would.
    async fn session(&self, i: usize, declining: bool) -> anyhow::Result<()> {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            currency: Some("usd".into()),
            customer_email: Some(format!("soak-{i}@example.com")),
            success_url: Some("http://127.0.0.1/success".into()),
            ..Default::default()
        };
        let key = IdempotencyKey::new(format!("soak:session:{i}"))?;
        let mut tries = 0;
        let id = loop {
            match self.client.checkout_sessions().create(&params, &key).await {
                Ok(session) => break session.id,
                Err(error) if tries < 20 => {
                    tries += 1;
                    tracing::debug!(%error, "creating a soak session; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error).context("creating a setup session"),
            }
        };
        let card = if declining {
            DECLINING_CARD
        } else {
            "pm_card_visa"
        };
        self.sim
            .complete_checkout_session(&id, card)
            .map_err(|e| anyhow::anyhow!("completing {id}: {e}"))?;
        lock(&self.sessions).push(Session { id, declining });
        Ok(())
    }

    /// Customers Kassa has saved a card for (their session fulfilled), with whether it declines.
    async fn saved_cards(&self) -> anyhow::Result<Vec<(String, String, bool)>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, customer_id, payment_method_id FROM checkout_sessions \
             WHERE purpose = 'setup' AND customer_id IS NOT NULL AND payment_method_id IS NOT NULL",
        )
        .fetch_all(self.store.pool())
        .await?;
        let declining: HashSet<String> = lock(&self.sessions)
            .iter()
            .filter(|s| s.declining)
            .map(|s| s.id.clone())
            .collect();
        Ok(rows
            .into_iter()
            .map(|(session, customer, card)| {
                let d = declining.contains(&session);
                (customer, card, d)
            })
            .collect())
    }

    /// Submits charge `i` for a random customer with a saved card, as the back-office API does
    /// (`POST /api/charges` calls the same `submit_charge`).
    /// While PostgreSQL is away (`--postgres-crash`) the back office's submissions fail; like a
    /// client of `POST /api/charges`, it tries again under the same reference for up to a minute.
    pub async fn charge(&self, i: usize, route: &kassa_store::JobRoute) -> anyhow::Result<()> {
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        let cards = loop {
            match self.saved_cards().await {
                Ok(cards) if !cards.is_empty() => break cards,
                Ok(_) => {}
                Err(error) if std::time::Instant::now() > give_up => return Err(error),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (customer, card, declining) = cards[rand::rng().random_range(0..cards.len())].clone();
        let charge = NewCharge {
            reference: format!("soak-{i}"),
            customer_id: customer,
            payment_method_id: Some(card),
            amount: 500 + i as i64,
            currency: "usd".into(),
            description: Some("soak".into()),
            metadata: json!({}),
            livemode: false,
        };
        let record = loop {
            match self.store.submit_charge(route, &charge).await {
                Ok((record, _)) => break record,
                Err(error) if error.is_transient() && std::time::Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        lock(&self.charges).push((record.id, declining));
        Ok(())
    }
}

/// The two load tasks: sessions and charges, spread evenly over `--load-secs`.
pub struct Load {
    sessions: Option<JoinHandle<anyhow::Result<()>>>,
    charges: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    /// Starts feeding sessions and charges in.
    pub fn start(run: &Arc<Run>, args: &SoakArgs, load_secs: f64) -> Load {
        let sessions_wanted = sessions_wanted(args);
        let declining_every = if args.declining_share > 0.0 {
            (1.0 / args.declining_share).round().max(1.0) as usize
        } else {
            usize::MAX
        };
        let sessions = {
            let run = run.clone();
            tokio::spawn(async move {
                let gap = Duration::from_secs_f64(load_secs * 0.8 / sessions_wanted as f64);
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..sessions_wanted {
                    let run = run.clone();
                    // Every n-th customer (not the first: charges need good cards early) declines.
                    let declining = i % declining_every == declining_every - 1;
                    tasks.spawn(async move { run.session(i, declining).await });
                    tokio::time::sleep(gap).await;
                }
                while let Some(result) = tasks.join_next().await {
                    result??;
                }
                anyhow::Ok(())
            })
        };
        let charges = {
            let run = run.clone();
            let charges = args.charges;
            let route = kassa_core::charges::job_route(&run.topology);
            tokio::spawn(async move {
                // Charges start once the first customers have cards, and end with the load.
                tokio::time::sleep(Duration::from_secs_f64(load_secs * 0.15)).await;
                let gap = Duration::from_secs_f64(load_secs * 0.85 / charges.max(1) as f64);
                for i in 0..charges {
                    run.charge(i, &route).await?;
                    tokio::time::sleep(gap).await;
                }
                anyhow::Ok(())
            })
        };
        Load {
            sessions: Some(sessions),
            charges: Some(charges),
        }
    }

    /// Whether both tasks have finished; a task that failed ends the run (the other may wait
    /// for it for ever).
    pub async fn done(&mut self) -> anyhow::Result<bool> {
        for task in [&mut self.sessions, &mut self.charges] {
            if task.as_ref().is_some_and(|t| t.is_finished()) {
                if let Some(handle) = task.take() {
                    handle
                        .await
                        .context("a load task panicked")?
                        .context("feeding the load failed")?;
                }
            }
        }
        Ok(self.sessions.is_none() && self.charges.is_none())
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
