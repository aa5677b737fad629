//! The re-pay e-mail through a real SMTP server: an in-process sink on 127.0.0.1:0 that speaks
//! enough SMTP (EHLO/HELO, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT) and records what it gets.

use kassa_worker::mailer::{decline_in_words, MailError, Mailer, MailerOptions, RepayEmail};
use mail_parser::{MessageParser, MimeHeaders};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the sink accepted.
#[derive(Debug, Clone)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
}

/// An SMTP sink. Recipients starting with `refuse-5xx` get 550, with `busy-4xx` get 451.
struct SmtpSink {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("sink address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    // A broken client connection only ends that session.
                    let _ = serve_session(stream, store).await;
                });
            }
        });
        Self {
            port,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Waits (with a deadline) until `count` messages have arrived.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
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

async fn serve_session(stream: TcpStream, store: Arc<Mutex<Vec<Received>>>) -> std::io::Result<()> {
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
            "EHLO" => b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
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

fn repay_email(to: &str) -> RepayEmail {
    RepayEmail {
        to: to.into(),
        customer_name: Some("Ada <b>Lovelace</b> & \"Co\"".into()),
        amount_display: "¥1,000".into(),
        decline_reason: decline_in_words("insufficient_funds").into(),
        url: "https://checkout.stripe.com/c/pay/cs_test_a1B2c3?x=1&y=2".into(),
        expires_at_display: "24 November 2026, 17:30 UTC".into(),
        reminder: false,
    }
}

fn sink_mailer(sink: &SmtpSink) -> Mailer {
    let options = MailerOptions {
        from: "Kassa Billing <billing@kassa.test>".into(),
        timeout: Duration::from_secs(10),
    };
    Mailer::from_url_with(&sink.url(), options).expect("mailer")
}

#[tokio::test]
async fn repay_email_arrives_with_both_parts() {
    let sink = SmtpSink::start().await;
    let mailer = sink_mailer(&sink);

    mailer
        .send_repay(&repay_email("ada@example.com"))
        .await
        .expect("sent");

    let received = sink.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let envelope = &received[0];
    assert_eq!(envelope.mail_from, "billing@kassa.test");
    assert_eq!(envelope.rcpt_to, vec!["ada@example.com".to_owned()]);

    let message = MessageParser::default()
        .parse(&envelope.data)
        .expect("a MIME message");
    assert_eq!(
        message.subject(),
        Some("Your payment of ¥1,000 did not go through")
    );
    let to = message.to().and_then(|to| to.first()).expect("To");
    assert_eq!(to.address(), Some("ada@example.com"));
    let from = message.from().and_then(|from| from.first()).expect("From");
    assert_eq!(from.address(), Some("billing@kassa.test"));
    assert_eq!(from.name(), Some("Kassa Billing"));
    let message_id = message.message_id().expect("Message-ID");
    assert!(message_id.ends_with("@kassa.test"), "{message_id}");
    assert!(message
        .content_type()
        .is_some_and(|ct| ct.ctype() == "multipart" && ct.subtype() == Some("alternative")));

    let link = "https://checkout.stripe.com/c/pay/cs_test_a1B2c3?x=1&y=2";
    let text = message.body_text(0).expect("a plain-text part");
    assert!(
        text.contains("Hello Ada <b>Lovelace</b> & \"Co\","),
        "{text}"
    );
    assert!(text.contains("¥1,000"), "{text}");
    assert!(text.contains("The card has insufficient funds."), "{text}");
    assert!(text.contains(link), "{text}");
    assert!(text.contains("24 November 2026, 17:30 UTC"), "{text}");

    let html = message.body_html(0).expect("an HTML part");
    assert!(
        html.contains("Hello Ada &lt;b&gt;Lovelace&lt;/b&gt; &amp; &quot;Co&quot;,"),
        "{html}"
    );
    assert!(!html.contains("<b>Lovelace"), "{html}");
    assert!(html.contains("¥1,000"), "{html}");
    let escaped_link = link.replace('&', "&amp;");
    // The link as a button and as text.
    assert!(
        html.contains(&format!("<a href=\"{escaped_link}\" style=")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<a href=\"{escaped_link}\">{escaped_link}</a>")),
        "{html}"
    );
    assert!(html.contains("Pay ¥1,000 with another card"), "{html}");
}

#[tokio::test]
async fn reminder_and_default_sender() {
    let sink = SmtpSink::start().await;
    let mailer = Mailer::from_url(&sink.url()).expect("mailer");
    let email = RepayEmail {
        reminder: true,
        customer_name: None,
        amount_display: "$19.99".into(),
        ..repay_email("bob@example.com")
    };
    mailer.send_repay(&email).await.expect("sent");
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].mail_from, "no-reply@localhost");
    let message = MessageParser::default().parse(&received[0].data).unwrap();
    assert_eq!(
        message.subject(),
        Some("Reminder: your payment of $19.99 is still open")
    );
    assert!(message.body_text(0).unwrap().starts_with("Hello,"));
}

#[tokio::test]
async fn refusals_are_classified() {
    let sink = SmtpSink::start().await;
    let mailer = sink_mailer(&sink);

    let error = mailer
        .send_repay(&repay_email("refuse-5xx@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MailError::PermanentRefusal { code: 550, .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());

    let error = mailer
        .send_repay(&repay_email("busy-4xx@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, MailError::TransientRefusal { code: 451, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());

    let error = mailer
        .send_repay(&repay_email("no at sign"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::BadAddress { .. }), "{error:?}");
    assert!(!error.is_transient());

    // The sink still works after the refusals.
    mailer
        .send_repay(&repay_email("ada@example.com"))
        .await
        .expect("sent");
    assert_eq!(sink.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn closed_port_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let mailer =
        Mailer::from_url(&format!("smtp://kassa:hunter2@127.0.0.1:{port}?tls=none")).unwrap();
    let error = mailer
        .send_repay(&repay_email("ada@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Connection(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts the connection but never greets.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let options = MailerOptions {
        timeout: Duration::from_millis(300),
        ..MailerOptions::default()
    };
    let mailer =
        Mailer::from_url_with(&format!("smtp://127.0.0.1:{port}?tls=none"), options).unwrap();
    let started = std::time::Instant::now();
    let error = mailer
        .send_repay(&repay_email("ada@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Timeout(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn starttls_required_fails_against_a_plain_server() {
    // smtp:// means STARTTLS required: a server that does not offer it gets nothing in clear.
    let sink = SmtpSink::start().await;
    let mailer = Mailer::from_url(&format!("smtp://127.0.0.1:{}", sink.port)).unwrap();
    let error = mailer
        .send_repay(&repay_email("ada@example.com"))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(sink.received.lock().unwrap().is_empty());
}
