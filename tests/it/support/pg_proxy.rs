//! A TCP proxy in front of PostgreSQL that reads what clients send (the frontend protocol) and,
//! when armed, cuts a connection at the moment it sends `COMMIT` for a transaction that ran a
//! statement containing a given text: the `COMMIT` never reaches the server, which rolls the
//! transaction back when the connection drops, and the client loses its connection — a database
//! crash or a network cut at the worst moment for Kassa, after Stripe acted and before the commit.
//!
//! It follows each connection's transaction from `BEGIN` to `COMMIT`/`ROLLBACK`: simple queries
//! (`Q`) by their text, prepared ones by the text of their `Parse` (`P`), also when a later
//! `Bind` (`B`) runs a statement parsed earlier on that connection (sqlx caches statements).
//! Clients must not use TLS through it (`sslmode=disable`, which [`PgCutProxy::database_url`] sets).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// `SSLRequest` and `GSSENCRequest`: untyped messages after which the startup message follows.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

#[derive(Default)]
struct Shared {
    /// Cut the next `COMMIT` of a transaction that ran a statement containing this text.
    armed: Mutex<Option<String>>,
    /// Commits cut so far.
    cuts: AtomicUsize,
}

pub struct PgCutProxy {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
}

impl PgCutProxy {
    /// Starts a proxy on a free local port forwarding to the PostgreSQL server at `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        let mut tasks = JoinSet::new();
        let accepting = shared.clone();
        tasks.spawn(async move {
            // Dropped with the proxy: the JoinSet aborts every connection task, closing both ends.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let shared = accepting.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, &shared).await;
                    }
                });
            }
        });
        Self {
            address,
            shared,
            _tasks: tasks,
        }
    }

    /// A proxy in front of the PostgreSQL server the tests use.
    pub async fn in_front_of_test_server() -> Self {
        Self::start(&super::services::database_server_address().await).await
    }

    /// `database_url` (same database, user and options) reached through this proxy, without TLS.
    pub fn database_url(&self, database_url: &str) -> String {
        let mut url = url::Url::parse(database_url).unwrap();
        url.set_ip_host(self.address.ip()).unwrap();
        url.set_port(Some(self.address.port())).unwrap();
        url.query_pairs_mut().append_pair("sslmode", "disable");
        url.to_string()
    }

    /// Arms the cut: the next `COMMIT` of a transaction that ran a statement containing `text`
    /// (on any connection) is not forwarded and its connection is closed at both ends. Once.
    pub fn cut_commit_of(&self, text: &str) {
        *self.shared.armed.lock().unwrap() = Some(text.to_owned());
    }

    /// How many commits were cut.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

/// Forwards both ways until either side closes or a commit is cut (then both sockets drop).
async fn relay(mut client: TcpStream, mut server: TcpStream, shared: &Shared) {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upstream = async {
        let mut connection = Connection::default();
        let mut buffer = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let read = match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..read]);
            let (forward, cut) = connection.take_messages(&mut buffer, shared);
            if server_write.write_all(&forward).await.is_err() {
                return;
            }
            if cut {
                return;
            }
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        () = upstream => {}
        _ = downstream => {}
    }
}

/// What the proxy knows of one client connection.
#[derive(Default)]
struct Connection {
    /// Past the startup message: every message now starts with its type byte.
    started: bool,
    /// Statement name → text, from the connection's `Parse` messages.
    statements: HashMap<String, String>,
    /// The statements of the open transaction.
    transaction: Vec<String>,
}

impl Connection {
    /// Takes the complete messages at the start of `buffer`: the bytes to forward, and whether
    /// the connection is to be cut after them (an armed `COMMIT`, which is not forwarded).
    fn take_messages(&mut self, buffer: &mut Vec<u8>, shared: &Shared) -> (Vec<u8>, bool) {
        let mut at = 0;
        let mut cut = false;
        while let Some(length) = self.message_length(&buffer[at..]) {
            if buffer.len() - at < length {
                break;
            }
            if self.read_message(&buffer[at..at + length], shared) {
                cut = true;
                break;
            }
            at += length;
        }
        let forward = buffer.drain(..at).collect();
        (forward, cut)
    }

    /// The whole length of the message at the start of `bytes`, once its header is there.
    fn message_length(&self, bytes: &[u8]) -> Option<usize> {
        let (offset, header) = if self.started { (1, 5) } else { (0, 4) };
        if bytes.len() < header {
            return None;
        }
        let length = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        Some(offset + length)
    }

    /// Follows one message; true when it is the armed `COMMIT`.
    fn read_message(&mut self, message: &[u8], shared: &Shared) -> bool {
        if !self.started {
            let code = message
                .get(4..8)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
            if !matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST)) {
                self.started = true;
            }
            return false;
        }
        let body = &message[5..];
        match message[0] {
            b'Q' => {
                let text = c_strings(body).next().unwrap_or_default();
                let command = text.trim().trim_end_matches(';').to_ascii_uppercase();
                if command == "COMMIT" || command == "END" {
                    let statements = std::mem::take(&mut self.transaction);
                    let mut armed = shared.armed.lock().unwrap();
                    let hit = armed
                        .as_deref()
                        .is_some_and(|text| statements.iter().any(|s| s.contains(text)));
                    if hit {
                        *armed = None;
                        shared.cuts.fetch_add(1, Ordering::SeqCst);
                        return true;
                    }
                } else if command.starts_with("BEGIN")
                    || command.starts_with("START TRANSACTION")
                    || command == "ROLLBACK"
                {
                    self.transaction.clear();
                } else {
                    self.transaction.push(text);
                }
            }
            b'P' => {
                let mut strings = c_strings(body);
                let name = strings.next().unwrap_or_default();
                let text = strings.next().unwrap_or_default();
                self.transaction.push(text.clone());
                if !name.is_empty() {
                    self.statements.insert(name, text);
                }
            }
            b'B' => {
                let mut strings = c_strings(body);
                let _portal = strings.next();
                let name = strings.next().unwrap_or_default();
                if let Some(text) = self.statements.get(&name) {
                    self.transaction.push(text.clone());
                }
            }
            _ => {}
        }
        false
    }
}

/// The NUL-terminated strings at the start of a message body.
fn c_strings(body: &[u8]) -> impl Iterator<Item = String> + '_ {
    body.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
}
