//! Save-card links that outlive Checkout: `{KASSA_PUBLIC_URL}/save-card/{token}`.
//!
//! A Checkout Session expires after 24 hours, so a link to one read on day two leads nowhere. A
//! save-card link instead names a customer, a mode and an expiry, signed with the
//! installation's key (HMAC-SHA256, [`sign`]), and a row that can be revoked; opening it
//! ([`open_link`]) creates a fresh setup-mode Checkout Session for that customer and answers its
//! URL. A re-pay link (a declined back-office charge, [`issue_link`] with the charge) makes that
//! session the charge's current re-pay session, so completing it retries the charge as the
//! original link would have; the reminder-then-fail rules still apply to the charge, and once
//! the charge is settled or failed the link says so.
//!
//! Token: `{link id}.{customer}.{t|l}.{expires unix}.{HMAC-SHA256 hex}` — URL-safe, readable,
//! and refused as forged when any part or the signature differs.

use crate::keys;
use crate::Error;
use hmac::{Hmac, Mac};
use kassa_store::charges::{self as store_charges, ChargeStatus};
use kassa_store::payments::{CHECKOUT_SOURCE, SOURCE_METADATA};
use kassa_store::save_card_links::{insert_save_card_link, link_signing_key};
use kassa_store::{
    checkout_sessions, CheckoutPurpose, CheckoutSessionRecord, NewSaveCardLink, OffsetDateTime,
    PgConnection, SaveCardLinkRecord, Store,
};
use kassa_stripe::objects::{CheckoutMode, Metadata};
use kassa_stripe::resources::CreateCheckoutSession;
use kassa_stripe::{Client, Modes};
use sha2::Sha256;
use std::time::Duration;
use tracing::info;

/// How long a link works when nobody says: a week.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a link may work: 90 days.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Metadata key naming the save-card link a Checkout Session was opened from.
pub const LINK_METADATA: &str = "kassa_save_card_link";

/// Why a link does not open.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not a token this installation signed, or no such link (or of the other mode).
    #[error("this link is not valid")]
    Forged,
    /// Past its expiry.
    #[error("this link expired on {0}")]
    Expired(OffsetDateTime),
    /// Revoked by the merchant.
    #[error("this link was withdrawn")]
    Revoked,
    /// A re-pay link whose charge no longer waits for a card (paid, failed or retried).
    #[error("this payment request is closed")]
    Closed,
    /// A request field is refused.
    #[error(transparent)]
    Invalid(#[from] crate::fields::FieldError),
    /// Stripe or the database failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<kassa_stripe::StripeError> for LinkError {
    fn from(error: kassa_stripe::StripeError) -> Self {
        LinkError::Failed(error.into())
    }
}

impl From<kassa_store::StoreError> for LinkError {
    fn from(error: kassa_store::StoreError) -> Self {
        LinkError::Failed(error.into())
    }
}

/// A link made: its row, token and URL.
#[derive(Debug, Clone)]
pub struct IssuedLink {
    /// The stored row.
    pub record: SaveCardLinkRecord,
    /// The signed token.
    pub token: String,
    /// `{public_url}/save-card/{token}`.
    pub url: String,
}

/// `7d`, `12h`, `30m`, `90s` (or a bare number of seconds), at most [`MAX_LINK_TTL`].
pub fn parse_ttl(text: &str, field: &str) -> Result<Duration, crate::fields::FieldError> {
    let text = text.trim();
    let refuse = || {
        crate::fields::field_error(
            field,
            format!("{text:?}: a duration such as 7d, 12h or 30m, at most 90d"),
        )
    };
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number.parse().map_err(|_| refuse())?;
    let seconds = match unit {
        'd' => n.checked_mul(86_400),
        'h' => n.checked_mul(3_600),
        'm' => n.checked_mul(60),
        's' => Some(n),
        _ => None,
    }
    .ok_or_else(refuse)?;
    let ttl = Duration::from_secs(seconds);
    if ttl.is_zero() || ttl > MAX_LINK_TTL {
        return Err(refuse());
    }
    Ok(ttl)
}

fn payload(id: &str, customer: &str, livemode: bool, expires: i64) -> String {
    format!(
        "{id}.{customer}.{}.{expires}",
        if livemode { "l" } else { "t" }
    )
}

/// The signature of a token's payload under `key`.
pub fn sign(key: &[u8], payload: &str) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"kassa-save-card-v1\n");
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn verify(key: &[u8], payload: &str, signature: &str) -> bool {
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"kassa-save-card-v1\n");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// The parts of a token, before its signature is checked.
struct Token<'a> {
    id: &'a str,
    customer: &'a str,
    livemode: bool,
    expires: i64,
    payload: &'a str,
    signature: &'a str,
}

