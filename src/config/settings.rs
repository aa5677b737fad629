//! Stored settings at start: the master key (`KASSA_MASTER_KEY` or `KASSA_MASTER_KEY_FILE`),
//! opening what PostgreSQL holds, and filling in every storable setting the environment (or a
//! flag) left unset. The environment always wins; the log names where each setting came from,
//! never its value.

use anyhow::{bail, Context};
use clap::Args;
use kassa_core::settings::{MasterKey, SettingName, Vault};
use kassa_store::Store;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// The master key stored settings are sealed under.
#[derive(Args, Clone, Debug)]
pub struct MasterKeyArgs {
    /// Master key of the sealed settings: 32 bytes in base64 or as 64 hex digits (make one with
    /// `kassa settings new-master-key` or `openssl rand -base64 32`).
    #[arg(
        long,
        env = "KASSA_MASTER_KEY",
        hide_env_values = true,
        conflicts_with = "master_key_file"
    )]
    pub master_key: Option<String>,
    /// A file holding the master key (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "KASSA_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    /// The configured master key, if any; a malformed one fails here.
    pub fn key(&self) -> anyhow::Result<Option<MasterKey>> {
        if let Some(text) = self.master_key.as_deref().filter(|k| !k.trim().is_empty()) {
            let key = MasterKey::parse(&SecretString::from(text.to_owned()))
                .map_err(|e| anyhow::anyhow!("KASSA_MASTER_KEY: {e}"))?;
            return Ok(Some(key));
        }
        if let Some(path) = &self.master_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading KASSA_MASTER_KEY_FILE={}", path.display()))?;
            let key = MasterKey::parse(&SecretString::from(text))
                .map_err(|e| anyhow::anyhow!("KASSA_MASTER_KEY_FILE={}: {e}", path.display()))?;
            return Ok(Some(key));
        }
        Ok(None)
    }

    /// Whether a master key is configured at all.
    pub fn is_set(&self) -> bool {
        self.master_key
            .as_deref()
            .is_some_and(|k| !k.trim().is_empty())
            || self.master_key_file.is_some()
    }
}

/// How often a running Kassa reads the stored settings again.
#[derive(Args, Clone, Debug)]
pub struct SettingsReloadArgs {
    /// How often a running Kassa reads the stored settings again and applies a changed webhook
    /// secret of a mode it serves, admin token, publishable key or SMTP connection (30s, 1m).
    #[arg(long, env = "KASSA_SETTINGS_RELOAD", default_value = "30s", value_parser = super::parse_positive_duration)]
    pub settings_reload: Duration,
}

impl SettingsReloadArgs {
    /// What a running process reads again: the settings of `reloadable` the environment did
    /// not give (`from_env`), when there is a master key to open them.
    pub fn reload(
        &self,
        master_key: Option<&MasterKey>,
        from_env: &HashSet<SettingName>,
        reloadable: &[SettingName],
        mailer_options: kassa_worker::smtp::MailerOptions,
        webhook_secrets_modes: Vec<kassa_stripe::Mode>,
    ) -> Option<kassa::stack::SettingsReload> {
        master_key?;
        Some(kassa::stack::SettingsReload {
            every: self.settings_reload,
            settings: reloadable
                .iter()
                .copied()
                .filter(|name| !from_env.contains(name))
                .collect(),
            mailer_options,
            webhook_secrets_modes,
        })
    }
}

/// The stored settings, opened.
#[derive(Default)]
pub struct StoredSettings {
    values: HashMap<SettingName, SecretString>,
}

impl StoredSettings {
    /// Opens every stored setting of the database at `database_url` (created and migrated if
    /// missing): fails naming the first that cannot be opened (no master key, a wrong one).
    pub async fn load(database_url: &str, key: Option<MasterKey>) -> anyhow::Result<Self> {
        let store = Store::connect(database_url, 1).await.with_context(|| {
            format!(
                "reading the stored settings at KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(database_url)
            )
        })?;
        let opened = Vault::new(store.clone(), key).open_all().await;
        store.close().await;
        let opened = opened.map_err(|e| anyhow::anyhow!("refusing to start: {e}"))?;
        Ok(StoredSettings {
            values: opened.into_iter().map(|o| (o.name, o.value)).collect(),
        })
    }

    /// The stored value of `name`, if any.
    pub fn get(&self, name: SettingName) -> Option<&SecretString> {
        self.values.get(&name)
    }

    /// Fills `slot` (what the environment or a flag gave) from the stored value when it is
    /// unset, and logs which source the setting came from; remembers the settings the
    /// environment gave in `from_env`.
    pub fn fill(
        &self,
        name: SettingName,
        slot: &mut Option<String>,
        from_env: &mut HashSet<SettingName>,
    ) {
        let env = from_env;
        let from_env = slot.as_deref().is_some_and(|v| !v.trim().is_empty());
        let source = if from_env {
            env.insert(name);
            "environment"
        } else if let Some(stored) = self.get(name) {
            *slot = Some(stored.expose_secret().to_owned());
            "database"
        } else {
            "default"
        };
        tracing::info!(setting = name.as_str(), source, "setting source");
    }

    /// [`StoredSettings::fill`] for a comma-separated list setting.
    pub fn fill_list(
        &self,
        name: SettingName,
        slot: &mut Vec<String>,
        from_env: &mut HashSet<SettingName>,
    ) {
        let mut joined =
            Some(slot.join(",")).filter(|s| s.split(',').any(|e| !e.trim().is_empty()));
        self.fill(name, &mut joined, from_env);
        *slot = joined
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
    }
}

/// Refuses to go on with stored settings but no master key to open them: [`StoredSettings::load`]
/// already names the setting; this is for processes that do not read PostgreSQL otherwise.
pub fn require_key(args: &MasterKeyArgs) -> anyhow::Result<MasterKey> {
    match args.key()? {
        Some(key) => Ok(key),
        None => bail!("KASSA_MASTER_KEY or KASSA_MASTER_KEY_FILE is required to store or read sealed settings"),
    }
}
