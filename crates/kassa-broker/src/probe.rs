//! Questions asked of RabbitMQ without declaring anything, for tools that must not create what
//! they look for (a `kassa charges import` under a mistyped `KASSA_AMQP_PREFIX` must be refused,
//! not given a fresh, consumer-less exchange that swallows its jobs).

use crate::consumer::is_not_found;
use crate::BrokerError;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::ExchangeKind;

/// Whether exchange `name` exists on the broker at `url` (the first answering node of a
/// comma-separated list): a passive `exchange.declare`, which RabbitMQ answers with
/// `404 NOT_FOUND` (closing the channel) for a missing exchange and never creates one.
pub async fn exchange_exists(url: &str, name: &str) -> Result<bool, BrokerError> {
    let connection = crate::connection::connect_first(url).await?;
    let answer = async {
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::amqp("channel.open"))?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(()) => {
                let _ = channel.close(200, "exchange checked".into()).await;
                Ok(true)
            }
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(BrokerError::Amqp {
                during: "exchange.declare (passive)",
                source: error,
            }),
        }
    }
    .await;
    let _ = connection.close(200, "exchange checked".into()).await;
    answer
}
