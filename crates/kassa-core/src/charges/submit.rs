//! Submitting a back-office charge — for the API (`POST /api/charges`) and the command line
//! (`kassa charge`, `kassa charges import`) alike: the request is checked against Stripe's money
//! rules and Kassa's records ([`validate_charge`]), then the charge is recorded with its first job
//! in one transaction ([`submit_charge`]). The `reference` is the caller's idempotency handle:
//! the same reference is the same charge, forever, not just for Stripe's 24 hours.
//!
//! A charge names a customer of the Stripe account. One Kassa has not recorded yet (it existed
//! before Kassa was installed, or its webhooks are still on their way), or one whose saved card
//! Kassa has not recorded, is looked up on Stripe ([`crate::customers::import_customer`]) and
//! recorded before the request is judged; only a customer Stripe does not know (or has deleted)
//! is refused. That lookup is the only Stripe call a submission makes.

use crate::customers::{import_customer, Imported};
use crate::fields::{self, field_error, FieldError};
use kassa_store::{customers, ChargeRecord, JobRoute, NewCharge, Store, StoreError};
use kassa_stripe::{Client, Mode};
use serde_json::{json, Value};
use tracing::{info, warn};

pub use kassa_wire::charge::ChargeRequest;

/// The mode a charge is submitted in, and that mode's Stripe client when one is at hand (to
/// look up a customer Kassa has not recorded).
#[derive(Debug, Clone, Copy)]
pub struct ChargeMode<'a> {
    /// The charge's mode: its row says so, and it is executed with this mode's client.
    pub mode: Mode,
    /// The client of `mode`, if any.
    pub stripe: Option<&'a Client>,
}

/// Why a charge was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A field of the request is refused (the customer included: unknown, deleted, no card).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The reference is already another charge (another customer, amount or currency): a
    /// reused reference is a mistake to report, not a charge to return silently.
    #[error(
        "reference: {} is already charge {} of {} {} to {}",
        .existing.reference, .existing.id, .existing.amount, .existing.currency, .existing.customer_id
    )]
    ReferenceInUse {
        /// The charge the reference names.
        existing: Box<ChargeRecord>,
    },
    /// Looking the customer up on Stripe failed.
    #[error("looking up {customer} on Stripe: {error}")]
    Lookup {
        /// The customer.
        customer: String,
        /// What failed.
        error: crate::Error,
    },
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// What became of a submitted charge.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Recorded now, its first job queued.
    Created(ChargeRecord),
    /// The reference was recorded before, for the same charge: nothing new.
    Existed(ChargeRecord),
}

/// Why the customer of a charge request cannot be charged as Kassa's records stand.
enum Unchargeable {
    /// Not recorded.
    Unknown,
    /// Recorded as deleted.
    Deleted,
    /// No default card recorded, and no card given.
    NoDefaultCard,
    /// The given card is not recorded as a saved card of the customer.
    NotItsCard(String),
    /// The customer is recorded in the other mode: an id never crosses modes.
    OtherMode {
        /// The customer's mode.
        customer: Mode,
        /// The charge's mode.
        charge: Mode,
    },
}

impl Unchargeable {
    fn error(&self, customer: &str) -> FieldError {
        match self {
            Unchargeable::Unknown => field_error("customer", format!("unknown customer {customer}")),
            Unchargeable::Deleted => {
                field_error("customer", format!("customer {customer} is deleted"))
            }
            Unchargeable::NoDefaultCard => field_error(
                "customer",
                format!("{customer} has no saved default card (give a payment_method of theirs, or have them save one)"),
            ),
            Unchargeable::NotItsCard(pm) => field_error(
                "payment_method",
                format!("{pm} is not a saved card of {customer}"),
            ),
            Unchargeable::OtherMode {
                customer: customer_mode,
                charge,
            } => fields::other_mode("customer", "customer", customer, *customer_mode, *charge),
        }
    }
}

/// The recorded customer `customer`, if a charge to it (on `payment_method`, or its default
/// card) can go ahead as Kassa's records stand.
async fn chargeable(
    store: &Store,
    mode: Mode,
    customer: &str,
    payment_method: Option<&str>,
) -> Result<Result<String, Unchargeable>, StoreError> {
    let known = customers::customer_with_default_card(store.pool(), customer).await?;
    let Some((record, default_card)) = known else {
        return Ok(Err(Unchargeable::Unknown));
    };
    if record.livemode != mode.is_live() {
        return Ok(Err(Unchargeable::OtherMode {
            customer: Mode::from_livemode(record.livemode),
            charge: mode,
        }));
    }
    if record.deleted {
        return Ok(Err(Unchargeable::Deleted));
    }
    match payment_method {
        Some(pm) => {
            let cards = customers::payment_methods_of(store.pool(), &record.id).await?;
            if !cards.iter().any(|c| c.id == pm && c.attached) {
                return Ok(Err(Unchargeable::NotItsCard(pm.to_owned())));
            }
        }
        None if default_card.is_none() => return Ok(Err(Unchargeable::NoDefaultCard)),
        None => {}
    }
    Ok(Ok(record.id))
}

