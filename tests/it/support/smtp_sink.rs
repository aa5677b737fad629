//! A real SMTP server for tests: an in-process sink on 127.0.0.1:0 that speaks enough SMTP
//! (EHLO/HELO, AUTH PLAIN, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT) and records what it gets. Shared by
//! the mailer's own tests (crates/kassa-worker/tests/mailer.rs) and the end-to-end tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the sink accepted.
#[allow(dead_code)] // not every test reads every field
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

/// How many of `mails` have a recipient whose address contains `who`.
#[allow(dead_code)] // kassa-worker's tests/smtp.rs shares this file and counts no recipients
pub fn addressed_to(mails: &[Received], who: &str) -> usize {
    mails
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r.contains(who)))
        .count()
}

/// An SMTP sink. Recipients starting with `refuse-5xx` get 550, with `busy-4xx` get 451.
pub struct SmtpSink {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// The argument of every `AUTH PLAIN` (base64 of `\0user\0password`), accepted as given.
    #[allow(dead_code)] // read by the secrets test only
    pub auth: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("sink address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let auth = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let logins = auth.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (store, logins) = (store.clone(), logins.clone());
                tokio::spawn(async move {
                    // A broken client connection only ends that session.
                    let _ = serve_session(stream, store, logins).await;
                });
            }
        });
        Self {
            port,
            received,
            auth,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Waits (with a deadline) until `count` messages have arrived.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Duration::from_secs(10);
        tokio::time::timeout(deadline, async {
            loop {
                {
                    let received = self.received.lock().unwrap();
                    if received.len() >= count {
                        return received.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("messages within the deadline")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn address_in(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line.rfind('>').unwrap_or(line.len());
    line.get(start..end).unwrap_or_default().to_owned()
}

async fn serve_session(
    stream: TcpStream,
    store: Arc<Mutex<Vec<Received>>>,
    logins: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SMTPUTF8\r\n",
            "AUTH" => {
                let mut words = command.split_whitespace().skip(1);
                match (words.next(), words.next()) {
                    (Some(mechanism), Some(initial)) if mechanism.eq_ignore_ascii_case("PLAIN") => {
                        logins.lock().unwrap().push(initial.to_owned());
                        b"235 2.7.0 authentication successful\r\n"
                    }
                    _ => b"504 5.5.4 only AUTH PLAIN with an initial response\r\n",
                }
            }
            "HELO" => b"250 sink.test\r\n",
            "MAIL" => {
                mail_from = address_in(&command);
                rcpt_to.clear();
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" => {
                let to = address_in(&command);
                if to.starts_with("refuse-5xx") {
                    b"550 5.1.1 no such mailbox\r\n"
                } else if to.starts_with("busy-4xx") {
                    b"451 4.3.0 try again later\r\n"
                } else {
                    rcpt_to.push(to);
                    b"250 2.1.5 ok\r\n"
                }
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    let mut raw = Vec::new();
                    if reader.read_until(b'\n', &mut raw).await? == 0 {
                        return Ok(());
                    }
                    if raw == b".\r\n" || raw == b".\n" {
                        break;
                    }
                    // Undo dot-stuffing (RFC 5321 4.5.2).
                    let raw = if raw.starts_with(b"..") {
                        &raw[1..]
                    } else {
                        &raw[..]
                    };
                    data.extend_from_slice(raw);
                }
                store.lock().unwrap().push(Received {
                    mail_from: mail_from.clone(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                rcpt_to.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}
