//! One module per `kassa` subcommand (or family of them); main.rs dispatches to them.

pub mod charges;
pub mod connector;
pub mod customers;
pub mod demo;
pub mod dlq;
pub mod outbox;
pub mod reconcile;
pub mod serve;
pub mod settings;
pub mod status;
pub mod widgets;
