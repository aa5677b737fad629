//! Settings Kassa can keep for itself in PostgreSQL, sealed: the names that may be stored
//! ([`SettingName`]), the master key ([`MasterKey`]), sealing and opening ([`seal`]), and the
//! vault that sets, lists, opens and re-seals them ([`Vault`]). An environment variable of the
//! same name always wins over a stored value; the binary decides that, this module never reads
//! the environment.

mod seal;

pub use seal::{mask, open, seal, MasterKey, Sealed, NONCE_LEN};

use kassa_store::{NewSealedSetting, OffsetDateTime, Store, StoreError};
use kassa_stripe::Mode;
use secrecy::{ExposeSecret, SecretString};

/// Every setting that may be stored sealed, named by the `KASSA_*` variable it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SettingName {
    /// `KASSA_STRIPE_API_KEY`: the secret (`sk_…`) or restricted (`rk_…`) key.
    StripeApiKey,
    /// `KASSA_STRIPE_PUBLISHABLE_KEY`: the `pk_…` key handed to payment forms.
    StripePublishableKey,
    /// `KASSA_STRIPE_WEBHOOK_SECRETS`: the endpoint's `whsec_…` secrets, comma-separated.
    StripeWebhookSecrets,
    /// `KASSA_SMTP_URL`: the default SMTP connection, password included.
    SmtpUrl,
    /// `KASSA_SMTP_CONNECTIONS`: named SMTP connections, `name=url,…`.
    SmtpConnections,
    /// `KASSA_ADMIN_TOKEN`: the bearer token of the back-office APIs.
    AdminToken,
    /// `KASSA_STRIPE_TEST_SECRET_KEY`: test mode's secret (`sk_test_…`) or restricted
    /// (`rk_test_…`) key.
    StripeTestSecretKey,
    /// `KASSA_STRIPE_TEST_PUBLISHABLE_KEY`: test mode's `pk_test_…` key.
    StripeTestPublishableKey,
    /// `KASSA_STRIPE_TEST_WEBHOOK_SECRETS`: the test endpoint's `whsec_…` secrets.
    StripeTestWebhookSecrets,
    /// `KASSA_STRIPE_LIVE_SECRET_KEY`: live mode's secret (`sk_live_…`) or restricted
    /// (`rk_live_…`) key.
    StripeLiveSecretKey,
    /// `KASSA_STRIPE_LIVE_PUBLISHABLE_KEY`: live mode's `pk_live_…` key.
    StripeLivePublishableKey,
    /// `KASSA_STRIPE_LIVE_WEBHOOK_SECRETS`: the live endpoint's `whsec_…` secrets.
    StripeLiveWebhookSecrets,
}

impl SettingName {
    /// Every storable setting, in the order listings show them.
    pub const ALL: [SettingName; 12] = [
        SettingName::StripeApiKey,
        SettingName::StripePublishableKey,
        SettingName::StripeWebhookSecrets,
        SettingName::StripeTestSecretKey,
        SettingName::StripeTestPublishableKey,
        SettingName::StripeTestWebhookSecrets,
        SettingName::StripeLiveSecretKey,
        SettingName::StripeLivePublishableKey,
        SettingName::StripeLiveWebhookSecrets,
        SettingName::SmtpUrl,
        SettingName::SmtpConnections,
        SettingName::AdminToken,
    ];

