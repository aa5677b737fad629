//! Errors of the broker connection itself (publishing has its own, [`crate::PublishError`]).

/// Why the broker could not be reached or prepared.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The AMQP URL does not parse.
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    /// Connecting, opening a channel or declaring the topology failed.
    #[error("RabbitMQ {during}: {source}")]
    Amqp {
        /// What we were doing.
        during: &'static str,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// A queue exists with another `x-quorum-initial-group-size` than the one configured.
    #[error(
        "quorum queue {queue} was created with another initial group size than {size}; the size \
         only applies when a queue is created: configure the size it was created with, and change \
         its replicas with rabbitmq-queues add_member/delete_member ({source})"
    )]
    GroupSizeMismatch {
        /// The queue.
        queue: String,
        /// The configured size.
        size: u32,
        /// RabbitMQ's refusal.
        #[source]
        source: lapin::Error,
    },
    /// The broker did not become ready before the deadline.
    #[error("RabbitMQ was not ready within {0:?}")]
    NotReady(std::time::Duration),
}

impl BrokerError {
    pub(crate) fn amqp(during: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
        move |source| BrokerError::Amqp { during, source }
    }
}
