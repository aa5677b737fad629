//! Test and live side by side: the key, publishable key and webhook secrets of each mode
//! (`KASSA_STRIPE_{TEST,LIVE}_{SECRET_KEY,PUBLISHABLE_KEY,WEBHOOK_SECRETS}`), the default mode
//! (`KASSA_DEFAULT_MODE`), and the single-mode variables that keep working
//! (`KASSA_STRIPE_API_KEY`, `KASSA_STRIPE_PUBLISHABLE_KEY`, `KASSA_STRIPE_WEBHOOK_SECRETS`: their
//! mode is read from the key). Everything that would mix the modes is refused at start, naming
//! the variable and never showing a value.

use anyhow::bail;
use clap::Args;
use kassa::stack::{publishable_mode, StripeKeys, WebhookSecrets};
use kassa_api::PublishableKeys;
use kassa_stripe::{ApiKey, Mode};
use secrecy::SecretString;
use std::sync::Once;

/// The secret key of each mode and the default mode.
#[derive(Args, Clone, Debug, Default)]
pub struct ModeKeyArgs {
    /// Test mode's secret (`sk_test_…`) or, better, restricted (`rk_test_…`) key.
    #[arg(long, env = "KASSA_STRIPE_TEST_SECRET_KEY", hide_env_values = true)]
    pub stripe_test_secret_key: Option<String>,
    /// Live mode's secret (`sk_live_…`) or, better, restricted (`rk_live_…`) key.
    #[arg(long, env = "KASSA_STRIPE_LIVE_SECRET_KEY", hide_env_values = true)]
    pub stripe_live_secret_key: Option<String>,
    /// The mode of a call that names none: `test` or `live`; required when both modes have a
    /// key (with one, that one is the default).
    #[arg(long, env = "KASSA_DEFAULT_MODE")]
    pub default_mode: Option<String>,
}

impl ModeKeyArgs {
    fn key(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::Test => self.stripe_test_secret_key.as_deref(),
            Mode::Live => self.stripe_live_secret_key.as_deref(),
        }
    }
}

/// The webhook signing secrets of each mode's endpoint.
#[derive(Args, Clone, Debug, Default)]
pub struct ModeWebhookArgs {
    /// The test endpoint's signing secrets (`whsec_…`), comma-separated; two during a rotation.
    #[arg(
        long,
        env = "KASSA_STRIPE_TEST_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_test_webhook_secrets: Vec<String>,
    /// The live endpoint's signing secrets (`whsec_…`), comma-separated; two during a rotation.
    #[arg(
        long,
        env = "KASSA_STRIPE_LIVE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_live_webhook_secrets: Vec<String>,
}

impl ModeWebhookArgs {
    fn secrets(&self, mode: Mode) -> &[String] {
        match mode {
            Mode::Test => &self.stripe_test_webhook_secrets,
            Mode::Live => &self.stripe_live_webhook_secrets,
        }
    }

    /// Whether any per-mode secret is given.
    pub fn any(&self) -> bool {
        [Mode::Test, Mode::Live]
            .into_iter()
            .any(|mode| given(self.secrets(mode)))
    }
}

/// The publishable key of each mode.
#[derive(Args, Clone, Debug, Default)]
pub struct ModePublishableArgs {
    /// Test mode's publishable key (`pk_test_…`), handed to merchants' payment forms.
    #[arg(long, env = "KASSA_STRIPE_TEST_PUBLISHABLE_KEY")]
    pub stripe_test_publishable_key: Option<String>,
    /// Live mode's publishable key (`pk_live_…`), handed to merchants' payment forms.
    #[arg(long, env = "KASSA_STRIPE_LIVE_PUBLISHABLE_KEY")]
    pub stripe_live_publishable_key: Option<String>,
}

impl ModePublishableArgs {
    fn key(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::Test => self.stripe_test_publishable_key.as_deref(),
            Mode::Live => self.stripe_live_publishable_key.as_deref(),
        }
    }
}

/// The secret keys of a deployment, with where each came from.
#[derive(Clone)]
pub struct ResolvedKeys {
    /// Each mode's key and the default mode.
    pub keys: StripeKeys,
    /// The mode of `KASSA_STRIPE_API_KEY`, when that variable gave a key.
    pub legacy_mode: Option<Mode>,
}

