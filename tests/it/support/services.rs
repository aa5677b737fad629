//! Where the tests find RabbitMQ: `KASSA_AMQP_URL`, else the local broker at the default URL,
//! else (no broker answers and Docker can run images) a testcontainers RabbitMQ.

use std::time::Duration;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::sync::OnceCell;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The AMQP URL every test uses; decided once per test binary.
pub async fn amqp_url() -> String {
    static URL: OnceCell<(String, Option<ContainerAsync<GenericImage>>)> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("KASSA_AMQP_URL") {
            return (url, None);
        }
        if answers("127.0.0.1:5672").await {
            return (DEFAULT_AMQP_URL.to_owned(), None);
        }
        // Fallback: a throwaway broker in Docker. Kept in the static so it lives as long as the
        // test binary; the testcontainers reaper removes it afterwards.
        let container = GenericImage::new("rabbitmq", "3.13-alpine")
            .with_exposed_port(5672.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
            .start()
            .await
            .expect(
                "no RabbitMQ at KASSA_AMQP_URL or 127.0.0.1:5672, and Docker could not start one",
            );
        let port = container
            .get_host_port_ipv4(5672)
            .await
            .expect("container port");
        (
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            Some(container),
        )
    })
    .await
    .0
    .clone()
}

async fn answers(address: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The PostgreSQL server tests use: `KASSA_DATABASE_URL`'s server, the local default, or (none
/// answers and Docker can run images) a testcontainers PostgreSQL.
async fn database_server() -> url::Url {
    static SERVER: OnceCell<(String, Option<ContainerAsync<GenericImage>>)> = OnceCell::const_new();
    let server = SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("KASSA_DATABASE_URL") {
                return (url, None);
            }
            if answers("127.0.0.1:5432").await {
                return (kassa_store::DEFAULT_DATABASE_URL.to_owned(), None);
            }
            let container = GenericImage::new("postgres", "16-alpine")
                .with_exposed_port(5432.tcp())
                .with_wait_for(WaitFor::message_on_stderr("database system is ready to accept connections"))
                .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
                .start()
                .await
                .expect("no PostgreSQL at KASSA_DATABASE_URL or 127.0.0.1:5432, and Docker could not start one");
            let port = container.get_host_port_ipv4(5432).await.expect("container port");
            (format!("postgres://postgres@127.0.0.1:{port}/postgres"), Some(container))
        })
        .await;
    url::Url::parse(&server.0).expect("KASSA_DATABASE_URL parses")
}

/// `host:port` of the PostgreSQL server tests use (for a proxy in front of it).
pub async fn database_server_address() -> String {
    let url = database_server().await;
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
}

/// A URL naming a database that does not exist yet (Kassa creates and migrates it).
pub async fn fresh_database_url() -> String {
    let mut url = database_server().await;
    url.set_path(&format!("/kassa_test_{}", uuid::Uuid::new_v4().simple()));
    url.to_string()
}

/// Drops a test database, closing its remaining connections.
pub async fn drop_database(database_url: &str) {
    let url = url::Url::parse(database_url).unwrap();
    let name = url.path().trim_start_matches('/').to_owned();
    let mut maintenance = url.clone();
    maintenance.set_path("/postgres");
    if let Ok(pool) = sqlx::PgPool::connect(maintenance.as_str()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}
