//! The pool-size rule (README, "Configuration"): how many PostgreSQL connections each part of a
//! process can hold at the same moment, so a pool set too small fails at start, naming what needs
//! the connections.

use anyhow::bail;

/// Back-office API requests (`/api/charges`): short queries, never a connection held across a
/// Stripe call.
pub const BACK_OFFICE_CONNECTIONS: u32 = 2;

/// What holds PostgreSQL connections in one process, for the pool-size rule (README,
/// "Configuration"). Each part counts the connections it can hold at the same moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolUse {
    /// The worker's `KASSA_WORKER_CONCURRENCY` and whether its events poller runs.
    pub worker: Option<(u32, bool)>,
    /// Merchant pages and payment confirmations (they hold a connection while calling Stripe).
    pub pages: bool,
    /// The back-office API (`KASSA_ADMIN_TOKEN`).
    pub admin_api: bool,
}

impl PoolUse {
    /// Each holder of connections: how many, and what (naming the variables that set it).
    pub fn parts(&self) -> Vec<(u32, String)> {
        let mut parts = Vec::new();
        if let Some((concurrency, poller)) = self.worker {
            parts.push((
                2 * concurrency,
                format!(
                    "2 × KASSA_WORKER_CONCURRENCY ({concurrency}): events and charge jobs, each \
                     holding a connection while it calls Stripe"
                ),
            ));
            parts.push((1, "the outbox relay".to_owned()));
            if poller {
                parts.push((
                    1,
                    "the events poller (KASSA_EVENTS_POLL_INTERVAL)".to_owned(),
                ));
            }
        }
        if self.pages {
            parts.push((
                kassa_api::PAGE_CALLS_IN_FLIGHT as u32,
                "merchant pages and payment confirmations in flight".to_owned(),
            ));
        }
        if self.admin_api {
            parts.push((
                BACK_OFFICE_CONNECTIONS,
                "the back-office API (KASSA_ADMIN_TOKEN)".to_owned(),
            ));
        }
        parts
    }

    /// Connections needed at most at once.
    pub fn needed(&self) -> u32 {
        self.parts().iter().map(|(n, _)| n).sum::<u32>().max(1)
    }

    /// The pool size for `command`: `configured` (KASSA_DATABASE_MAX_CONNECTIONS), or what is
    /// needed when it is not set. A configured pool smaller than the need is refused: handlers
    /// would wait for connections held by others across Stripe calls, and time out.
    pub fn pool_size(&self, command: &str, configured: Option<u32>) -> anyhow::Result<u32> {
        let needed = self.needed();
        match configured {
            None => Ok(needed),
            Some(size) if size >= needed => Ok(size),
            Some(size) => {
                let parts: Vec<String> = self
                    .parts()
                    .into_iter()
                    .map(|(n, what)| format!("{n} for {what}"))
                    .collect();
                bail!(
                    "KASSA_DATABASE_MAX_CONNECTIONS={size} is too small for `{command}`, which needs \
                     {needed}: {}. Raise KASSA_DATABASE_MAX_CONNECTIONS, lower \
                     KASSA_WORKER_CONCURRENCY, or leave KASSA_DATABASE_MAX_CONNECTIONS unset to get \
                     exactly {needed}",
                    parts.join(" + ")
                )
            }
        }
    }
}
