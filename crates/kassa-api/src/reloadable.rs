//! The settings of the merchant's HTTP that a running Kassa may change without a restart (new
//! stored values, read again every `KASSA_SETTINGS_RELOAD`): the admin token and the publishable
//! keys. Every request reads the ones current when it arrives; a request in flight keeps what it
//! read.

use crate::PublishableKeys;
use kassa_stripe::Mode;
use secrecy::SecretString;
use std::sync::{Arc, PoisonError, RwLock};

/// Why a new value is not taken (the one in use is kept). Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The process started without an admin token: the APIs are not mounted, and a token
    /// appearing later does not mount them.
    #[error("the APIs were not mounted at start (no KASSA_ADMIN_TOKEN): restart to mount them")]
    NoApis,
    /// Too short to be an admin token.
    #[error("KASSA_ADMIN_TOKEN must be at least 16 characters")]
    ShortToken,
    /// A publishable key that is not of its mode, or of a mode without a secret key.
    #[error("the {0} publishable key must start with pk_{0}_ and its mode needs a secret key: test and live never mix")]
    PublishableMode(Mode),
}

/// The admin token and publishable keys in use; clones share them.
#[derive(Clone)]
pub struct ReloadableSettings {
    token: Arc<RwLock<Arc<SecretString>>>,
    publishable: Arc<RwLock<Arc<PublishableKeys>>>,
    apis: bool,
    modes: [bool; 2],
}

impl std::fmt::Debug for ReloadableSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableSettings")
            .field("apis", &self.apis)
            .field("publishable", &self.publishable_keys())
            .finish_non_exhaustive()
    }
}

fn index(mode: Mode) -> usize {
    match mode {
        Mode::Test => 0,
        Mode::Live => 1,
    }
}

impl ReloadableSettings {
    /// Starts with `token` (`None`: no APIs, and an empty token that admits nobody) and
    /// `publishable`; `configured` says which modes have a secret key.
    pub fn new(
        token: Option<SecretString>,
        publishable: PublishableKeys,
        configured: impl Fn(Mode) -> bool,
    ) -> Self {
        let apis = token.is_some();
        Self {
            token: Arc::new(RwLock::new(Arc::new(
                token.unwrap_or_else(|| SecretString::from(String::new())),
            ))),
            publishable: Arc::new(RwLock::new(Arc::new(publishable))),
            apis,
            modes: [configured(Mode::Test), configured(Mode::Live)],
        }
    }

    /// The admin token now (empty without APIs).
    pub fn admin_token(&self) -> Arc<SecretString> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The publishable keys now.
    pub fn publishable_keys(&self) -> Arc<PublishableKeys> {
        self.publishable
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Admits later requests with `token` instead.
    pub fn replace_admin_token(&self, token: SecretString) -> Result<(), ReloadError> {
        if !self.apis {
            return Err(ReloadError::NoApis);
        }
        if secrecy::ExposeSecret::expose_secret(&token).trim().len() < 16 {
            return Err(ReloadError::ShortToken);
        }
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(token);
        Ok(())
    }

    /// Hands `key` to later payment forms of `mode`; it must be that mode's, of a mode with a
    /// secret key.
    pub fn replace_publishable_key(&self, mode: Mode, key: &str) -> Result<(), ReloadError> {
        if !key.starts_with(&format!("pk_{mode}_")) || !self.modes[index(mode)] {
            return Err(ReloadError::PublishableMode(mode));
        }
        let mut current = self
            .publishable
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = PublishableKeys::clone(&current);
        match mode {
            Mode::Test => next.test = Some(key.to_owned()),
            Mode::Live => next.live = Some(key.to_owned()),
        }
        *current = Arc::new(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_and_key_replace_the_old_ones_and_bad_ones_are_refused() {
        let settings = ReloadableSettings::new(
            Some(SecretString::from("the-first-admin-token")),
            PublishableKeys::default(),
            |mode| mode == Mode::Test,
        );
        let shared = settings.clone();
        settings
            .replace_admin_token(SecretString::from("the-second-admin-token"))
            .unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&*shared.admin_token()),
            "the-second-admin-token"
        );
        assert_eq!(
            settings.replace_admin_token(SecretString::from("short")),
            Err(ReloadError::ShortToken)
        );
        settings
            .replace_publishable_key(Mode::Test, "pk_test_new")
            .unwrap();
        assert_eq!(
            shared.publishable_keys().get(Mode::Test),
            Some("pk_test_new")
        );
        assert_eq!(
            settings.replace_publishable_key(Mode::Live, "pk_live_new"),
            Err(ReloadError::PublishableMode(Mode::Live)),
            "live mode has no secret key"
        );
        assert!(settings
            .replace_publishable_key(Mode::Test, "pk_live_x")
            .is_err());
        let no_apis = ReloadableSettings::new(None, PublishableKeys::default(), |_| true);
        assert_eq!(
            no_apis.replace_admin_token(SecretString::from("a-long-enough-token")),
            Err(ReloadError::NoApis)
        );
    }
}
