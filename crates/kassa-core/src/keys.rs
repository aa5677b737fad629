//! Every Idempotency-Key Kassa sends Stripe, and the metadata that ties Stripe objects to one
//! charge attempt of one installation: one place, so the scheme can be read (and checked) at
//! once.
//!
//! | what | key |
//! |---|---|
//! | a charge attempt's PaymentIntent | `kassa:{installation}:charge:{id}:{attempt}` |
//! | … after its key was replaced n times | `kassa:{installation}:charge:{id}:{attempt}:k{n}` |
//! | a re-pay link (reminder r = 0, 1) | `kassa:{installation}:charge:{id}:{attempt}:recheckout:{r}` |
//! | a step of an event's handling | `kassa:{installation}:{event id}:{step}` (`…:retry{n}` on the ladder's n-th retry) |
//! | a step of the success page | `kassa:{installation}:success_page:{session}:{step}` |
//! | the customer created for a setup session (first attempts of every path) | `kassa:{installation}:checkout_session:{session}:create_customer` ([`session_customer`]) |
//! | an API or CLI request with the caller's key | `kassa:{installation}:{scope}:{caller's key}` ([`caller`]) |
//! | a CLI command without one | `kassa:{installation}:{scope}:args-{SHA-256 of its arguments}` ([`derived`]) |
//! | a request with no key of its own (a browser form) | `kassa:{installation}:{scope}:{UUID}` ([`fresh`]) |
//! | a product upsert of the checkout API | `kassa:{installation}:product:{code}:{create\|update}:{SHA-256}` ([`content`]) |
//!
//! The installation id (16 hex digits, generated once per database, see
//! `kassa_store::installation`) keeps two installations sharing one Stripe account from ever
//! sending each other's keys: their charge ids and event steps overlap, their keys do not.
//!
//! Stripe keeps a key 24 hours ("You can remove keys from the system automatically after they're
//! at least 24 hours old. We generate a new request if a key is reused after the original is
//! pruned.", docs: idempotent requests). A charge attempt's key is
//! therefore used only while it is younger than [`KEY_REUSE_LIMIT_SECS`] (23 hours, one hour of margin
//! for clocks and slow requests); after that the attempt is looked up on Stripe and, if Stripe has
//! nothing, sent under the next generation's key, recorded on the charge first.
//!
//! PaymentIntents of a charge carry `kassa_installation`, `kassa_charge_id`, `kassa_attempt` and
//! `kassa_reference` in their metadata ([`charge_metadata`]); [`intent_names_attempt`] is the one
//! test of "this PaymentIntent is that attempt". Re-pay sessions carry `kassa_installation` and
//! `kassa_charge_id`.

use crate::Error;
use kassa_stripe::{IdempotencyKey, Metadata};
use sha2::{Digest, Sha256};

/// Metadata key naming the installation that created a PaymentIntent or Checkout Session.
pub const INSTALLATION_METADATA: &str = "kassa_installation";
/// Metadata key that ties a PaymentIntent or re-pay session to its back-office charge.
pub const CHARGE_ID_METADATA: &str = "kassa_charge_id";
/// Metadata key naming the attempt a PaymentIntent was made for.
pub const ATTEMPT_METADATA: &str = "kassa_attempt";
/// Metadata key carrying the charge's reference (the client's idempotency handle).
pub const REFERENCE_METADATA: &str = "kassa_reference";

/// How long (seconds) a charge attempt's key is sent again as it is: Stripe forgets keys 24
/// hours old.
pub const KEY_REUSE_LIMIT_SECS: i64 = 23 * 60 * 60;

fn make(key: String) -> Result<IdempotencyKey, Error> {
    IdempotencyKey::new(key).map_err(|e| Error::Permanent(format!("idempotency key: {e}")))
}

/// The key of `attempt` of charge `charge_id`, generation `generation` (0 first, then one more
/// each time the key is replaced).
pub fn charge_attempt(
    installation: &str,
    charge_id: i64,
    attempt: i32,
    generation: i32,
) -> Result<IdempotencyKey, Error> {
    match generation {
        0 => make(format!("kassa:{installation}:charge:{charge_id}:{attempt}")),
        n => make(format!(
            "kassa:{installation}:charge:{charge_id}:{attempt}:k{n}"
        )),
    }
}

/// The key charges recorded before installation ids were sent under, still in use for the
/// attempts that were open then (see the migration `0011_charge_attempts`).
pub fn legacy_charge_attempt(charge_id: i64, attempt: i32) -> String {
    format!("kassa:charge:{charge_id}:{attempt}")
}