/// The customer to charge: as recorded, or — when the records say no, and `stripe` is given —
/// as Stripe has it now (looked up and recorded first). Only a customer that is still not
/// chargeable then is refused.
async fn customer_to_charge(
    store: &Store,
    mode: ChargeMode<'_>,
    customer: &str,
    payment_method: Option<&str>,
) -> Result<String, SubmitError> {
    let unchargeable = match chargeable(store, mode.mode, customer, payment_method).await? {
        Ok(id) => return Ok(id),
        // Stripe never undeletes a customer, and an id of one mode is never asked of the other
        // mode's key: nothing to look up.
        Err(why @ (Unchargeable::Deleted | Unchargeable::OtherMode { .. })) => {
            return Err(why.error(customer).into())
        }
        Err(why) => why,
    };
    let stripe = mode.stripe;
    let Some(stripe) = stripe else {
        return Err(unchargeable.error(customer).into());
    };
    match import_customer(stripe, store, customer).await {
        Ok(Imported::Recorded { .. }) => {}
        Ok(Imported::Missing) => {
            return Err(field_error(
                "customer",
                format!("unknown customer {customer}: the Stripe account has no such customer"),
            )
            .into())
        }
        Ok(Imported::Deleted) => {
            return Err(field_error(
                "customer",
                format!("customer {customer} is deleted in Stripe"),
            )
            .into())
        }
        Err(error) => {
            warn!(%error, customer, "looking up a customer on Stripe failed");
            return Err(SubmitError::Lookup {
                customer: customer.to_owned(),
                error,
            });
        }
    }
    Ok(chargeable(store, mode.mode, customer, payment_method)
        .await?
        .map_err(|why| why.error(customer))?)
}

/// Stripe's limits on metadata (docs.stripe.com/metadata): "You can add 50 total key-value
/// pairs within these data limits: key: 40 character limit. Square brackets ([ ]) can't be
/// included in keys. value: 500 character limit."
pub const METADATA_MAX_KEYS: usize = 50;
/// The longest metadata key Stripe stores, in characters.
pub const METADATA_KEY_MAX_CHARS: usize = 40;
/// The longest metadata value Stripe stores, in characters.
pub const METADATA_VALUE_MAX_CHARS: usize = 500;
/// The longest `description` Stripe takes on a PaymentIntent (`maxLength: 1000` in Stripe's
/// API specification), in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 1000;
/// The longest `reference`, in characters: it is sent as a metadata value (at most 500) and is
/// the charge's handle in Kassa's records.
pub const REFERENCE_MAX_CHARS: usize = 255;

