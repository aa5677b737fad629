//! Sending Kassa's e-mails over SMTP (`KASSA_SMTP_URL`): the re-pay e-mail (plain text and HTML:
//! the amount, the reason in plain words, a link to pay with another card), payment receipts and
//! the merchant's payment notifications. What they say comes from kassa-core's `mail` templates.
//!
//! SMTP goes through lettre's async tokio transport over rustls with ring. The SMTP password is
//! never printed: not by `Debug`, not in an error. Every send has a time limit, and every failure
//! says whether trying again later can help ([`MailError::is_transient`]).

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use kassa_core::mail::{PaymentEmail, PaymentEmailKind, RepayEmail};
use kassa_core::mail::{Rendered, RepayContent};

/// The sender when `KASSA_MAIL_FROM` is not set.
pub const DEFAULT_FROM: &str = "Kassa <no-reply@localhost>";

/// How long one send may take, connection included, unless told otherwise.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP URL or the sender address is unusable (fails at start; never holds the password).
    #[error("mail settings: {0}")]
    Config(String),
    /// The recipient's address is not an e-mail address.
    #[error("{address:?} is not an e-mail address")]
    BadAddress {
        /// The address as given.
        address: String,
    },
    /// The message could not be built (e.g. the link is not an http(s) URL).
    #[error("the e-mail could not be built: {0}")]
    Message(String),
    /// The server could not be reached or the connection broke (refused, reset, TLS).
    #[error("the mail server could not be reached: {0}")]
    Connection(String),
    /// The send took longer than its time limit.
    #[error("the mail server did not finish within {0:?}")]
    Timeout(Duration),
    /// The server answered 4xx: it may accept the message later.
    #[error("the mail server refused for now ({code}): {message}")]
    TransientRefusal {
        /// The SMTP reply code, e.g. 451.
        code: u16,
        /// What the server said.
        message: String,
    },
    /// The server answered 5xx: sending the same message again will fail again.
    #[error("the mail server refused ({code}): {message}")]
    PermanentRefusal {
        /// The SMTP reply code, e.g. 550.
        code: u16,
        /// What the server said.
        message: String,
    },
}

impl MailError {
    /// Whether the same e-mail may go through later: connection problems, time-outs and 4xx
    /// replies; not 5xx replies, bad addresses, bad settings or a message that cannot be built.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MailError::Connection(_) | MailError::Timeout(_) | MailError::TransientRefusal { .. }
        )
    }

    fn from_smtp(error: lettre::transport::smtp::Error) -> Self {
        let code = error.status().map(u16::from);
        let message = error.to_string();
        if error.is_transient() {
            MailError::TransientRefusal {
                code: code.unwrap_or(400),
                message,
            }
        } else if error.is_permanent() {
            MailError::PermanentRefusal {
                code: code.unwrap_or(500),
                message,
            }
        } else {
            // Connection refused or reset, TLS handshake, a reply that is not SMTP: the message
            // itself is fine, so the caller retries.
            MailError::Connection(message)
        }
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// TLS from the first byte (`smtps://`, port 465 by default).
    Tls,
    /// Plain connection upgraded with STARTTLS, which the server must offer (`smtp://`, port 587).
    StartTls,
    /// STARTTLS when the server offers it, else plain text (`?tls=opportunistic`); open to a
    /// man in the middle.
    Opportunistic,
    /// No encryption at all (`?tls=none`), for a local mail sink.
    None,
}

/// Settings besides the URL.
#[derive(Debug, Clone)]
pub struct MailerOptions {
    /// The sender, e.g. `Kassa <no-reply@example.com>` (`KASSA_MAIL_FROM`).
    pub from: String,
    /// Time limit for one send, connection included.
    pub timeout: Duration,
}

impl Default for MailerOptions {
    fn default() -> Self {
        Self {
            from: DEFAULT_FROM.into(),
            timeout: DEFAULT_SEND_TIMEOUT,
        }
    }
}

/// The SMTP connections mail goes through: the default one (`KASSA_SMTP_URL`) and named ones
/// (`KASSA_SMTP_CONNECTIONS`), replaceable while Kassa runs (a changed stored setting). Cheap to
/// clone; clones share the connections.
#[derive(Clone, Debug, Default)]
pub struct MailConnections(Arc<RwLock<Arc<ConnectionSet>>>);

