//! The long-running processes and their neighbours: `kassa serve` (ingress, merchant HTTP and
//! worker in one process), `kassa ingress`, `kassa worker`, `kassa migrate`, `kassa stripe-sim`.
//! Each reads its configuration (crate::config) and starts a [`Stack`] until SIGINT/SIGTERM.

use crate::config::{self, IngressArgs, ServeArgs, StoreArgs, StoredSettings, WorkerCommandArgs};
use anyhow::Context;
use kassa::stack::{Stack, StackConfig, StripeTarget};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The process's configuration with the stored settings filled in. A configuration the
/// environment alone makes invalid fails first, before PostgreSQL is asked anything (or waited
/// for) — unless a master key is set, when the stored settings may be what completes it. A valid
/// one is checked against the stored settings too: one that cannot be opened refuses the start.
/// `None`: SIGINT/SIGTERM came while waiting for PostgreSQL ([`wait_for_database`]).
async fn with_stored_settings<A>(
    args: &mut A,
    database_url: &str,
    master_key: Option<kassa_core::settings::MasterKey>,
    signal: &CancellationToken,
    apply: impl Fn(&mut A, &StoredSettings),
    build: impl Fn(&A) -> anyhow::Result<StackConfig>,
) -> anyhow::Result<Option<StackConfig>> {
    let from_environment = build(args);
    if from_environment.is_err() && master_key.is_none() {
        return from_environment.map(Some);
    }
    if !wait_for_database(database_url, signal).await {
        return Ok(None);
    }
    let stored = StoredSettings::load(database_url, master_key).await?;
    apply(args, &stored);
    build(args).map(Some)
}

/// Starts watching for SIGINT/SIGTERM for the whole life of a serving command: the token is
/// cancelled by the first signal, whenever it comes. One watcher per process, installed before
/// anything else: once a handler is installed a signal no longer ends the process by itself, so
/// a signal that arrived while nobody watched (during start-up) would be lost.
fn watch_signals() -> CancellationToken {
    let signal = CancellationToken::new();
    tokio::spawn(config::cancel_on_signal(signal.clone()));
    signal
}

