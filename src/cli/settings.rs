//! `kassa settings set NAME | list | rotate-master-key | new-master-key`: the settings Kassa keeps
//! sealed in PostgreSQL (Stripe keys, webhook secrets, SMTP connections, the admin token). Values
//! are read from standard input, never from the command line, so they stay out of shell history
//! and `ps`; listings show masked values only.

use crate::cli::charges::time_for_people;
use crate::config::{require_key, MasterKeyArgs, StoreArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_core::settings::{MasterKey, SettingName, Vault};
use kassa_store::Store;
use secrecy::{ExposeSecret, SecretString};
use std::io::Read;
use std::path::PathBuf;

/// `kassa settings`.
#[derive(Args)]
pub struct SettingsArgs {
    #[command(subcommand)]
    command: SettingsCommand,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    master_key: MasterKeyArgs,
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Store a setting sealed, its value read from standard input (one line):
    /// `kassa settings set KASSA_STRIPE_API_KEY < key.txt`. A running Kassa picks it up within
    /// KASSA_SETTINGS_RELOAD (SMTP, webhook secrets) or at its next start (the others).
    Set {
        /// KASSA_STRIPE_API_KEY, KASSA_STRIPE_PUBLISHABLE_KEY, KASSA_STRIPE_WEBHOOK_SECRETS,
        /// KASSA_SMTP_URL, KASSA_SMTP_CONNECTIONS or KASSA_ADMIN_TOKEN.
        name: String,
    },
    /// The stored settings: name, mode, when set, masked value.
    List,
    /// Re-seal every stored setting under a new master key, in one transaction. The new key is
    /// read from --new-key-file, else KASSA_NEW_MASTER_KEY, else standard input; the current
    /// one from KASSA_MASTER_KEY(_FILE). Then start Kassa with the new key.
    RotateMasterKey {
        /// A file holding the new master key.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
    /// Print a fresh random master key (base64 of 32 bytes).
    NewMasterKey,
}

/// Runs a `kassa settings` subcommand.
pub async fn run(args: SettingsArgs) -> anyhow::Result<()> {
    if let SettingsCommand::NewMasterKey = args.command {
        print_new_master_key();
        return Ok(());
    }
    let store = Store::connect(&args.store.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "connecting to KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&args.store.database_url)
            )
        })?;
    let result = command(&store, &args.master_key, args.command).await;
    store.close().await;
    result
}

async fn command(
    store: &Store,
    master_key: &MasterKeyArgs,
    command: SettingsCommand,
) -> anyhow::Result<()> {
    match command {
        SettingsCommand::Set { name } => {
            let name = SettingName::parse(&name)?;
            let value = read_stdin_line().context("reading the value from standard input")?;
            let vault = Vault::new(store.clone(), Some(require_key(master_key)?));
            vault.set(name, &value).await?;
            println!("{name} stored sealed");
        }
        SettingsCommand::List => {
            let vault = Vault::new(store.clone(), master_key.key()?);
            let settings = vault.list().await?;
            if settings.is_empty() {
                println!("no stored settings");
                return Ok(());
            }
            let now = kassa_store::OffsetDateTime::now_utc().unix_timestamp();
            println!("{:<30} {:<5} {:<36} VALUE", "NAME", "MODE", "SET");
            for setting in settings {
                println!(
                    "{:<30} {:<5} {:<36} {}",
                    setting.name,
                    setting.mode.as_deref().unwrap_or("-"),
                    time_for_people(setting.set_at.unix_timestamp(), now),
                    setting.masked
                );
            }
        }
        SettingsCommand::RotateMasterKey { new_key_file } => {
            let current = require_key(master_key)?;
            let new_text = match (&new_key_file, std::env::var("KASSA_NEW_MASTER_KEY")) {
                (Some(path), _) => SecretString::from(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading --new-key-file {}", path.display()))?,
                ),
                (None, Ok(text)) if !text.trim().is_empty() => SecretString::from(text),
                (None, _) => {
                    read_stdin_line().context("reading the new master key from standard input")?
                }
            };
            let new_key = MasterKey::parse(&new_text)
                .map_err(|e| anyhow::anyhow!("the new master key: {e}"))?;
            let count = Vault::new(store.clone(), Some(current))
                .rotate(&new_key)
                .await?;
            println!(
                "{count} setting(s) re-sealed under the new master key: start Kassa with it as KASSA_MASTER_KEY"
            );
        }
        SettingsCommand::NewMasterKey => print_new_master_key(),
    }
    Ok(())
}

fn print_new_master_key() {
    println!("{}", MasterKey::generate().expose_secret());
}

/// Standard input up to its end, without the trailing line break.
fn read_stdin_line() -> anyhow::Result<SecretString> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!("nothing on standard input (e.g. `kassa settings set NAME < value.txt`)");
    }
    Ok(SecretString::from(value.to_owned()))
}