/// The connections at one moment.
#[derive(Debug, Default)]
pub struct ConnectionSet {
    /// `KASSA_SMTP_URL`'s mailer, used when a message names no connection.
    pub default: Option<Arc<Mailer>>,
    /// `KASSA_SMTP_CONNECTIONS`: mailers by name.
    pub named: BTreeMap<String, Arc<Mailer>>,
}

impl ConnectionSet {
    /// The mailer of the connection `name`, or the default one; `Err` names an unknown
    /// connection.
    pub fn mailer(&self, name: Option<&str>) -> Result<Option<&Arc<Mailer>>, MailError> {
        match name {
            None => Ok(self.default.as_ref()),
            Some(name) => self.named.get(name).map(Some).ok_or_else(|| {
                MailError::Config(format!(
                    "no SMTP connection named {name:?} in KASSA_SMTP_CONNECTIONS"
                ))
            }),
        }
    }
}

impl MailConnections {
    /// Connections starting as `set`.
    pub fn new(set: ConnectionSet) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(set))))
    }

    /// Only the default connection (none when `mailer` is `None`).
    pub fn default_only(mailer: Option<Arc<Mailer>>) -> Self {
        Self::new(ConnectionSet {
            default: mailer,
            named: BTreeMap::new(),
        })
    }

    /// The connections now; a message uses the same ones from start to end.
    pub fn current(&self) -> Arc<ConnectionSet> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the default connection; messages already being sent finish on the old one.
    pub fn replace_default(&self, mailer: Option<Arc<Mailer>>) {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let named = guard.named.clone();
        *guard = Arc::new(ConnectionSet {
            default: mailer,
            named,
        });
    }

    /// Replaces the named connections.
    pub fn replace_named(&self, named: BTreeMap<String, Arc<Mailer>>) {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let default = guard.default.clone();
        *guard = Arc::new(ConnectionSet { default, named });
    }
}

/// Reads `KASSA_SMTP_CONNECTIONS`: `name=smtp://…,name=smtps://…` (a comma inside a URL is
/// written `%2C`). Errors name the connection, never its URL.
pub fn parse_connections(
    text: &str,
    options: &MailerOptions,
) -> Result<BTreeMap<String, Arc<Mailer>>, MailError> {
    let mut named = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(MailError::Config(
                "KASSA_SMTP_CONNECTIONS: entries are name=smtp://… separated by commas".into(),
            ));
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(MailError::Config(
                "KASSA_SMTP_CONNECTIONS: a connection's name is letters, digits, - and _".into(),
            ));
        }
        let mailer = Mailer::from_url_with(url.trim(), options.clone()).map_err(|e| {
            MailError::Config(format!("KASSA_SMTP_CONNECTIONS, connection {name}: {e}"))
        })?;
        named.insert(name.to_owned(), Arc::new(mailer));
    }
    Ok(named)
}

