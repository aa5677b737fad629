//! Kassa's integration tests, one binary: real RabbitMQ (KASSA_AMQP_URL, the default local
//! broker, or a testcontainers fallback), fresh exchange and queue names per test.

mod charges;
mod charges_cli;
mod cli;
mod consumer;
mod ingress;
mod official_library;
mod support;
mod worker;