/// The key under which the first attempt of every path creates the customer of setup session
/// `session_id`: while Stripe remembers it, every such creation answers the same customer.
pub fn session_customer(installation: &str, session_id: &str) -> Result<IdempotencyKey, Error> {
    make(format!(
        "kassa:{installation}:checkout_session:{session_id}:create_customer"
    ))
}

/// Whether `key` is one of this installation's keys (every key Kassa sends starts with
/// `kassa:{installation}:`).
pub fn is_own_key(installation: &str, key: &str) -> bool {
    key.strip_prefix("kassa:")
        .and_then(|rest| rest.strip_prefix(installation))
        .is_some_and(|rest| rest.starts_with(':'))
}

/// The key of the re-pay link (`reminder` 0) or its reminder (1) of `attempt` of a charge.
pub fn recheckout(
    installation: &str,
    charge_id: i64,
    attempt: i32,
    reminder: i32,
) -> Result<IdempotencyKey, Error> {
    make(format!(
        "kassa:{installation}:charge:{charge_id}:{attempt}:recheckout:{reminder}"
    ))
}

/// Metadata of `attempt` of a charge's PaymentIntent: installation, charge id, attempt and
/// reference, so the attempt can be found on Stripe and its webhooks settle it.
pub fn charge_metadata(
    installation: &str,
    charge_id: i64,
    attempt: i32,
    reference: &str,
) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(INSTALLATION_METADATA.into(), installation.to_owned());
    metadata.insert(CHARGE_ID_METADATA.into(), charge_id.to_string());
    metadata.insert(ATTEMPT_METADATA.into(), attempt.to_string());
    metadata.insert(REFERENCE_METADATA.into(), reference.to_owned());
    metadata
}

/// Metadata of a re-pay session for a charge.
pub fn recheckout_metadata(installation: &str, charge_id: i64) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(INSTALLATION_METADATA.into(), installation.to_owned());
    metadata.insert(CHARGE_ID_METADATA.into(), charge_id.to_string());
    metadata
}

/// Whose a PaymentIntent or Checkout Session is, by its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This installation's (its id in `kassa_installation`).
    Ours,
    /// Another installation's: never touches local charges.
    Other,
    /// Made before installation ids (no `kassa_installation`), by whichever installation.
    Unmarked,
}

/// Whose `metadata` says the object is.
pub fn owner(installation: &str, metadata: &Metadata) -> Owner {
    match metadata.get(INSTALLATION_METADATA) {
        Some(id) if id == installation => Owner::Ours,
        Some(_) => Owner::Other,
        None => Owner::Unmarked,
    }
}

/// The charge and attempt that this installation's PaymentIntent was made for, from metadata.
pub fn attempt_of(installation: &str, metadata: &Metadata) -> Option<(i64, i32)> {
    if owner(installation, metadata) != Owner::Ours {
        return None;
    }
    let charge_id = metadata.get(CHARGE_ID_METADATA)?.parse().ok()?;
    let attempt = metadata.get(ATTEMPT_METADATA)?.parse().ok()?;
    Some((charge_id, attempt))
}

/// Whether a PaymentIntent's `metadata` names exactly this attempt of this charge: this
/// installation, the charge id, the attempt and the reference (a database restored from a
/// backup can give an id to another charge; its reference differs).
pub fn intent_names_attempt(
    installation: &str,
    metadata: &Metadata,
    charge_id: i64,
    attempt: i32,
    reference: &str,
) -> bool {
    attempt_of(installation, metadata) == Some((charge_id, attempt))
        && metadata.get(REFERENCE_METADATA).map(String::as_str) == Some(reference)
}

/// Idempotency keys of one handling attempt of one event: `kassa:{installation}:{event id}:{step}`
/// on the first attempt, `…:{step}:retry{n}` on the n-th retry from the retry ladder.
///
/// A crash redelivers the same attempt, so the same keys: Stripe replays what already happened and
/// nothing is done twice. A retry from the ladder gets fresh keys, because Stripe saves a result
/// once the request began executing — 500s included — and replays it to the same key for 24 hours,
/// so the same key could never get past a saved failure. Fresh keys are safe because every step
/// reads Stripe's state first (the card's owner, an existing customer for the session) or is
/// idempotent by nature (setting the default card).
#[derive(Debug, Clone)]
pub struct KeyScope {
    installation: String,
    scope: String,
    attempt: u32,
}