/// Sends Kassa's e-mails over SMTP.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    security: SmtpSecurity,
    user: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: the transport holds the credentials.
        f.debug_struct("Mailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.user.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Mailer {
    /// A mailer for a `KASSA_SMTP_URL` with the default sender and time limit; see
    /// [`Mailer::from_url_with`].
    pub fn from_url(url: &str) -> Result<Self, MailError> {
        Self::from_url_with(url, MailerOptions::default())
    }

    /// A mailer for `scheme://[user[:password]@]host[:port][/ehlo-name][?tls=…]`:
    /// `smtps://` → TLS (port 465); `smtp://` → STARTTLS required (port 587);
    /// `smtp://…?tls=opportunistic` → STARTTLS if offered; `smtp://…?tls=none` → plain text
    /// (port 25), for local sinks. User and password are percent-decoded.
    ///
    /// Unlike lettre's own `from_url`, a bare `smtp://` never sends in plain text.
    pub fn from_url_with(url: &str, options: MailerOptions) -> Result<Self, MailError> {
        // Errors below never quote the URL: it may hold the password.
        let parsed = url::Url::parse(url)
            .map_err(|e| MailError::Config(format!("KASSA_SMTP_URL is not a URL ({e})")))?;
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| MailError::Config("KASSA_SMTP_URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls_param = parsed
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let (security, default_port) = match (parsed.scheme(), tls_param.as_deref()) {
            ("smtps", None | Some("wrapper" | "tls")) => (SmtpSecurity::Tls, 465),
            ("smtp", None | Some("required" | "starttls")) => (SmtpSecurity::StartTls, 587),
            ("smtp", Some("opportunistic")) => (SmtpSecurity::Opportunistic, 587),
            ("smtp", Some("none")) => (SmtpSecurity::None, 25),
            (scheme, tls) => {
                return Err(MailError::Config(format!(
                    "KASSA_SMTP_URL: scheme {scheme:?} with tls={tls:?} is not supported \
                     (use smtps://, smtp://, smtp://…?tls=opportunistic or smtp://…?tls=none)"
                )))
            }
        };
        let port = parsed.port().unwrap_or(default_port);

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .timeout(Some(options.timeout));
        let tls_parameters = || {
            TlsParameters::new(host.clone())
                .map_err(|e| MailError::Config(format!("KASSA_SMTP_URL: TLS set-up failed ({e})")))
        };
        builder = match security {
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls_parameters()?)),
            SmtpSecurity::StartTls => builder.tls(Tls::Required(tls_parameters()?)),
            SmtpSecurity::Opportunistic => builder.tls(Tls::Opportunistic(tls_parameters()?)),
            SmtpSecurity::None => builder.tls(Tls::None),
        };

        let ehlo_name = parsed.path().trim_matches('/');
        if !ehlo_name.is_empty() {
            builder = builder.hello_name(ClientId::Domain(ehlo_name.to_owned()));
        }

        let decode = |part: &str, what: &str| {
            percent_decode(part).ok_or_else(|| {
                MailError::Config(format!("KASSA_SMTP_URL: the {what} is not valid UTF-8"))
            })
        };
        let user = if parsed.username().is_empty() {
            None
        } else {
            let user = decode(parsed.username(), "user name")?;
            let password = decode(parsed.password().unwrap_or(""), "password")?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
            Some(user)
        };

        let from: Mailbox = options.from.parse().map_err(|e| {
            MailError::Config(format!(
                "KASSA_MAIL_FROM {:?} is not an e-mail address ({e})",
                options.from
            ))
        })?;

        Ok(Self {
            transport: builder.build(),
            from,
            host,
            port,
            security,
            user,
            timeout: options.timeout,
        })
    }

    /// How the connection is protected.
    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    /// The sender.
    pub fn from_address(&self) -> &Mailbox {
        &self.from
    }

    /// Checks that `address` is an e-mail address a message can be sent to (settings are
    /// checked at start with it, so a bad one never fails every alert later).
    pub fn check_address(address: &str) -> Result<(), MailError> {
        address
            .parse::<Mailbox>()
            .map(|_| ())
            .map_err(|_| MailError::BadAddress {
                address: address.to_owned(),
            })
    }

    /// Sends the re-pay e-mail (plain text and HTML) to `email.to`, within the time limit.
    pub async fn send_repay(&self, email: &RepayEmail) -> Result<(), MailError> {
        let message = self.repay_message(email)?;
        self.send(message).await
    }

    /// The re-pay e-mail as it would be sent, for previews and tests.
    pub fn repay_message(&self, email: &RepayEmail) -> Result<Message, MailError> {
        let to: Mailbox = email.to.parse().map_err(|_| MailError::BadAddress {
            address: email.to.clone(),
        })?;
        let link = url::Url::parse(&email.url)
            .ok()
            .filter(|link| matches!(link.scheme(), "https" | "http"))
            .ok_or_else(|| MailError::Message("the re-pay link is not an http(s) URL".into()))?;
        let rendered = RepayContent {
            email,
            link: link.as_str(),
        }
        .rendered()
        .map_err(|e| MailError::Message(e.to_string()))?;
        self.message(to, rendered)
    }

    /// Sends a plain-text e-mail about a payment (the merchant's notification or the customer's
    /// receipt), within the time limit.
    pub async fn send_payment(&self, email: &PaymentEmail) -> Result<(), MailError> {
        let message = self.payment_message(email)?;
        self.send(message).await
    }

    /// A payment e-mail as it would be sent.
    pub fn payment_message(&self, email: &PaymentEmail) -> Result<Message, MailError> {
        let to: Mailbox = email.to.parse().map_err(|_| MailError::BadAddress {
            address: email.to.clone(),
        })?;
        let rendered = email
            .rendered()
            .map_err(|e| MailError::Message(e.to_string()))?;
        self.message(to, rendered)
    }

    /// A rendered mail from Kassa's sender to `to`: plain text, or plain text and HTML as
    /// alternatives.
    fn message(&self, to: Mailbox, rendered: Rendered) -> Result<Message, MailError> {
        // A Message-ID in the sender's domain: mail filters distrust messages without one.
        let message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), self.from.email.domain());
        let builder = Message::builder()
            .message_id(Some(message_id))
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject);
        let message = match rendered.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(rendered.text, html)),
            None => builder
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(rendered.text),
        };
        message.map_err(|e| MailError::Message(e.to_string()))
    }

    async fn send(&self, message: Message) -> Result<(), MailError> {
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(MailError::Timeout(self.timeout)),
            Ok(Err(error)) if error.is_timeout() => Err(MailError::Timeout(self.timeout)),
            Ok(Err(error)) => Err(MailError::from_smtp(error)),
            Ok(Ok(_response)) => Ok(()),
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |i: usize| bytes.get(i).and_then(|b| (*b as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_core::mail::decline_in_words;

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
    fn urls_map_to_security() {
        let cases = [
            (
                "smtp://u:p@mail.example.com:587",
                SmtpSecurity::StartTls,
                587,
            ),
            ("smtp://mail.example.com", SmtpSecurity::StartTls, 587),
            (
                "smtp://mail.example.com?tls=required",
                SmtpSecurity::StartTls,
                587,
            ),
            ("smtps://u:p@mail.example.com", SmtpSecurity::Tls, 465),
            ("smtp://127.0.0.1:2525?tls=none", SmtpSecurity::None, 2525),
            (
                "smtp://mail.example.com?tls=opportunistic",
                SmtpSecurity::Opportunistic,
                587,
            ),
        ];
        for (url, security, port) in cases {
            let mailer = Mailer::from_url(url).expect(url);
            assert_eq!(mailer.security(), security, "{url}");
            assert_eq!(mailer.port, port, "{url}");
        }
    }

    #[test]
    fn password_never_printed() {
        let url = "smtp://kassa:s3cr%40t-pw@mail.example.com:587";
        let mailer = Mailer::from_url(url).unwrap();
        let debug = format!("{mailer:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert!(debug.contains("[redacted]"));
        assert_eq!(mailer.user.as_deref(), Some("kassa"));

        for bad in [
            "ftp://kassa:s3cr3t@mail.example.com",
            "smtp://kassa:s3cr3t@mail.example.com?tls=maybe",
            "smtp://kassa:s3cr3t@:25",
            "not a url s3cr3t",
        ] {
            let error = Mailer::from_url(bad).unwrap_err();
            assert!(matches!(error, MailError::Config(_)), "{bad}");
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
            assert!(!format!("{error:?}").contains("s3cr3t"), "{error:?}");
        }
    }

    #[test]
    fn bad_sender_is_a_config_error() {
        let options = MailerOptions {
            from: "not an address".into(),
            ..MailerOptions::default()
        };
        let error = Mailer::from_url_with("smtp://127.0.0.1?tls=none", options).unwrap_err();
        assert!(error.to_string().contains("KASSA_MAIL_FROM"), "{error}");
        assert!(!error.is_transient());
    }

    #[test]
    fn message_refuses_bad_address_and_link() {
        let mailer = Mailer::from_url("smtp://127.0.0.1?tls=none").unwrap();
        let bad_to = RepayEmail {
            to: "not an address".into(),
            ..email()
        };
        let error = mailer.repay_message(&bad_to).unwrap_err();
        assert!(matches!(error, MailError::BadAddress { .. }));
        assert!(!error.is_transient());

        let bad_link = RepayEmail {
            url: "javascript:alert(1)".into(),
            ..email()
        };
        assert!(matches!(
            mailer.repay_message(&bad_link),
            Err(MailError::Message(_))
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2Fc").as_deref(), Some("a@b/c"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%ff"), None);
    }
}
