//! The worker's settings (`KASSA_WORKER_*`, SMTP, the events poller, the outbox relay) and the
//! durations they are given in.

use super::PoolUse;
use clap::Args;
use kassa_worker::WorkerConfig;
use std::time::Duration;

/// How much work a worker takes on.
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    /// Events handled at once by this process.
    #[arg(long, env = "KASSA_WORKER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub worker_concurrency: u32,
    /// Unacknowledged messages RabbitMQ sends ahead to this process.
    #[arg(long, env = "KASSA_WORKER_PREFETCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_prefetch: u16,
    /// Kassa's public base URL: re-pay links send customers back to its pages.
    #[arg(
        long,
        env = "KASSA_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: url::Url,
    /// SMTP server for re-pay e-mails: `smtps://user:pass@host` (TLS), `smtp://…` (STARTTLS),
    /// `smtp://host:port?tls=none` (a local sink). Not set: alerts are not e-mailed.
    #[arg(long, env = "KASSA_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// More SMTP connections, by name: `billing=smtps://user:pass@host,ops=smtp://…` (a comma
    /// in a URL is written %2C). A payment confirmation's `mail_connection` picks one; without
    /// one, mail goes through KASSA_SMTP_URL.
    #[arg(long, env = "KASSA_SMTP_CONNECTIONS", hide_env_values = true)]
    pub smtp_connections: Option<String>,
    /// The sender of Kassa's e-mails.
    #[arg(long, env = "KASSA_MAIL_FROM", default_value = kassa_worker::smtp::DEFAULT_FROM)]
    pub mail_from: String,
    /// The merchant's address for "payment received" notifications (needs KASSA_SMTP_URL).
    #[arg(long, env = "KASSA_NOTIFY_EMAIL")]
    pub notify_email: Option<String>,
    /// How often to poll Stripe's /v1/events for events whose webhooks never arrived (`15s`,
    /// `1m`, or `0`/`off` to disable); found events are published once, through the inbox.
    #[arg(long, env = "KASSA_EVENTS_POLL_INTERVAL", default_value = "15s", value_parser = parse_poll_interval)]
    pub events_poll_interval: PollInterval,
    /// How far back the events poller looks on its very first start (later starts resume from
    /// the cursor saved in PostgreSQL); at most 30 days, Stripe's event retention.
    #[arg(long, env = "KASSA_EVENTS_POLL_LOOKBACK", default_value = "24h", value_parser = parse_lookback)]
    pub events_poll_lookback: Duration,
    /// How long published outbox messages are kept before the relay deletes them (`30d`;
    /// `off` keeps them). At least a day: a kept message's id stops the same notification from
    /// being queued twice when two events about one object arrive apart.
    #[arg(long, env = "KASSA_OUTBOX_RETENTION", default_value = "30d", value_parser = parse_retention)]
    pub outbox_retention: Retention,
    /// How long processed Stripe events stay in the inbox (`stripe_events`) before the relay
    /// deletes them (`35d`; `off` keeps them). More than 30 days, the longest Stripe keeps an
    /// event: no event Stripe can still deliver, or `kassa reconcile` list, finds its row gone.
    #[arg(long, env = "KASSA_INBOX_RETENTION", default_value = "35d", value_parser = parse_inbox_retention)]
    pub inbox_retention: Retention,
}

/// `KASSA_OUTBOX_RETENTION`: `None` keeps published messages.
#[derive(Clone, Copy, Debug)]
pub struct Retention(pub Option<Duration>);

/// `KASSA_OUTBOX_RETENTION`: a duration of at least a day, or `off`.
fn parse_retention(text: &str) -> Result<Retention, String> {
    if matches!(text.trim(), "off" | "false" | "none" | "0") {
        return Ok(Retention(None));
    }
    let retention = parse_duration(text).map_err(|e| format!("KASSA_OUTBOX_RETENTION: {e}"))?;
    if retention < Duration::from_secs(86_400) {
        return Err(format!(
            "KASSA_OUTBOX_RETENTION: {text:?} is less than a day; published messages must outlive \
             the events that may announce the same object again (give 1d or more, or off)"
        ));
    }
    Ok(Retention(Some(retention)))
}

