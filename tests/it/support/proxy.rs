//! A TCP proxy in front of RabbitMQ that a test can cut and restore on the same port, to make
//! "the broker is unreachable" real without stopping the broker other tests share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

pub struct TcpProxy {
    pub address: SocketAddr,
    upstream: String,
    tasks: Option<JoinSet<()>>,
    accepted: Arc<AtomicUsize>,
}

impl TcpProxy {
    /// Starts a proxy on a free local port forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let mut proxy = Self {
            address: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.to_owned(),
            tasks: None,
            accepted: Arc::default(),
        };
        proxy.up().await;
        proxy
    }

    /// Listens again (on the same port once it has one) and forwards.
    pub async fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.address).unwrap();
        let listener = socket.listen(128).unwrap();
        self.address = listener.local_addr().unwrap();
        let upstream = self.upstream.clone();
        let accepted = self.accepted.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every proxied connection at once.
    pub async fn down(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            // Aborting the accept task drops its JoinSet, which aborts every connection task
            // and so closes both sockets of each connection.
            tasks.shutdown().await;
        }
    }

    /// Connections accepted so far (an upstream that refuses closes them at once).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Forwards connections accepted from now on to `upstream` (`host:port`).
    pub async fn forward_to(&mut self, upstream: &str) {
        self.down().await;
        self.upstream = upstream.to_owned();
        self.up().await;
    }

    /// An AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address)
    }
}