impl KeyScope {
    /// Keys of this installation for `attempt` (0 = first delivery) of `scope`, an event id (or
    /// another path's own scope, such as `success_page:{session}`).
    pub fn new(installation: impl Into<String>, scope: impl Into<String>, attempt: u32) -> Self {
        Self {
            installation: installation.into(),
            scope: scope.into(),
            attempt,
        }
    }

    /// Whether this is the first attempt (a crash redelivers it as the first again).
    pub fn is_first_attempt(&self) -> bool {
        self.attempt == 0
    }

    /// The installation whose keys these are.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// The key of one step in this attempt.
    pub fn key(&self, step: &str) -> Result<IdempotencyKey, Error> {
        match self.attempt {
            0 => self.stable_key(step),
            n => make(format!(
                "kassa:{}:{}:{step}:retry{n}",
                self.installation, self.scope
            )),
        }
    }

    /// The same key for every attempt, for a step whose state cannot be read back first.
    pub fn stable_key(&self, step: &str) -> Result<IdempotencyKey, Error> {
        make(format!("kassa:{}:{}:{step}", self.installation, self.scope))
    }
}

/// Longest key a caller may give (Stripe allows 255; Kassa's prefix and the installation id take
/// the rest).
pub const MAX_CALLER_KEY: usize = 200;

/// A caller's Idempotency-Key Kassa cannot send: empty, longer than [`MAX_CALLER_KEY`], or not
/// visible ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCallerKey(pub String);

/// Whether `key` is 1 to [`MAX_CALLER_KEY`] visible ASCII characters (no spaces).
pub fn well_formed_caller_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_CALLER_KEY && key.bytes().all(|b| b.is_ascii_graphic())
}

/// `kassa:{installation}:{scope}:{key}`.
fn scoped(installation: &str, scope: &str, key: &str) -> Result<IdempotencyKey, InvalidCallerKey> {
    IdempotencyKey::new(format!("kassa:{installation}:{scope}:{key}"))
        .map_err(|e| InvalidCallerKey(e.to_string()))
}

/// The key Kassa sends for a request under `scope` that carries the caller's own `key` (the
/// `Idempotency-Key` header, or `--idempotency-key`): a client retrying after a time-out gets
/// the first result back instead of a second object.
pub fn caller(
    installation: &str,
    scope: &str,
    key: &str,
) -> Result<IdempotencyKey, InvalidCallerKey> {
    if !well_formed_caller_key(key) {
        return Err(InvalidCallerKey(format!(
            "1 to {MAX_CALLER_KEY} visible ASCII characters (no spaces), e.g. a UUID or your order number"
        )));
    }
    scoped(installation, scope, key)
}

/// A key under `scope` derived from a command's arguments (`name`, `value`; order matters): the
/// same arguments give the same key, so running the same command again within Stripe's 24
/// hours replays the first result instead of creating a second object.
pub fn derived(
    installation: &str,
    scope: &str,
    arguments: &[(&str, Option<&str>)],
) -> Result<IdempotencyKey, InvalidCallerKey> {
    // JSON keeps the encoding unambiguous (no value can fake a separator).
    let canonical = serde_json::to_string(arguments).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    scoped(installation, scope, &format!("args-{digest}"))
}

/// A fresh key under `scope`, for a request that has no key of its own (a browser form).
pub fn fresh(installation: &str, scope: &str) -> Result<IdempotencyKey, InvalidCallerKey> {
    scoped(installation, scope, &uuid::Uuid::new_v4().to_string())
}