/// `KASSA_INBOX_RETENTION`: a duration of more than 30 days, or `off`.
fn parse_inbox_retention(text: &str) -> Result<Retention, String> {
    if matches!(text.trim(), "off" | "false" | "none" | "0") {
        return Ok(Retention(None));
    }
    let retention = parse_duration(text).map_err(|e| format!("KASSA_INBOX_RETENTION: {e}"))?;
    if retention <= Duration::from_secs(30 * 86_400) {
        return Err(format!(
            "KASSA_INBOX_RETENTION: {text:?} is not more than 30 days; Stripe keeps events for 30 \
             days, and an event whose inbox row is gone would be handled again (give 31d or \
             more, or off)"
        ));
    }
    Ok(Retention(Some(retention)))
}

/// A duration such as `90`, `90s`, `15m`, `24h` or `7d` (plain numbers are seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// `KASSA_EVENTS_POLL_INTERVAL`: `None` when polling is off.
#[derive(Clone, Copy, Debug)]
pub struct PollInterval(pub Option<Duration>);

/// `KASSA_EVENTS_POLL_INTERVAL`: a duration, `0` or `off` for no polling.
fn parse_poll_interval(text: &str) -> Result<PollInterval, String> {
    if matches!(text.trim(), "off" | "false" | "none") {
        return Ok(PollInterval(None));
    }
    let interval = parse_duration(text).map_err(|e| format!("KASSA_EVENTS_POLL_INTERVAL: {e}"))?;
    Ok(PollInterval(Some(interval).filter(|d| !d.is_zero())))
}

/// A look-back window within Stripe's 30 days of events.
pub fn parse_lookback(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window > Duration::from_secs(30 * 86_400) {
        return Err("Stripe keeps events for 30 days: give at most 30d".into());
    }
    Ok(window)
}

impl WorkerArgs {
    /// What this worker holds in connections (the pool rule's worker part).
    pub fn pool_use(&self) -> PoolUse {
        PoolUse {
            worker: Some((
                self.worker_concurrency,
                self.events_poll_interval.0.is_some(),
            )),
            ..PoolUse::default()
        }
    }

    /// The sender and time limit of every SMTP connection.
    pub fn mailer_options(&self) -> kassa_worker::smtp::MailerOptions {
        kassa_worker::smtp::MailerOptions {
            from: self.mail_from.clone(),
            ..Default::default()
        }
    }

    /// The worker configuration these flags describe; a bad SMTP setting fails here.
    pub fn config(&self) -> anyhow::Result<WorkerConfig> {
        let mailer = match self.smtp_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                let mailer = kassa_worker::smtp::Mailer::from_url_with(url, self.mailer_options())
                    .map_err(|e| anyhow::anyhow!("KASSA_SMTP_URL / KASSA_MAIL_FROM: {e}"))?;
                Some(std::sync::Arc::new(mailer))
            }
            None => None,
        };
        let named = match self
            .smtp_connections
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            Some(text) => kassa_worker::smtp::parse_connections(text, &self.mailer_options())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            None => Default::default(),
        };
        Ok(WorkerConfig {
            prefetch: self.worker_prefetch,
            concurrency: self.worker_concurrency as usize,
            public_url: self.public_url.as_str().trim_end_matches('/').to_owned(),
            mail: kassa_worker::smtp::MailConnections::new(kassa_worker::smtp::ConnectionSet {
                default: mailer,
                named,
            }),
            notify_email: match self.notify_email.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(address) => {
                    kassa_worker::smtp::Mailer::check_address(address)
                        .map_err(|e| anyhow::anyhow!("KASSA_NOTIFY_EMAIL: {e}"))?;
                    Some(address.to_owned())
                }
            },
            relay: kassa_worker::relay::RelayConfig {
                retention: self.outbox_retention.0,
                inbox_retention: self.inbox_retention.0,
            },
            events_poller: self.events_poll_interval.0.map(|interval| {
                kassa_worker::poller::PollerConfig {
                    interval,
                    first_lookback: self.events_poll_lookback,
                    ..Default::default()
                }
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_outlives_stripes_thirty_days_of_events() {
        assert!(parse_inbox_retention("30d").is_err());
        assert!(parse_inbox_retention("7d").is_err());
        assert_eq!(
            parse_inbox_retention("31d").unwrap().0,
            Some(Duration::from_secs(31 * 86_400))
        );
        assert_eq!(parse_inbox_retention("off").unwrap().0, None);
    }
}