impl ResolvedKeys {
    /// The variable that gave `mode`'s key.
    pub fn variable(&self, mode: Mode) -> String {
        if self.legacy_mode == Some(mode) {
            "KASSA_STRIPE_API_KEY".to_owned()
        } else {
            format!("KASSA_STRIPE_{}_SECRET_KEY", upper(mode))
        }
    }

    /// The modes with a key.
    pub fn modes(&self) -> impl Iterator<Item = Mode> + '_ {
        [Mode::Test, Mode::Live]
            .into_iter()
            .filter(|mode| self.keys.get(*mode).is_some())
    }
}

/// `TEST` or `LIVE`, as in the variables' names.
pub fn upper(mode: Mode) -> &'static str {
    match mode {
        Mode::Test => "TEST",
        Mode::Live => "LIVE",
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn given(list: &[String]) -> bool {
    list.iter().any(|s| !s.trim().is_empty())
}

/// The keys of each mode from `KASSA_STRIPE_API_KEY` (`legacy`) and the per-mode variables;
/// `None` when no key is set at all. Refused: a key of the other mode filed under a mode, the
/// same mode given by both the single-mode and the per-mode variable, both modes without
/// `KASSA_DEFAULT_MODE`, and a default mode without a key.
pub fn secret_keys(
    legacy: Option<&str>,
    args: &ModeKeyArgs,
) -> anyhow::Result<Option<ResolvedKeys>> {
    let mut keys = StripeKeys {
        test: None,
        live: None,
        default: None,
    };
    let mut legacy_mode = None;
    if let Some(key) = non_empty(legacy) {
        let parsed = ApiKey::parse(SecretString::from(key.to_owned()))
            .map_err(|e| anyhow::anyhow!("KASSA_STRIPE_API_KEY: {e}"))?;
        legacy_mode = Some(parsed.mode);
        set_key(&mut keys, parsed.mode, key);
    }
    for filed in [Mode::Test, Mode::Live] {
        let Some(key) = non_empty(args.key(filed)) else {
            continue;
        };
        let variable = format!("KASSA_STRIPE_{}_SECRET_KEY", upper(filed));
        let parsed = ApiKey::parse(SecretString::from(key.to_owned()))
            .map_err(|e| anyhow::anyhow!("{variable}: {e}"))?;
        if parsed.mode != filed {
            bail!(
                "{variable} is a {actual} key: test and live never mix (give it as KASSA_STRIPE_{actual_upper}_SECRET_KEY)",
                actual = parsed.mode,
                actual_upper = upper(parsed.mode)
            );
        }
        if legacy_mode == Some(filed) {
            bail!(
                "KASSA_STRIPE_API_KEY (a {filed} key) and {variable} both give the {filed} key: set only one of them"
            );
        }
        set_key(&mut keys, filed, key);
    }
    if keys.test.is_none() && keys.live.is_none() {
        if let Some(mode) = non_empty(args.default_mode.as_deref()) {
            parse_mode(mode)?;
        }
        return Ok(None);
    }
    keys.default = match non_empty(args.default_mode.as_deref()) {
        Some(text) => Some(parse_mode(text)?),
        None => None,
    };
    match keys.default {
        Some(mode) if keys.get(mode).is_none() => bail!(
            "KASSA_DEFAULT_MODE={mode} but {mode} mode has no key (KASSA_STRIPE_{}_SECRET_KEY)",
            upper(mode)
        ),
        None if keys.test.is_some() && keys.live.is_some() => bail!(
            "both test and live keys are configured: set KASSA_DEFAULT_MODE=test or live (the mode of a call that names none)"
        ),
        _ => {}
    }
    Ok(Some(ResolvedKeys { keys, legacy_mode }))
}

fn set_key(keys: &mut StripeKeys, mode: Mode, key: &str) {
    let key = Some(SecretString::from(key.to_owned()));
    match mode {
        Mode::Test => keys.test = key,
        Mode::Live => keys.live = key,
    }
}

fn parse_mode(text: &str) -> anyhow::Result<Mode> {
    match text.to_ascii_lowercase().as_str() {
        "test" => Ok(Mode::Test),
        "live" => Ok(Mode::Live),
        _ => bail!("KASSA_DEFAULT_MODE={text:?} must be test or live"),
    }
}

/// Warns once per process, naming the modes and never a key, when a standard secret key
/// (`sk_…`) is configured: a restricted key (`rk_…`) with the permissions Kassa uses would do.
pub fn warn_standard_keys(keys: &StripeKeys) {
    static WARNED: Once = Once::new();
    let standard: Vec<String> = [Mode::Test, Mode::Live]
        .into_iter()
        .filter(|mode| {
            keys.get(*mode).is_some_and(|key| {
                ApiKey::parse(key.clone()).is_ok_and(|parsed| !parsed.restricted)
            })
        })
        .map(|mode| mode.to_string())
        .collect();
    if standard.is_empty() {
        return;
    }
    WARNED.call_once(|| {
        tracing::warn!(
            modes = %standard.join(","),
            "a standard secret key (sk_) is configured: a restricted key (rk_) with only the permissions Kassa uses would do (docs/OPERATIONS.md lists them)"
        );
    });
}

/// The publishable key of each mode from `KASSA_STRIPE_PUBLISHABLE_KEY` (`legacy`, its mode read
/// from its prefix) and the per-mode variables. Refused: a key of the other mode filed under a
/// mode, the same mode given twice, and a publishable key of a mode with no secret key in
/// `keys`.
pub fn publishable_keys(
    legacy: Option<&str>,
    args: &ModePublishableArgs,
    keys: &ResolvedKeys,
) -> anyhow::Result<PublishableKeys> {
    let mut found = PublishableKeys::default();
    let mut legacy_mode = None;
    if let Some(key) = non_empty(legacy) {
        let Some(mode) = publishable_mode(key) else {
            bail!("KASSA_STRIPE_PUBLISHABLE_KEY must start with pk_test_ or pk_live_");
        };
        if keys.keys.get(mode).is_none() {
            match keys.legacy_mode {
                Some(key_mode) => bail!(
                    "KASSA_STRIPE_PUBLISHABLE_KEY is a {mode} key but KASSA_STRIPE_API_KEY is a {key_mode} key: test and live never mix"
                ),
                None => bail!(
                    "KASSA_STRIPE_PUBLISHABLE_KEY is a {mode} key but {mode} mode has no secret key (KASSA_STRIPE_{}_SECRET_KEY): test and live never mix",
                    upper(mode)
                ),
            }
        }
        legacy_mode = Some(mode);
        set_publishable(&mut found, mode, key);
    }
    for filed in [Mode::Test, Mode::Live] {
        let Some(key) = non_empty(args.key(filed)) else {
            continue;
        };
        let variable = format!("KASSA_STRIPE_{}_PUBLISHABLE_KEY", upper(filed));
        match publishable_mode(key) {
            None => bail!("{variable} must start with pk_{filed}_"),
            Some(actual) if actual != filed => {
                bail!("{variable} is a {actual} publishable key: test and live never mix")
            }
            Some(_) => {}
        }
        if legacy_mode == Some(filed) {
            bail!(
                "KASSA_STRIPE_PUBLISHABLE_KEY (a {filed} key) and {variable} both give the {filed} publishable key: set only one of them"
            );
        }
        if keys.keys.get(filed).is_none() {
            bail!(
                "{variable} is given but {filed} mode has no secret key (KASSA_STRIPE_{}_SECRET_KEY): a publishable key must be of its secret key's mode",
                upper(filed)
            );
        }
        set_publishable(&mut found, filed, key);
    }
    Ok(found)
}

fn set_publishable(keys: &mut PublishableKeys, mode: Mode, key: &str) {
    let key = Some(key.to_owned());
    match mode {
        Mode::Test => keys.test = key,
        Mode::Live => keys.live = key,
    }
}

/// The webhook secrets of each mode and the modes `KASSA_STRIPE_WEBHOOK_SECRETS` (`legacy`)
/// stands for: its key's mode, the only configured mode, or — with no key at all, an ingress of
/// webhooks only — either mode. Refused: an entry that is no `whsec_` secret, the same mode given
/// twice, `legacy` with two modes of keys, and secrets of a mode that has no key when keys are
/// given. Whether a mode's secrets are required is the caller's to say.
pub fn webhook_secrets(
    legacy: &[String],
    args: &ModeWebhookArgs,
    keys: Option<&ResolvedKeys>,
) -> anyhow::Result<(WebhookSecrets, Vec<Mode>)> {
    let mut secrets = WebhookSecrets::default();
    let mut legacy_modes = Vec::new();
    if given(legacy) {
        let parsed = parse_secrets("KASSA_STRIPE_WEBHOOK_SECRETS", legacy)?;
        legacy_modes = match keys {
            Some(keys) => match keys.legacy_mode {
                Some(mode) => vec![mode],
                None => {
                    let modes: Vec<Mode> = keys.modes().collect();
                    if modes.len() > 1 {
                        bail!(
                            "KASSA_STRIPE_WEBHOOK_SECRETS does not say its mode and both test and live keys are configured: give KASSA_STRIPE_TEST_WEBHOOK_SECRETS and KASSA_STRIPE_LIVE_WEBHOOK_SECRETS instead"
                        );
                    }
                    modes
                }
            },
            None => vec![Mode::Test, Mode::Live],
        };
        for mode in &legacy_modes {
            *secrets.get_mut(*mode) = parsed.clone();
        }
    }
    for mode in [Mode::Test, Mode::Live] {
        let variable = format!("KASSA_STRIPE_{}_WEBHOOK_SECRETS", upper(mode));
        if !given(args.secrets(mode)) {
            continue;
        }
        let parsed = parse_secrets(&variable, args.secrets(mode))?;
        if legacy_modes.len() == 1 && legacy_modes.contains(&mode) {
            bail!(
                "KASSA_STRIPE_WEBHOOK_SECRETS (for the {mode} key) and {variable} both give the {mode} endpoint's secrets: set only one of them"
            );
        }
        if legacy_modes.len() > 1 {
            bail!(
                "KASSA_STRIPE_WEBHOOK_SECRETS and {variable} are both set: without a key KASSA_STRIPE_WEBHOOK_SECRETS stands for either mode; give each mode's secrets in its own variable"
            );
        }
        if let Some(keys) = keys {
            if keys.keys.get(mode).is_none() {
                bail!(
                    "{variable} is given but {mode} mode has no key (KASSA_STRIPE_{}_SECRET_KEY): test and live never mix",
                    upper(mode)
                );
            }
        }
        *secrets.get_mut(mode) = parsed;
    }
    Ok((secrets, legacy_modes))
}

fn parse_secrets(variable: &str, list: &[String]) -> anyhow::Result<Vec<SecretString>> {
    let mut secrets = Vec::new();
    for (i, secret) in list.iter().map(|s| s.trim()).enumerate() {
        if secret.is_empty() {
            continue;
        }
        if !secret.starts_with("whsec_") || secret.len() < 10 {
            bail!(
                "{variable}: entry {} is not a webhook signing secret (they start with whsec_)",
                i + 1
            );
        }
        secrets.push(SecretString::from(secret.to_owned()));
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(test: Option<&str>, live: Option<&str>, default: Option<&str>) -> ModeKeyArgs {
        ModeKeyArgs {
            stripe_test_secret_key: test.map(str::to_owned),
            stripe_live_secret_key: live.map(str::to_owned),
            default_mode: default.map(str::to_owned),
        }
    }

    fn error<T>(result: anyhow::Result<T>) -> String {
        match result {
            Ok(_) => panic!("expected a refusal"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn each_mode_takes_only_its_own_key_and_two_modes_need_a_default() {
        let e = error(secret_keys(None, &keys(Some("sk_live_abc"), None, None)));
        assert!(
            e.starts_with("KASSA_STRIPE_TEST_SECRET_KEY is a live key"),
            "{e}"
        );
        assert!(!e.contains("sk_live_abc"), "{e}");
        let e = error(secret_keys(
            None,
            &keys(Some("rk_test_a"), Some("rk_live_a"), None),
        ));
        assert!(e.contains("KASSA_DEFAULT_MODE"), "{e}");
        let both = secret_keys(
            None,
            &keys(Some("rk_test_a"), Some("rk_live_a"), Some("live")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.keys.default, Some(Mode::Live));
        let e = error(secret_keys(
            None,
            &keys(Some("rk_test_a"), None, Some("live")),
        ));
        assert!(e.contains("KASSA_DEFAULT_MODE=live"), "{e}");
        let e = error(secret_keys(
            None,
            &keys(Some("rk_test_a"), None, Some("prod")),
        ));
        assert!(e.contains("must be test or live"), "{e}");
        assert!(secret_keys(None, &keys(None, None, None))
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_single_mode_variables_keep_working_but_not_beside_the_same_mode() {
        let one = secret_keys(Some("sk_live_abc"), &keys(None, None, None))
            .unwrap()
            .unwrap();
        assert_eq!(one.legacy_mode, Some(Mode::Live));
        assert!(one.keys.live.is_some() && one.keys.test.is_none());
        let e = error(secret_keys(
            Some("sk_live_abc"),
            &keys(None, Some("rk_live_x"), None),
        ));
        assert!(
            e.contains("KASSA_STRIPE_API_KEY") && e.contains("KASSA_STRIPE_LIVE_SECRET_KEY"),
            "{e}"
        );
        let two = secret_keys(
            Some("sk_live_abc"),
            &keys(Some("rk_test_x"), None, Some("test")),
        )
        .unwrap()
        .unwrap();
        assert!(two.keys.live.is_some() && two.keys.test.is_some());
    }

    #[test]
    fn publishable_keys_must_match_their_modes_secret_key() {
        let test_only = secret_keys(None, &keys(Some("rk_test_a"), None, None))
            .unwrap()
            .unwrap();
        let args = |test: Option<&str>, live: Option<&str>| ModePublishableArgs {
            stripe_test_publishable_key: test.map(str::to_owned),
            stripe_live_publishable_key: live.map(str::to_owned),
        };
        let e = error(publishable_keys(
            None,
            &args(None, Some("pk_live_a")),
            &test_only,
        ));
        assert!(e.contains("live mode has no secret key"), "{e}");
        let e = error(publishable_keys(
            None,
            &args(Some("pk_live_a"), None),
            &test_only,
        ));
        assert!(e.contains("never mix"), "{e}");
        let e = error(publishable_keys(
            Some("pk_live_a"),
            &args(None, None),
            &test_only,
        ));
        assert!(e.contains("live mode has no secret key"), "{e}");
        let found = publishable_keys(Some("pk_test_a"), &args(None, None), &test_only).unwrap();
        assert_eq!(found.get(Mode::Test), Some("pk_test_a"));
    }

    #[test]
    fn webhook_secrets_go_to_their_mode_and_need_its_key() {
        let test_only = secret_keys(None, &keys(Some("rk_test_a"), None, None))
            .unwrap()
            .unwrap();
        let args = |test: &[&str], live: &[&str]| ModeWebhookArgs {
            stripe_test_webhook_secrets: test.iter().map(|s| s.to_string()).collect(),
            stripe_live_webhook_secrets: live.iter().map(|s| s.to_string()).collect(),
        };
        let e = error(webhook_secrets(
            &[],
            &args(&[], &["whsec_live_123"]),
            Some(&test_only),
        ));
        assert!(e.contains("live mode has no key"), "{e}");
        let (secrets, legacy) =
            webhook_secrets(&["whsec_legacy1".into()], &args(&[], &[]), Some(&test_only)).unwrap();
        assert_eq!(legacy, vec![Mode::Test]);
        assert_eq!(secrets.test.len(), 1);
        assert!(secrets.live.is_empty());
        let e = error(webhook_secrets(
            &["whsec_legacy1".into()],
            &args(&["whsec_test_123"], &[]),
            Some(&test_only),
        ));
        assert!(e.contains("set only one"), "{e}");
        let (unscoped, legacy) =
            webhook_secrets(&["whsec_legacy1".into()], &args(&[], &[]), None).unwrap();
        assert_eq!(legacy, vec![Mode::Test, Mode::Live]);
        assert_eq!((unscoped.test.len(), unscoped.live.len()), (1, 1));
        let e = error(webhook_secrets(&[], &args(&["sk_test_x"], &[]), None));
        assert!(
            e.starts_with("KASSA_STRIPE_TEST_WEBHOOK_SECRETS: entry 1"),
            "{e}"
        );
    }
}