    /// The `KASSA_*` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingName::StripeApiKey => "KASSA_STRIPE_API_KEY",
            SettingName::StripePublishableKey => "KASSA_STRIPE_PUBLISHABLE_KEY",
            SettingName::StripeWebhookSecrets => "KASSA_STRIPE_WEBHOOK_SECRETS",
            SettingName::SmtpUrl => "KASSA_SMTP_URL",
            SettingName::SmtpConnections => "KASSA_SMTP_CONNECTIONS",
            SettingName::AdminToken => "KASSA_ADMIN_TOKEN",
            SettingName::StripeTestSecretKey => "KASSA_STRIPE_TEST_SECRET_KEY",
            SettingName::StripeTestPublishableKey => "KASSA_STRIPE_TEST_PUBLISHABLE_KEY",
            SettingName::StripeTestWebhookSecrets => "KASSA_STRIPE_TEST_WEBHOOK_SECRETS",
            SettingName::StripeLiveSecretKey => "KASSA_STRIPE_LIVE_SECRET_KEY",
            SettingName::StripeLivePublishableKey => "KASSA_STRIPE_LIVE_PUBLISHABLE_KEY",
            SettingName::StripeLiveWebhookSecrets => "KASSA_STRIPE_LIVE_WEBHOOK_SECRETS",
        }
    }

    /// The mode a per-mode setting is filed under (`KASSA_STRIPE_LIVE_…` → live); `None` for
    /// the others, whose value may say its mode ([`mode_of`]).
    pub fn mode(self) -> Option<Mode> {
        match self {
            SettingName::StripeTestSecretKey
            | SettingName::StripeTestPublishableKey
            | SettingName::StripeTestWebhookSecrets => Some(Mode::Test),
            SettingName::StripeLiveSecretKey
            | SettingName::StripeLivePublishableKey
            | SettingName::StripeLiveWebhookSecrets => Some(Mode::Live),
            _ => None,
        }
    }

    /// The setting called `name`, if it is one that may be stored.
    pub fn parse(name: &str) -> Result<SettingName, SettingsError> {
        SettingName::ALL
            .into_iter()
            .find(|setting| setting.as_str() == name)
            .ok_or_else(|| SettingsError::UnknownName(name.to_owned()))
    }

    /// Checks a value before it is stored: the same rules as at start, so a stored value never
    /// makes Kassa refuse to start. The error never contains the value.
    pub fn validate(self, value: &str) -> Result<(), SettingsError> {
        let invalid = |reason: &str| SettingsError::Invalid {
            name: self.as_str(),
            reason: reason.to_owned(),
        };
        if value.trim().is_empty() {
            return Err(invalid("the value is empty"));
        }
        if value.trim() != value || value.contains(['\n', '\r']) {
            return Err(invalid("the value has leading or trailing whitespace"));
        }
        match self {
            SettingName::StripeApiKey
            | SettingName::StripeTestSecretKey
            | SettingName::StripeLiveSecretKey => {
                let key = kassa_stripe::ApiKey::parse(SecretString::from(value.to_owned()))
                    .map_err(|e| invalid(&e.to_string()))?;
                if let Some(filed) = self.mode().filter(|filed| *filed != key.mode) {
                    return Err(invalid(&format!(
                        "a {} key filed as the {filed} key: test and live never mix",
                        key.mode
                    )));
                }
            }
            SettingName::StripePublishableKey
            | SettingName::StripeTestPublishableKey
            | SettingName::StripeLivePublishableKey => {
                let mode = if value.starts_with("pk_test_") {
                    Mode::Test
                } else if value.starts_with("pk_live_") {
                    Mode::Live
                } else {
                    return Err(invalid("must start with pk_test_ or pk_live_"));
                };
                if let Some(filed) = self.mode().filter(|filed| *filed != mode) {
                    return Err(invalid(&format!(
                        "a {mode} publishable key filed as the {filed} one: test and live never mix"
                    )));
                }
            }
            SettingName::StripeWebhookSecrets
            | SettingName::StripeTestWebhookSecrets
            | SettingName::StripeLiveWebhookSecrets => {
                if value
                    .split(',')
                    .any(|s| !s.trim().starts_with("whsec_") || s.trim().len() < 10)
                {
                    return Err(invalid(
                        "every comma-separated entry must be a webhook signing secret (whsec_…)",
                    ));
                }
            }
            SettingName::SmtpUrl => {
                if !(value.starts_with("smtp://") || value.starts_with("smtps://")) {
                    return Err(invalid("must be an smtp:// or smtps:// URL"));
                }
            }
            SettingName::SmtpConnections => {
                for entry in value.split(',') {
                    let Some((name, url)) = entry.split_once('=') else {
                        return Err(invalid("entries are name=smtp://… separated by commas"));
                    };
                    if name.trim().is_empty()
                        || !(url.starts_with("smtp://") || url.starts_with("smtps://"))
                    {
                        return Err(invalid("entries are name=smtp://… separated by commas"));
                    }
                }
            }
            SettingName::AdminToken => {
                if value.len() < 16 {
                    return Err(invalid("must be at least 16 characters"));
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for SettingName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode a value says it is of (`sk_live_…` → `live`), if any.
pub fn mode_of(value: &str) -> Option<&'static str> {
    let prefix = value.split(',').next().unwrap_or_default().trim();
    if ["sk_live_", "rk_live_", "pk_live_"]
        .iter()
        .any(|p| prefix.starts_with(p))
    {
        Some("live")
    } else if ["sk_test_", "rk_test_", "pk_test_"]
        .iter()
        .any(|p| prefix.starts_with(p))
    {
        Some("test")
    } else {
        None
    }
}

/// Every storable name, comma-separated, for messages.
fn storable_names() -> String {
    SettingName::ALL.map(SettingName::as_str).join(", ")
}

/// What went wrong with a stored setting. Never carries a value or a key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Not a setting that may be stored.
    #[error("{0} is not a setting Kassa stores (storable: {names})", names = storable_names())]
    UnknownName(String),
    /// The value is refused.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why (without the value).
        reason: String,
    },
    /// The master key is not 32 bytes in hex or base64.
    #[error("the master key must be 32 bytes, written as 64 hex digits or in base64 (e.g. `openssl rand -base64 32`)")]
    BadMasterKey,
    /// Settings are stored but no master key is configured.
    #[error("the stored setting {name} is sealed and no master key is set (KASSA_MASTER_KEY or KASSA_MASTER_KEY_FILE)")]
    NoMasterKey {
        /// The first stored setting.
        name: String,
    },
    /// The setting does not open under the master key: a wrong key, or a value that was
    /// sealed for another setting and moved into this row.
    #[error("the stored setting {name} cannot be opened with this master key (a wrong KASSA_MASTER_KEY, or a value sealed for another setting)")]
    CannotOpen {
        /// The setting.
        name: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// One stored setting as listings show it: never the value, only a masked form.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SettingSummary {
    /// The `KASSA_*` name.
    pub name: String,
    /// `test` or `live`, when the value says.
    pub mode: Option<String>,
    /// When it was set.
    #[serde(with = "kassa_store_time")]
    pub set_at: OffsetDateTime,
    /// e.g. `sk_live_…4f2a`.
    pub masked: String,
}

mod kassa_store_time {
    use kassa_store::OffsetDateTime;

    pub fn serialize<S: serde::Serializer>(
        at: &OffsetDateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(at.unix_timestamp())
    }
}

/// A setting opened from the database.
pub struct OpenedSetting {
    /// Which setting.
    pub name: SettingName,
    /// Its value.
    pub value: SecretString,
}

/// The sealed settings of one database under one master key.
#[derive(Clone)]
pub struct Vault {
    store: Store,
    key: Option<MasterKey>,
}

impl Vault {
    /// The settings of `store`; without a master key nothing can be set or opened, but a
    /// listing still names what is stored.
    pub fn new(store: Store, key: Option<MasterKey>) -> Self {
        Vault { store, key }
    }

    fn key(&self, name: &str) -> Result<&MasterKey, SettingsError> {
        self.key.as_ref().ok_or_else(|| SettingsError::NoMasterKey {
            name: name.to_owned(),
        })
    }

    /// Checks, seals and stores `value` as `name`.
    pub async fn set(&self, name: SettingName, value: &SecretString) -> Result<(), SettingsError> {
        name.validate(value.expose_secret())?;
        let sealed = seal(self.key(name.as_str())?, name.as_str(), value);
        self.store
            .put_sealed_setting(NewSealedSetting {
                name: name.as_str(),
                mode: match name.mode() {
                    Some(Mode::Test) => Some("test"),
                    Some(Mode::Live) => Some("live"),
                    None => mode_of(value.expose_secret()),
                },
                sealed: &sealed.ciphertext,
                nonce: &sealed.nonce,
            })
            .await?;
        tracing::info!(setting = name.as_str(), "setting stored sealed");
        Ok(())
    }

    /// Every stored setting, opened: the first that does not open (or any at all without a
    /// master key) fails the whole call, naming it. Rows of names Kassa does not store are
    /// ignored.
    pub async fn open_all(&self) -> Result<Vec<OpenedSetting>, SettingsError> {
        let rows = self.store.sealed_settings().await?;
        let mut opened = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(name) = SettingName::parse(&row.name) else {
                continue;
            };
            let value = open(self.key(&row.name)?, &row.name, &row.sealed, &row.nonce)?;
            opened.push(OpenedSetting { name, value });
        }
        Ok(opened)
    }

    /// Every stored setting with its masked value.
    pub async fn list(&self) -> Result<Vec<SettingSummary>, SettingsError> {
        let opened = self.open_all().await?;
        let rows = self.store.sealed_settings().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let value = opened.iter().find(|o| o.name.as_str() == row.name)?;
                Some(SettingSummary {
                    masked: mask(value.value.expose_secret()),
                    name: row.name,
                    mode: row.mode,
                    set_at: row.set_at,
                })
            })
            .collect())
    }

    /// Re-seals every stored setting under `new_key` in one transaction: each value is opened
    /// with the current key first, so one that does not open stops the rotation with nothing
    /// changed. Returns how many were re-sealed.
    pub async fn rotate(&self, new_key: &MasterKey) -> Result<usize, SettingsError> {
        let mut rewrite = self.store.begin_settings_rewrite().await?;
        let rows = rewrite.rows().to_vec();
        for row in &rows {
            let value = open(self.key(&row.name)?, &row.name, &row.sealed, &row.nonce)?;
            let sealed = seal(new_key, &row.name, &value);
            rewrite
                .replace(&row.name, &sealed.ciphertext, &sealed.nonce)
                .await?;
        }
        rewrite.commit().await?;
        tracing::info!(
            settings = rows.len(),
            "settings re-sealed under the new master key"
        );
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_storable_name_parses_back_and_others_are_refused() {
        for name in SettingName::ALL {
            assert_eq!(SettingName::parse(name.as_str()).unwrap(), name);
        }
        assert!(matches!(
            SettingName::parse("KASSA_DATABASE_URL"),
            Err(SettingsError::UnknownName(_))
        ));
    }

    #[test]
    fn values_are_checked_without_being_echoed() {
        let error = SettingName::StripeApiKey
            .validate("pk_test_notasecretkey123")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("KASSA_STRIPE_API_KEY:"), "{error}");
        assert!(!error.contains("pk_test_notasecretkey123"), "{error}");
        assert!(SettingName::StripeApiKey.validate("sk_live_abc123").is_ok());
        assert!(SettingName::AdminToken.validate("short").is_err());
        assert!(SettingName::StripeWebhookSecrets
            .validate("whsec_aaaaaaaa,whsec_bbbbbbbb")
            .is_ok());
        assert!(SettingName::StripeWebhookSecrets
            .validate("whsec_aaaaaaaa,sk_test_x")
            .is_err());
        assert!(SettingName::SmtpConnections
            .validate("billing=smtp://127.0.0.1:25?tls=none")
            .is_ok());
        assert!(SettingName::SmtpConnections
            .validate("smtp://127.0.0.1:25")
            .is_err());
    }

    #[test]
    fn a_per_mode_setting_refuses_the_other_modes_key() {
        let error = SettingName::StripeTestSecretKey
            .validate("sk_live_abcdef123")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("KASSA_STRIPE_TEST_SECRET_KEY:"),
            "{error}"
        );
        assert!(error.contains("never mix"), "{error}");
        assert!(!error.contains("sk_live_abcdef123"), "{error}");
        assert!(SettingName::StripeLiveSecretKey
            .validate("rk_live_abcdef123")
            .is_ok());
        assert!(SettingName::StripeLivePublishableKey
            .validate("pk_test_abc")
            .is_err());
        assert!(SettingName::StripeTestPublishableKey
            .validate("pk_test_abc")
            .is_ok());
        assert_eq!(
            SettingName::StripeLiveWebhookSecrets.mode(),
            Some(Mode::Live)
        );
        assert_eq!(SettingName::StripeWebhookSecrets.mode(), None);
    }

    #[test]
    fn a_value_says_its_mode() {
        assert_eq!(mode_of("sk_live_123"), Some("live"));
        assert_eq!(mode_of("rk_test_123"), Some("test"));
        assert_eq!(mode_of("whsec_123"), None);
    }
}