/// Waits, with pauses growing to 10 s, until PostgreSQL at `database_url` accepts connections,
/// so a long-running process started before its database (a host booting, a failover) waits for
/// it instead of exiting. Any other answer (a database not created yet, wrong credentials, a TLS
/// failure) ends the wait: the start-up that follows creates the database or reports the error. `false`:
/// SIGINT/SIGTERM came first (`signal`, from [`watch_signals`]).
async fn wait_for_database(database_url: &str, signal: &CancellationToken) -> bool {
    use backon::BackoffBuilder;
    let mut pauses = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .build();
    loop {
        if signal.is_cancelled() {
            return false;
        }
        match kassa_store::Store::probe(database_url).await {
            // A TLS failure is a configuration to fix (sslmode against a server without TLS, a
            // certificate), not a server still starting: the start-up that follows reports it.
            Err(kassa_store::StoreError::Unavailable(error))
                if !matches!(error, sqlx::Error::Tls(_)) =>
            {
                let pause = pauses.next().unwrap_or(Duration::from_secs(10));
                warn!(
                    %error,
                    database = %kassa_broker::connection::redact_url(database_url),
                    retry_in_ms = pause.as_millis() as u64,
                    "PostgreSQL is unreachable; waiting for it before starting"
                );
                tokio::select! {
                    _ = signal.cancelled() => return false,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            _ => return true,
        }
    }
}

/// Whether SIGINT/SIGTERM came during start-up: then the process stops before it serves.
fn stop_requested(signal: &CancellationToken) -> bool {
    if signal.is_cancelled() {
        info!("shutdown requested while starting: stopped before serving");
        return true;
    }
    false
}

/// Runs `kassa serve`.
pub async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let signal = watch_signals();
    let database_url = args.store.database_url.clone();
    let master_key = args.master_key.key()?;
    let Some(config) = with_stored_settings(
        &mut args,
        &database_url,
        master_key,
        &signal,
        ServeArgs::apply_stored,
        ServeArgs::stack_config,
    )
    .await?
    else {
        return Ok(());
    };
    match &config.stripe {
        Some(StripeTarget::Embedded(_)) => info!(
            "kassa serve: no Stripe key (KASSA_STRIPE_API_KEY, KASSA_STRIPE_TEST_SECRET_KEY, KASSA_STRIPE_LIVE_SECRET_KEY), so running in TEST MODE on the embedded Stripe simulator, which delivers webhooks to this process"
        ),
        _ => info!(api_base = %args.stripe_api_base, "kassa serve: using Stripe at KASSA_STRIPE_API_BASE"),
    }
    if stop_requested(&signal) {
        return Ok(());
    }
    let mut stack = Stack::start(config).await?;
    if let Some(sim) = &stack.sim {
        info!(stripe_api_base = %sim.base_url(), "embedded Stripe simulator listening (hosted checkout pages under /c/pay/)");
    }
    if let Some(address) = stack.address {
        info!(shop = %format!("http://{address}/"), "the merchant page: Buy, pay on Checkout, land on /success");
    }
    run_until_signal(&mut stack, &signal).await;
    stack.stop().await;
    info!("kassa serve stopped");
    Ok(())
}

/// Runs `kassa ingress`.
pub async fn ingress(mut args: IngressArgs) -> anyhow::Result<()> {
    let signal = watch_signals();
    let config = if args.reads_stored_settings() {
        let database_url = args.api.database_url.clone();
        let master_key = args.master_key.key()?;
        let stored = with_stored_settings(
            &mut args,
            &database_url,
            master_key,
            &signal,
            IngressArgs::apply_stored,
            IngressArgs::stack_config,
        )
        .await?;
        let Some(config) = stored else {
            return Ok(());
        };
        config
    } else {
        args.stack_config()?
    };
    let apis = config.admin_token.is_some();
    if let Some(database_url) = &config.database_url {
        if !args.reads_stored_settings() && !wait_for_database(database_url, &signal).await {
            return Ok(());
        }
    }
    if stop_requested(&signal) {
        return Ok(());
    }
    let mut stack = Stack::start(config.clone()).await?;
    let address = stack.address.context("the ingress has an address")?;
    info!(
        listen = %address,
        webhook_url = %format!("http://{address}/webhooks/stripe"),
        secret_source = %args.webhook.secret_source(),
        test_secrets = config.webhook_secrets.test.len(),
        live_secrets = config.webhook_secrets.live.len(),
        amqp_url = %kassa_broker::connection::redact_url(&args.webhook.broker.amqp_url),
        apis,
        "kassa ingress listening"
    );
    run_until_signal(&mut stack, &signal).await;
    stack.stop().await;
    info!("kassa ingress stopped");
    Ok(())
}

/// `kassa worker`'s configuration from its flags and variables.
fn worker_stack_config(args: &WorkerCommandArgs) -> anyhow::Result<StackConfig> {
    let db_max_connections = args
        .worker
        .pool_use()
        .pool_size("kassa worker", args.store.database_max_connections)?;
    let stripe = args.stripe.target()?.context(
        "KASSA_STRIPE_API_KEY (or KASSA_STRIPE_TEST_SECRET_KEY / KASSA_STRIPE_LIVE_SECRET_KEY) is required for `kassa worker` (`kassa serve` without a key runs on the embedded simulator)",
    )?;
    if let Some(keys) = args.stripe.keys()? {
        config::warn_standard_keys(&keys.keys);
    }
    let master_key = args.master_key.key()?;
    Ok(StackConfig {
        listen: Some(args.listen),
        metrics_listen: Some(args.metrics_listen),
        webhooks: false,
        broker: args.broker.config()?,
        http: args.http.limits(),
        database_url: Some(args.store.database_url.clone()),
        db_max_connections,
        stripe: Some(stripe),
        stripe_max_rps: args.stripe.pace.stripe_max_rps,
        stripe_endpoint_rps: args.stripe.pace.endpoint_rps(),
        webhook_secrets: Default::default(),
        webhook_tolerance: Duration::from_secs(300),
        worker: Some(args.worker.config()?),
        admin_token: None,
        public_url: String::new(),
        publishable_keys: Default::default(),
        public_rate_limit: None,
        trusted_proxies: Vec::new(),
        default_currency: kassa_stripe::money::Currency::usd(),
        settings_reload: args.reload.reload(
            master_key.as_ref(),
            &args.from_env,
            &[
                kassa_core::settings::SettingName::SmtpUrl,
                kassa_core::settings::SettingName::SmtpConnections,
            ],
            args.worker.mailer_options(),
            Vec::new(),
        ),
        master_key,
    })
}

/// Runs `kassa worker`.
pub async fn worker(mut args: WorkerCommandArgs) -> anyhow::Result<()> {
    let signal = watch_signals();
    let database_url = args.store.database_url.clone();
    let master_key = args.master_key.key()?;
    let Some(config) = with_stored_settings(
        &mut args,
        &database_url,
        master_key,
        &signal,
        WorkerCommandArgs::apply_stored,
        worker_stack_config,
    )
    .await?
    else {
        return Ok(());
    };
    let db_max_connections = config.db_max_connections;
    if stop_requested(&signal) {
        return Ok(());
    }
    let mut stack = Stack::start(config).await?;
    info!(
        health = %format!("http://{}/healthz", stack.address.map_or_else(|| args.listen.to_string(), |a| a.to_string())),
        concurrency = args.worker.worker_concurrency,
        prefetch = args.worker.worker_prefetch,
        database_connections = db_max_connections,
        stripe_api_base = %args.stripe.stripe_api_base,
        "kassa worker started"
    );
    run_until_signal(&mut stack, &signal).await;
    stack.stop().await;
    info!("kassa worker stopped");
    Ok(())
}

/// Runs `kassa migrate`.
pub async fn migrate(args: StoreArgs) -> anyhow::Result<()> {
    let store = kassa_store::Store::connect(&args.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "migrating KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&args.database_url)
            )
        })?;
    store.close().await;
    info!("database ready and migrated");
    Ok(())
}

/// Runs `kassa stripe-sim`.
pub async fn stripe_sim(args: config::StripeSimArgs) -> anyhow::Result<()> {
    let sim_config = args.sim_config()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(config::cancel_on_signal(shutdown.clone()));
    info!(listen = %sim_config.listen, webhook_endpoints = ?sim_config.webhook_endpoints, "kassa stripe-sim starting (test and live mode: any sk_test_ or sk_live_ key)");
    kassa_stripe_sim::serve(sim_config, shutdown.cancelled_owned())
        .await
        .context("running the Stripe simulator")
}

/// Waits for SIGINT/SIGTERM (`signal`, from [`watch_signals`]; at once if one came during
/// start-up) or a part failing on its own.
async fn run_until_signal(stack: &mut Stack, signal: &CancellationToken) {
    tokio::select! {
        _ = signal.cancelled() => {}
        _ = stack.failed() => tracing::error!("a part of Kassa stopped unexpectedly; shutting down"),
    }
}
