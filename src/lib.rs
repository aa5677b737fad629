//! kassa: the wiring of Kassa's crates into running processes. The `kassa` binary (main.rs) is
//! the command line over this; integration tests start the same [`stack::Stack`] in-process.
//!
//! - [`stack`]: one process — the embedded simulator if asked, PostgreSQL, RabbitMQ, the ingress
//!   with the merchant's HTTP, the worker — started and stopped in order.
//! - [`telemetry`]: tracing, the one list of every metric Kassa exports, and the health routes of
//!   a process that takes no webhooks.
//!
//! Dependencies point one way: this crate → kassa-ingress / kassa-api / kassa-worker →
//! kassa-core → kassa-stripe, kassa-broker, kassa-store. It holds no business logic of its own.

pub mod stack;
pub mod telemetry;
