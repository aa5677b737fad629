//! The re-pay e-mail through a real SMTP server (tests/it/support/smtp_sink.rs, shared with the
//! end-to-end tests).

use kassa_core::mail::decline_in_words;
use kassa_worker::smtp::{MailError, Mailer, MailerOptions, RepayEmail};
use mail_parser::{MessageParser, MimeHeaders};
use std::time::Duration;

#[path = "../../../tests/it/support/smtp_sink.rs"]
mod smtp_sink;
use smtp_sink::SmtpSink;
use tokio::net::TcpListener;

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
