//! Kassa's e-mails as people read them: what each says, in words a customer understands
//! ([`decline_in_words`]), from one askama template per mail (`templates/mail/`): the re-pay
//! e-mail and its reminder (plain text and HTML), the customer's payment receipt and the
//! merchant's payment notification (plain text). Every value is shown as given, HTML-escaped in
//! the HTML parts ([`crate::html`]). Sending them over SMTP is the worker's.

use askama::Template;

/// What the re-pay e-mail says. Every text is shown as given (HTML-escaped in the HTML part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepayEmail {
    /// The customer's address.
    pub to: String,
    /// The customer's name, if known.
    pub customer_name: Option<String>,
    /// The amount for people, e.g. "$19.99" (`kassa_stripe::money::format_amount`).
    pub amount_display: String,
    /// Why the card failed, in plain words ([`decline_in_words`]).
    pub decline_reason: String,
    /// The Checkout Session URL where the customer enters a new card.
    pub url: String,
    /// When the link stops working, for people (e.g. "24 November 2026, 17:30 UTC").
    pub expires_at_display: String,
    /// Whether this is the one reminder sent with a new link after the first expired.
    pub reminder: bool,
}

/// Which payment e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentEmailKind {
    /// To the merchant (`KASSA_NOTIFY_EMAIL`).
    Notification,
    /// To the customer.
    Receipt,
}

/// A payment e-mail's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEmail {
    /// Notification or receipt.
    pub kind: PaymentEmailKind,
    /// The address.
    pub to: String,
    /// e.g. "$20.00".
    pub amount_display: String,
    /// `pi_…`.
    pub payment_intent: String,
    /// `cus_…`.
    pub customer: Option<String>,
    /// The customer's e-mail.
    pub customer_email: Option<String>,
    /// What was bought.
    pub description: Option<String>,
}

/// A mail ready to send: its subject, its plain text, and its HTML part when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body, for mails that have one.
    pub html: Option<String>,
}

/// What the re-pay templates show.
struct RepayParts<'a> {
    subject: &'a str,
    name: Option<&'a str>,
    amount: &'a str,
    reason: &'a str,
    link: &'a str,
    expires: &'a str,
}

#[derive(Template)]
#[template(path = "mail/repay.txt")]
struct RepayText<'a> {
    mail: &'a RepayParts<'a>,
}

#[derive(Template)]
#[template(path = "mail/repay.html")]
struct RepayHtml<'a> {
    mail: &'a RepayParts<'a>,
}

#[derive(Template)]
#[template(path = "mail/reminder.txt")]
struct ReminderText<'a> {
    mail: &'a RepayParts<'a>,
}

#[derive(Template)]
#[template(path = "mail/reminder.html")]
struct ReminderHtml<'a> {
    mail: &'a RepayParts<'a>,
}

#[derive(Template)]
#[template(path = "mail/receipt.txt")]
struct ReceiptText<'a> {
    mail: &'a PaymentEmail,
}

#[derive(Template)]
#[template(path = "mail/notification.txt")]
struct NotificationText<'a> {
    mail: &'a PaymentEmail,
}

/// The re-pay e-mail (or its reminder) with its link checked, ready to render.
#[derive(Debug, Clone, Copy)]
pub struct RepayContent<'a> {
    /// What it says.
    pub email: &'a RepayEmail,
    /// The re-pay link, as a parsed and re-serialised http(s) URL.
    pub link: &'a str,
}

impl RepayContent<'_> {
    /// The subject line.
    pub fn subject(&self) -> String {
        if self.email.reminder {
            format!(
                "Reminder: your payment of {} is still open",
                self.email.amount_display
            )
        } else {
            format!(
                "Your payment of {} did not go through",
                self.email.amount_display
            )
        }
    }

    fn render(&self, html: bool) -> askama::Result<String> {
        let subject = self.subject();
        let parts = RepayParts {
            subject: &subject,
            name: self
                .email
                .customer_name
                .as_deref()
                .map(str::trim)
                .filter(|name| !name.is_empty()),
            amount: &self.email.amount_display,
            reason: &self.email.decline_reason,
            link: self.link,
            expires: &self.email.expires_at_display,
        };
        let mail = &parts;
        match (self.email.reminder, html) {
            (false, false) => RepayText { mail }.render(),
            (false, true) => RepayHtml { mail }.render(),
            (true, false) => ReminderText { mail }.render(),
            (true, true) => ReminderHtml { mail }.render(),
        }
    }

    /// The plain-text body.
    pub fn plain_text(&self) -> askama::Result<String> {
        self.render(false)
    }

    /// The HTML body.
    pub fn html(&self) -> askama::Result<String> {
        self.render(true)
    }

    /// Subject, plain text and HTML.
    pub fn rendered(&self) -> askama::Result<Rendered> {
        Ok(Rendered {
            subject: self.subject(),
            text: self.plain_text()?,
            html: Some(self.html()?),
        })
    }
}

impl PaymentEmail {
    /// The merchant's notification or the customer's receipt: subject and plain text.
    pub fn rendered(&self) -> askama::Result<Rendered> {
        let (subject, text) = match self.kind {
            PaymentEmailKind::Notification => (
                format!("Payment received: {}", self.amount_display),
                NotificationText { mail: self }.render()?,
            ),
            PaymentEmailKind::Receipt => (
                format!("Your receipt: {}", self.amount_display),
                ReceiptText { mail: self }.render()?,
            ),
        };
        Ok(Rendered {
            subject,
            text,
            html: None,
        })
    }
}