fn parse_token(token: &str) -> Option<Token<'_>> {
    if token.len() > 512 {
        return None;
    }
    let (payload, signature) = token.rsplit_once('.')?;
    let mut parts = payload.split('.');
    let (id, customer, mode, expires) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !id.starts_with("scl_") || !customer.starts_with("cus_") {
        return None;
    }
    let livemode = match mode {
        "t" => false,
        "l" => true,
        _ => return None,
    };
    Some(Token {
        id,
        customer,
        livemode,
        expires: expires.parse().ok()?,
        payload,
        signature,
    })
}

fn random_key() -> [u8; 32] {
    rand::random()
}

/// Makes a link for `customer` (in `conn`'s transaction, so a re-pay link commits with its
/// charge's state), signed with the installation's key.
pub async fn issue_link(
    conn: &mut PgConnection,
    public_url: &str,
    customer: &str,
    livemode: bool,
    charge_id: Option<i64>,
    expires_at: OffsetDateTime,
) -> Result<IssuedLink, Error> {
    let key = link_signing_key(&mut *conn, &random_key()).await?;
    let id = format!("scl_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
    let record = insert_save_card_link(
        &mut *conn,
        &NewSaveCardLink {
            id: id.clone(),
            customer_id: customer.to_owned(),
            livemode,
            charge_id,
            expires_at,
        },
    )
    .await?;
    let payload = payload(&id, customer, livemode, expires_at.unix_timestamp());
    let token = format!("{payload}.{}", sign(&key, &payload));
    let url = format!("{}/save-card/{token}", public_url.trim_end_matches('/'));
    info!(link = %id, customer, charge_id, "save-card link issued");
    Ok(IssuedLink { record, token, url })
}

/// A link for the existing Stripe customer `customer`, working for `ttl`, of the mode of
/// `stripe`'s key. A customer Kassa holds in the other mode is refused without asking Stripe.
pub async fn create_link(
    stripe: &Client,
    store: &Store,
    public_url: &str,
    customer: &str,
    ttl: Duration,
) -> Result<IssuedLink, LinkError> {
    if !customer.starts_with("cus_")
        || customer.len() > 255
        || !customer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(crate::fields::field_error("customer", "a Stripe customer id (cus_…)").into());
    }
    crate::customers::check_customer_mode(store, customer, stripe.mode(), "customer").await??;
    match stripe.customers().retrieve(customer, &[]).await {
        Ok(found) if !found.deleted => {}
        Ok(_) => {
            return Err(
                crate::fields::field_error("customer", format!("{customer} is deleted")).into(),
            )
        }
        Err(error) if error.is_resource_missing() => {
            return Err(crate::fields::field_error(
                "customer",
                format!("unknown customer {customer}"),
            )
            .into())
        }
        Err(error) => return Err(error.into()),
    }
    let expires_at = OffsetDateTime::now_utc() + ttl;
    let mut conn = store
        .pool()
        .acquire()
        .await
        .map_err(kassa_store::StoreError::from)?;
    Ok(issue_link(
        &mut conn,
        public_url,
        customer,
        stripe.mode().is_live(),
        None,
        expires_at,
    )
    .await?)
}

