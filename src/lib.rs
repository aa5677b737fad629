//! kassa: the wiring of Kassa's crates into running processes. The `kassa` binary (main.rs) is
//! the command line over this; integration tests start the same [`stack::Stack`] in-process.
//!
//! Dependencies point one way: this crate → kassa-ingress / kassa-worker → kassa-stripe,
//! kassa-broker, kassa-store. It holds no business logic of its own.

pub mod customer_lookup;
pub mod fulfil;
pub mod stack;