/// A Stripe decline code (`error.decline_code`, or `error.code` when there is none) in words for
/// the customer, for the alert and the e-mail. Wording follows the "Next steps" column of
/// Stripe's decline codes table (docs.stripe.com/declines/codes).
pub fn decline_in_words(code: &str) -> &'static str {
    match code.trim() {
        // "card_declined": the error code of every card decline; "generic_decline" and
        // "do_not_honor": "The card was declined for an unknown reason" — the customer should
        // contact their bank.
        "card_declined"
        | "generic_decline"
        | "do_not_honor"
        | "call_issuer"
        | "do_not_try_again"
        | "no_action_taken"
        | "not_permitted"
        | "revocation_of_authorization"
        | "transaction_not_allowed"
        | "try_again_later" => "Your bank declined the payment.",
        // Stripe: for lost_card, stolen_card, pickup_card, fraudulent, merchant_blacklist and
        // restricted_card "the specific reason for the decline should not be reported to the
        // customer. Instead, it needs to be presented as a generic_decline."
        "lost_card" | "stolen_card" | "pickup_card" | "fraudulent" | "merchant_blacklist"
        | "restricted_card" | "security_violation" => "Your bank declined the payment.",
        // "The card has insufficient funds to complete the purchase."
        "insufficient_funds" | "card_velocity_exceeded" | "withdrawal_count_limit_exceeded" => {
            "The card has insufficient funds."
        }
        "expired_card" => "The card has expired.",
        "incorrect_cvc" | "invalid_cvc" => "The card's security code (CVC) is incorrect.",
        "incorrect_number" | "invalid_number" | "invalid_account" => {
            "The card number is no longer valid."
        }
        "invalid_expiry_month" | "invalid_expiry_year" => "The card's expiry date is incorrect.",
        // "An error occurred while processing the card": the customer may try again.
        "processing_error" | "issuer_not_available" | "reenter_transaction" => {
            "An error occurred while processing the card. Please try again or use another card."
        }
        // Off-session: "the card was declined because the transaction requires authentication
        // such as 3D Secure" — the customer must come back on-session to confirm.
        "authentication_required"
        | "approve_with_id"
        | "offline_pin_required"
        | "online_or_offline_pin_required" => "Your bank asks you to confirm the payment.",
        "card_not_supported" => "The card does not support this kind of payment.",
        "currency_not_supported" => "The card does not support this currency.",
        _ => "The payment with your saved card could not be completed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> RepayEmail {
        RepayEmail {
            to: "ada@example.com".into(),
            customer_name: Some("Ada".into()),
            amount_display: "$19.99".into(),
            decline_reason: decline_in_words("insufficient_funds").into(),
            url: "https://checkout.stripe.com/c/pay/cs_test_1#x".into(),
            expires_at_display: "24 November 2026, 17:30 UTC".into(),
            reminder: false,
        }
    }

    #[test]
    fn html_is_escaped() {
        let hostile = RepayEmail {
            customer_name: Some("<script>alert('x')</script> & \"Co\"".into()),
            url: "https://example.com/pay?a=1&b=\"2\"".into(),
            ..email()
        };
        let link = url::Url::parse(&hostile.url).unwrap();
        let content = RepayContent {
            email: &hostile,
            link: link.as_str(),
        };
        let html = content.html().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;")
        );
        assert!(
            html.contains("href=\"https://example.com/pay?a=1&amp;b=%222%22\""),
            "{html}"
        );
        assert!(content.plain_text().unwrap().contains("Hello <script>"));
    }

    #[test]
    fn reminder_says_so() {
        let reminder = RepayEmail {
            reminder: true,
            customer_name: None,
            ..email()
        };
        let content = RepayContent {
            email: &reminder,
            link: "https://example.com/",
        };
        assert_eq!(
            content.subject(),
            "Reminder: your payment of $19.99 is still open"
        );
        assert!(content.plain_text().unwrap().starts_with("Hello,\n"));
        assert!(content.plain_text().unwrap().contains("has expired"));
    }

    #[test]
    fn decline_codes_in_words() {
        assert_eq!(
            decline_in_words("card_declined"),
            "Your bank declined the payment."
        );
        assert_eq!(
            decline_in_words("generic_decline"),
            "Your bank declined the payment."
        );
        assert_eq!(
            decline_in_words("insufficient_funds"),
            "The card has insufficient funds."
        );
        assert_eq!(decline_in_words("expired_card"), "The card has expired.");
        assert_eq!(
            decline_in_words("lost_card"),
            "Your bank declined the payment."
        );
        assert_eq!(
            decline_in_words("incorrect_cvc"),
            "The card's security code (CVC) is incorrect."
        );
        assert!(decline_in_words("processing_error").contains("try again"));
        assert_eq!(
            decline_in_words("authentication_required"),
            "Your bank asks you to confirm the payment."
        );
        assert_eq!(
            decline_in_words("something_new"),
            "The payment with your saved card could not be completed."
        );
    }
}