/// A metadata key as an error message shows it: at most 40 characters of it.
fn shown_key(key: &str) -> String {
    if key.chars().count() <= METADATA_KEY_MAX_CHARS {
        format!("{key:?}")
    } else {
        let head: String = key.chars().take(METADATA_KEY_MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

/// Checks the text a charge carries to Stripe against Stripe's length limits — reference,
/// description and metadata — so a charge is refused when it is submitted (naming the field)
/// rather than failing when it is executed.
pub fn check_text_limits(request: &ChargeRequest) -> Result<(), FieldError> {
    let reference = request
        .reference
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    if reference.is_empty() || reference.chars().count() > REFERENCE_MAX_CHARS {
        return Err(field_error(
            "reference",
            format!("required, 1 to {REFERENCE_MAX_CHARS} characters"),
        ));
    }
    if let Some(description) = &request.description {
        let length = description.chars().count();
        if length > DESCRIPTION_MAX_CHARS {
            return Err(field_error(
                "description",
                format!("{length} characters; Stripe takes at most {DESCRIPTION_MAX_CHARS}"),
            ));
        }
    }
    let Some(Value::Object(metadata)) = &request.metadata else {
        return Ok(());
    };
    if metadata.len() > METADATA_MAX_KEYS {
        return Err(field_error(
            "metadata",
            format!(
                "{} keys; Stripe takes at most {METADATA_MAX_KEYS}",
                metadata.len()
            ),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > METADATA_KEY_MAX_CHARS {
            return Err(field_error(
                "metadata",
                format!(
                    "key {}: 1 to {METADATA_KEY_MAX_CHARS} characters",
                    shown_key(key)
                ),
            ));
        }
        if key.contains(['[', ']']) {
            return Err(field_error(
                "metadata",
                format!(
                    "key {}: Stripe refuses square brackets in keys",
                    shown_key(key)
                ),
            ));
        }
        let length = match value {
            Value::String(text) => text.chars().count(),
            other => other.to_string().chars().count(),
        };
        if length > METADATA_VALUE_MAX_CHARS {
            return Err(field_error(
                format!("metadata.{key}"),
                format!("{length} characters; Stripe takes at most {METADATA_VALUE_MAX_CHARS}"),
            ));
        }
    }
    Ok(())
}

/// Checks a charge request against Stripe's money rules and Kassa's records (looking an
/// unrecorded customer up on `stripe` first, when given); the first problem found is reported
/// with its field. The charge is recorded in `mode`: a customer recorded in the other mode is
/// refused without asking Stripe.
pub async fn validate_charge(
    store: &Store,
    mode: ChargeMode<'_>,
    request: &ChargeRequest,
) -> Result<NewCharge, SubmitError> {
    check_text_limits(request)?;
    let reference = request
        .reference
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    let currency = request
        .currency
        .as_deref()
        .ok_or_else(|| field_error("currency", "required"))?;
    let currency = fields::currency(currency, "currency")?;
    let amount = fields::chargeable_amount(request.amount.as_ref(), &currency, "amount")?;
    let customer = request
        .customer
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    if customer.is_empty() {
        return Err(field_error("customer", "required").into());
    }
    let metadata = match &request.metadata {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => return Err(field_error("metadata", "must be an object").into()),
    };
    let customer_id =
        customer_to_charge(store, mode, customer, request.payment_method.as_deref()).await?;
    Ok(NewCharge {
        reference: reference.to_owned(),
        customer_id,
        payment_method_id: request.payment_method.clone(),
        amount,
        currency: currency.code().to_owned(),
        description: request.description.clone(),
        metadata,
        livemode: mode.mode.is_live(),
    })
}

/// Validates `request` ([`validate_charge`]) and records it with its first job on `route`, in
/// one transaction. The same reference for the same charge again creates nothing.
pub async fn submit_charge(
    store: &Store,
    mode: ChargeMode<'_>,
    route: &JobRoute,
    request: &ChargeRequest,
) -> Result<Submitted, SubmitError> {
    let charge = validate_charge(store, mode, request).await?;
    let (record, created) = store.submit_charge(route, &charge).await?;
    if created {
        info!(charge_id = record.id, reference = %record.reference, "charge recorded and queued");
        return Ok(Submitted::Created(record));
    }
    let same = record.customer_id == charge.customer_id
        && record.livemode == charge.livemode
        && record.amount == charge.amount
        && record.currency == charge.currency;
    if same {
        Ok(Submitted::Existed(record))
    } else {
        Err(SubmitError::ReferenceInUse {
            existing: Box::new(record),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(description: Option<String>, metadata: Option<Value>) -> ChargeRequest {
        ChargeRequest {
            reference: Some("inv-1".into()),
            description,
            metadata,
            ..Default::default()
        }
    }

    fn refused(request: &ChargeRequest) -> (String, String) {
        let error = check_text_limits(request).expect_err("refused");
        (error.field, error.message)
    }

    #[test]
    fn text_is_checked_against_stripes_limits_at_the_edge() {
        let at_most = request(
            Some("é".repeat(DESCRIPTION_MAX_CHARS)),
            Some(Value::Object(
                (0..METADATA_MAX_KEYS)
                    .map(|i| {
                        let key = format!("{i:0>40}");
                        (key, Value::String("ü".repeat(METADATA_VALUE_MAX_CHARS)))
                    })
                    .collect(),
            )),
        );
        assert_eq!(check_text_limits(&at_most), Ok(()));

        let (field, message) = refused(&request(Some("x".repeat(1001)), None));
        assert_eq!(field, "description");
        assert!(message.contains("1001 characters"), "{message}");

        let many: serde_json::Map<String, Value> = (0..51)
            .map(|i| (format!("k{i}"), Value::from("v")))
            .collect();
        let (field, message) = refused(&request(None, Some(Value::Object(many))));
        assert_eq!(field, "metadata");
        assert!(message.contains("51 keys"), "{message}");

        let (field, message) = refused(&request(None, Some(json!({"k".repeat(41): "v"}))));
        assert_eq!(field, "metadata");
        assert!(message.contains("1 to 40 characters"), "{message}");

        let (field, _) = refused(&request(None, Some(json!({"a[b]": "v"}))));
        assert_eq!(field, "metadata");

        let (field, message) = refused(&request(None, Some(json!({"note": "v".repeat(501)}))));
        assert_eq!(field, "metadata.note");
        assert!(message.contains("501 characters"), "{message}");

        let long_reference = ChargeRequest {
            reference: Some("r".repeat(256)),
            ..Default::default()
        };
        assert_eq!(refused(&long_reference).0, "reference");
    }
}
