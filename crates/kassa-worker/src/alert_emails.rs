//! Kassa's own mailer: reads `kassa.alerts.email` and e-mails the customer the re-pay link of a
//! `customer.repay_requested` alert (when `KASSA_SMTP_URL` is set). Merchants' own consumers read
//! the same alerts from `kassa.alerts`; without SMTP, alerts here are acked and logged so the
//! queue never grows.
//!
//! A redelivery can send an e-mail twice (at least once, like every message here).

use crate::smtp::{
    ConnectionSet, MailConnections, Mailer, PaymentEmail, PaymentEmailKind, RepayEmail,
};
use kassa_broker::{Incoming, MessageHandler, Outcome};
use serde::Deserialize;
use std::time::Duration;
use tracing::{debug, info, warn, Instrument};

/// Tries per e-mail before the alert is dead-lettered (transient SMTP failures only).
const SEND_TRIES: u32 = 3;

/// The fields of a `customer.repay_requested` alert the e-mail needs.
#[derive(Debug, Deserialize)]
struct RepayAlert {
    charge_id: i64,
    email: Option<String>,
    customer_name: Option<String>,
    amount_display: String,
    reason_in_words: String,
    url: String,
    expires_at: i64,
    #[serde(default)]
    reminder: i32,
}

/// The fields of a `payment.succeeded` alert the e-mails need.
#[derive(Debug, Deserialize)]
struct PaymentAlert {
    payment_intent: String,
    customer: Option<String>,
    amount_display: String,
    description: Option<String>,
    receipt_email: Option<String>,
    /// The confirmation's choices about these e-mails, when it made any.
    #[serde(default)]
    mail: Option<kassa_core::fulfil::MailOptions>,
    /// False when the payment's widget says the merchant is not told (absent: told).
    #[serde(default = "told")]
    notify_merchant: bool,
}

fn told() -> bool {
    true
}

/// Sends the e-mails of alerts.
pub struct AlertEmails {
    mail: MailConnections,
    notify: Option<String>,
}

impl AlertEmails {
    /// A mailer over the connections of `mail` (as they are when each alert arrives), which
    /// only acknowledges while there is none; `notify` (`KASSA_NOTIFY_EMAIL`) gets a
    /// notification of each payment.
    pub fn new(mail: MailConnections, notify: Option<String>) -> Self {
        Self { mail, notify }
    }

    /// The merchant's notification and the customer's receipt of a `payment.succeeded` alert.
    /// A redelivery after a failure may repeat the first (at least once, like every alert).
    async fn send_payment(&self, connections: &ConnectionSet, body: &[u8]) -> Outcome {
        let alert: PaymentAlert = match serde_json::from_slice(body) {
            Ok(alert) => alert,
            Err(error) => return Outcome::DeadLetter(format!("not a payment alert: {error}")),
        };
        let options = alert.mail.clone().unwrap_or_default();
        let mailer = match connections.mailer(options.mail_connection.as_deref()) {
            Ok(Some(mailer)) => mailer,
            Ok(None) => {
                debug!("KASSA_SMTP_URL is not set: payment e-mails not sent");
                return Outcome::Done;
            }
            // Configuration, not the message: up the ladder, so a connection added by a
            // settings reload still sends it; a dead letter after the last retry names it.
            Err(error) => return Outcome::Retry(format!("payment e-mail not sent: {error}")),
        };
        let mut emails = Vec::new();
        let email = |kind, to: &String| PaymentEmail {
            kind,
            to: to.clone(),
            amount_display: alert.amount_display.clone(),
            payment_intent: alert.payment_intent.clone(),
            customer: alert.customer.clone(),
            customer_email: alert.receipt_email.clone(),
            description: alert.description.clone(),
        };
        // The customer's receipt first: a redelivery repeats what was sent before a failure,
        // and a second notification to the merchant is the smaller harm.
        if let Some(to) = alert
            .receipt_email
            .as_ref()
            .filter(|_| options.email_customer != Some(false))
        {
            emails.push(email(PaymentEmailKind::Receipt, to));
        }
        let notify = options.notify_email.as_ref().or(self.notify.as_ref());
        if let Some(notify) =
            notify.filter(|_| options.send_notification != Some(false) && alert.notify_merchant)
        {
            emails.push(email(PaymentEmailKind::Notification, notify));
        }
        for email in &emails {
            let mut tries = 0;
            loop {
                tries += 1;
                match mailer.send_payment(email).await {
                    Ok(()) => {
                        info!(payment_intent = %alert.payment_intent, kind = ?email.kind, "payment e-mail sent");
                        metrics::counter!("kassa_emails_sent_total").increment(1);
                        break;
                    }
                    Err(error) if error.is_transient() && tries < SEND_TRIES => {
                        warn!(payment_intent = %alert.payment_intent, %error, tries, "sending a payment e-mail failed; trying again");
                        tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
                    }
                    // The server stays unreachable: later, up the retry ladder.
                    Err(error) if error.is_transient() => {
                        return Outcome::Retry(format!("payment e-mail not sent: {error}"))
                    }
                    Err(error) => {
                        return Outcome::DeadLetter(format!("payment e-mail not sent: {error}"))
                    }
                }
            }
        }
        Outcome::Done
    }

