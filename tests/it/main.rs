//! Kassa's integration tests, one binary: real RabbitMQ (KASSA_AMQP_URL, the default local
//! broker, or a testcontainers fallback), fresh exchange and queue names per test.

mod browser;
mod charge_attempts;
mod charges;
mod charges_cli;
mod checkout;
mod cli;
mod commit_cut;
mod connector;
mod consumer;
mod customers;
mod database_outage;
mod deploy;
mod ingress;
mod mode_per_call;
mod modes;
mod official_library;
mod outbox;
mod payment_options;
mod routes;
mod save_card;
mod secrets;
mod settings;
mod stripe_calls;
mod stripe_cli;
mod support;
mod topology;
mod triggers;
mod widget;
mod worker;