/// A key for `scope` and the exact text `content` (any characters): a SHA-256 of the content
/// keeps the key short and ASCII, and the same for every Kassa process of the installation.
pub fn content(installation: &str, scope: &str, content: &str) -> Result<IdempotencyKey, Error> {
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    make(format!("kassa:{installation}:{scope}:{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "0123456789abcdef";

    #[test]
    fn keys_name_the_installation_and_what_they_do() {
        assert_eq!(
            charge_attempt(ME, 42, 1, 0).unwrap().as_str(),
            "kassa:0123456789abcdef:charge:42:1"
        );
        assert_eq!(
            charge_attempt(ME, 42, 2, 3).unwrap().as_str(),
            "kassa:0123456789abcdef:charge:42:2:k3"
        );
        assert_eq!(
            recheckout(ME, 42, 1, 1).unwrap().as_str(),
            "kassa:0123456789abcdef:charge:42:1:recheckout:1"
        );
        let scope = KeyScope::new(ME, "evt_1", 0);
        assert_eq!(
            scope.key("attach").unwrap().as_str(),
            "kassa:0123456789abcdef:evt_1:attach"
        );
        let retry = KeyScope::new(ME, "evt_1", 2);
        assert_eq!(
            retry.key("attach").unwrap().as_str(),
            "kassa:0123456789abcdef:evt_1:attach:retry2"
        );
        assert_eq!(
            retry.stable_key("create_customer").unwrap().as_str(),
            "kassa:0123456789abcdef:evt_1:create_customer"
        );
        // Two installations never share a key.
        assert_ne!(
            charge_attempt(ME, 1, 1, 0).unwrap(),
            charge_attempt("fedcba9876543210", 1, 1, 0).unwrap()
        );
        assert_eq!(legacy_charge_attempt(7, 2), "kassa:charge:7:2");
        assert_eq!(
            session_customer(ME, "cs_1").unwrap().as_str(),
            "kassa:0123456789abcdef:checkout_session:cs_1:create_customer"
        );
        assert!(is_own_key(ME, scope.key("attach").unwrap().as_str()));
        assert!(!is_own_key(
            "fedcba9876543210",
            scope.key("attach").unwrap().as_str()
        ));
        assert!(!is_own_key(ME, "kassa:0123456789abcdef0:x"));
        assert!(!is_own_key(ME, &legacy_charge_attempt(7, 2)));
        assert!(!is_own_key(ME, "0123456789abcdef:x"));
    }

    #[test]
    fn caller_keys_carry_the_installation_and_refuse_what_stripe_would() {
        assert_eq!(
            caller(ME, "payment_intent", "order-7").unwrap().as_str(),
            "kassa:0123456789abcdef:payment_intent:order-7"
        );
        for bad in ["", "has space", "tab\tin", &"k".repeat(MAX_CALLER_KEY + 1)] {
            assert!(caller(ME, "checkout", bad).is_err(), "{bad:?}");
        }
        assert!(caller(ME, "connector:legacy_charge", &"k".repeat(MAX_CALLER_KEY)).is_ok());
        let args = [("amount", Some("1999")), ("currency", Some("usd"))];
        let a = derived(ME, "connector:legacy_charge", &args).unwrap();
        assert_eq!(a, derived(ME, "connector:legacy_charge", &args).unwrap());
        assert!(a
            .as_str()
            .starts_with("kassa:0123456789abcdef:connector:legacy_charge:args-"));
        for other in [
            [("amount", Some("1998")), ("currency", Some("usd"))],
            [("amount", Some("1999")), ("currency", None)],
            [("amount", Some("1999\",")), ("currency", Some("usd"))],
        ] {
            assert_ne!(a, derived(ME, "connector:legacy_charge", &other).unwrap());
        }
        assert_ne!(a, derived(ME, "connector:customer", &args).unwrap());
        assert_ne!(
            a,
            derived("fedcba9876543210", "connector:legacy_charge", &args).unwrap(),
            "two installations never share a key"
        );
        assert_ne!(fresh(ME, "shop").unwrap(), fresh(ME, "shop").unwrap());
    }

    #[test]
    fn metadata_names_one_attempt_of_one_installation() {
        let metadata = charge_metadata(ME, 42, 2, "inv-9");
        assert!(intent_names_attempt(ME, &metadata, 42, 2, "inv-9"));
        assert!(!intent_names_attempt(ME, &metadata, 42, 1, "inv-9"));
        assert!(!intent_names_attempt(ME, &metadata, 43, 2, "inv-9"));
        assert!(
            !intent_names_attempt(ME, &metadata, 42, 2, "inv-10"),
            "another charge under a reused id"
        );
        assert!(!intent_names_attempt(
            "fedcba9876543210",
            &metadata,
            42,
            2,
            "inv-9"
        ));
        assert_eq!(owner(ME, &metadata), Owner::Ours);
        assert_eq!(owner("fedcba9876543210", &metadata), Owner::Other);
        assert_eq!(attempt_of(ME, &metadata), Some((42, 2)));
        assert_eq!(attempt_of("fedcba9876543210", &metadata), None);
        let unmarked: Metadata = [(CHARGE_ID_METADATA.to_owned(), "42".to_owned())].into();
        assert_eq!(owner(ME, &unmarked), Owner::Unmarked);
        assert_eq!(attempt_of(ME, &unmarked), None);
        let session = recheckout_metadata(ME, 42);
        assert_eq!(owner(ME, &session), Owner::Ours);
        assert_eq!(
            session.get(CHARGE_ID_METADATA).map(String::as_str),
            Some("42")
        );
    }
}