    async fn send(&self, mailer: &Mailer, body: &[u8]) -> Outcome {
        let alert: RepayAlert = match serde_json::from_slice(body) {
            Ok(alert) => alert,
            Err(error) => return Outcome::DeadLetter(format!("not a repay alert: {error}")),
        };
        let Some(to) = alert.email.clone() else {
            warn!(
                charge_id = alert.charge_id,
                "the customer has no e-mail address: the re-pay link was not sent"
            );
            return Outcome::Done;
        };
        let email = RepayEmail {
            to,
            customer_name: alert.customer_name,
            amount_display: alert.amount_display,
            decline_reason: alert.reason_in_words,
            url: alert.url,
            expires_at_display: expiry_for_people(alert.expires_at),
            reminder: alert.reminder > 0,
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match mailer.send_repay(&email).await {
                Ok(()) => {
                    info!(
                        charge_id = alert.charge_id,
                        reminder = alert.reminder,
                        "re-pay e-mail sent"
                    );
                    metrics::counter!("kassa_emails_sent_total").increment(1);
                    return Outcome::Done;
                }
                Err(error) if error.is_transient() && tries < SEND_TRIES => {
                    warn!(charge_id = alert.charge_id, %error, tries, "sending the re-pay e-mail failed; trying again");
                    tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
                }
                Err(error) if error.is_transient() => {
                    return Outcome::Retry(format!("re-pay e-mail not sent: {error}"))
                }
                Err(error) => {
                    return Outcome::DeadLetter(format!("re-pay e-mail not sent: {error}"))
                }
            }
        }
    }
}

impl MessageHandler for AlertEmails {
    async fn handle(&self, message: Incoming) -> Outcome {
        let span =
            tracing::info_span!("alert_email", alert = %message.message_id, kind = %message.kind);
        async {
            let connections = self.mail.current();
            match (&connections.default, message.kind.as_str()) {
                (Some(mailer), "customer.repay_requested") => self.send(mailer, &message.body).await,
                (_, kassa_core::fulfil::payment::PAYMENT_SUCCEEDED) => {
                    self.send_payment(&connections, &message.body).await
                }
                (None, "customer.repay_requested") => {
                    debug!("KASSA_SMTP_URL is not set: re-pay link not e-mailed (the alert is on kassa.alerts)");
                    Outcome::Done
                }
                _ => Outcome::Done,
            }
        }
        .instrument(span)
        .await
    }
}

/// `2026-11-24 17:33 UTC`: the link's expiry, in words a customer reads.
fn expiry_for_people(unix: i64) -> String {
    match kassa_store::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "within 24 hours".to_owned(),
    }
}
