//! Kassa's integration tests, one binary: real RabbitMQ (KASSA_AMQP_URL, the default local
//! broker, or a testcontainers fallback), fresh exchange and queue names per test.

mod browser;
mod charge_attempts;
mod charges;
mod charges_cli;
mod checkout;
mod cli;
mod connector;
mod consumer;
mod customers;
mod deploy;
mod ingress;
mod official_library;
mod outbox;
mod payment_options;
mod secrets;
mod settings;
mod stripe_cli;
mod support;
mod topology;
mod triggers;
mod worker;