/// Opens the link of `token`: a fresh setup-mode Checkout Session for its customer, made with
/// the key of the link's own mode, whose URL is returned; a forged, expired or revoked link (or
/// a re-pay link whose charge no longer waits) is refused with why.
pub async fn open_link(
    modes: &Modes,
    store: &Store,
    public_url: &str,
    token: &str,
) -> Result<String, LinkError> {
    let parsed = parse_token(token).ok_or(LinkError::Forged)?;
    let key = store.link_signing_key(&random_key()).await?;
    if !verify(&key, parsed.payload, parsed.signature) {
        return Err(LinkError::Forged);
    }
    let link = store
        .save_card_link(parsed.id)
        .await?
        .ok_or(LinkError::Forged)?;
    let matches = link.customer_id == parsed.customer
        && link.livemode == parsed.livemode
        && link.expires_at.unix_timestamp() == parsed.expires;
    if !matches {
        return Err(LinkError::Forged);
    }
    let stripe = modes
        .for_livemode(link.livemode)
        .map_err(|e| LinkError::Failed(Error::Permanent(e.to_string())))?;
    if link.revoked_at.is_some() {
        return Err(LinkError::Revoked);
    }
    if OffsetDateTime::now_utc() >= link.expires_at {
        return Err(LinkError::Expired(link.expires_at));
    }
    let public = public_url.trim_end_matches('/');
    let mut metadata = Metadata::new();
    metadata.insert(SOURCE_METADATA.into(), CHECKOUT_SOURCE.into());
    metadata.insert(LINK_METADATA.into(), link.id.clone());
    let mut currency = None;
    if let Some(charge_id) = link.charge_id {
        let charge = store.charge(charge_id).await?.ok_or(LinkError::Closed)?;
        if charge.status != ChargeStatus::RequiresRecheckout {
            return Err(LinkError::Closed);
        }
        metadata.extend(keys::recheckout_metadata(
            store.installation_id(),
            charge_id,
        ));
        currency = Some(charge.currency.clone());
    }
    let params = CreateCheckoutSession {
        mode: CheckoutMode::Setup,
        customer: Some(link.customer_id.clone()),
        currency,
        payment_method_types: Some(vec!["card".into()]),
        success_url: Some(format!(
            "{public}/success?session_id={{CHECKOUT_SESSION_ID}}"
        )),
        cancel_url: Some(format!("{public}/cancel")),
        metadata: Some(metadata),
        ..Default::default()
    };
    // Each opening is a new session (the previous one may have expired): a fresh key.
    let key = keys::fresh(store.installation_id(), "save_card_link")
        .map_err(|e| LinkError::Failed(Error::Permanent(e.to_string())))?;
    let session = stripe.checkout_sessions().create(&params, &key).await?;
    let url = session.url.clone().ok_or_else(|| {
        LinkError::Failed(Error::Permanent(format!(
            "session {} has no url",
            session.id
        )))
    })?;
    let expires_at = OffsetDateTime::from_unix_timestamp(session.expires_at)
        .map_err(|e| LinkError::Failed(Error::Permanent(format!("session expiry: {e}"))))?;
    let mut tx = store.begin().await?;
    if let Some(charge_id) = link.charge_id {
        // The charge's current re-pay session from now on: completing it retries the charge.
        let Some(charge) = store_charges::charge_for_update(&mut tx, charge_id).await? else {
            return Err(LinkError::Closed);
        };
        if charge.status != ChargeStatus::RequiresRecheckout {
            return Err(LinkError::Closed);
        }
        // The link the customer holds stays the charge's re-pay link.
        let link_url = charge.recheckout_url.clone().unwrap_or_else(|| url.clone());
        store_charges::set_recheckout_session(
            &mut tx,
            charge_id,
            &session.id,
            &link_url,
            expires_at,
            charge.reminders_sent,
        )
        .await?;
    }
    checkout_sessions::upsert_checkout_session(
        &mut tx,
        &CheckoutSessionRecord {
            id: session.id.clone(),
            mode: "setup".into(),
            status: "open".into(),
            livemode: session.livemode,
            customer_id: Some(link.customer_id.clone()),
            purpose: if link.charge_id.is_some() {
                CheckoutPurpose::Recheckout
            } else {
                CheckoutPurpose::Setup
            },
            charge_id: link.charge_id,
            setup_intent_id: session.setup_intent.as_ref().map(|s| s.id().to_owned()),
            payment_intent_id: None,
            payment_method_id: None,
            url: Some(url.clone()),
            expires_at: Some(expires_at),
            completed_at: None,
        },
    )
    .await?;
    kassa_store::save_card_links::link_opened(&mut tx, &link.id).await?;
    tx.commit().await.map_err(kassa_store::StoreError::from)?;
    info!(link = %link.id, checkout_session = %session.id, "save-card link opened");
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(
            parse_ttl("7d", "expires").unwrap(),
            Duration::from_secs(604_800)
        );
        assert_eq!(
            parse_ttl("12h", "expires").unwrap(),
            Duration::from_secs(43_200)
        );
        assert_eq!(parse_ttl("90", "expires").unwrap(), Duration::from_secs(90));
        for bad in ["", "0d", "91d", "7w", "d", "-1h", "1.5h"] {
            assert!(parse_ttl(bad, "expires").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_token_with_any_part_changed_is_refused() {
        let key = [7u8; 32];
        let payload = payload("scl_abcdefgh", "cus_123", false, 1_900_000_000);
        let token = format!("{payload}.{}", sign(&key, &payload));
        let parsed = parse_token(&token).unwrap();
        assert!(verify(&key, parsed.payload, parsed.signature));
        assert!(!verify(&[8u8; 32], parsed.payload, parsed.signature));
        for forged in [
            token.replace("cus_123", "cus_124"),
            token.replace(".t.", ".l."),
            token.replace("1900000000", "1900000001"),
        ] {
            let parsed = parse_token(&forged).unwrap();
            assert!(!verify(&key, parsed.payload, parsed.signature), "{forged}");
        }
        assert!(parse_token("scl_x.cus_1.t.5").is_none());
        assert!(parse_token("not a token").is_none());
    }
}
