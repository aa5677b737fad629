//! PaymentMethods: test-card ids made real, cards from tokens or test numbers, SEPA Direct Debit accounts,
//! retrieve, update, attach, detach, list by customer and type.

use serde_json::{json, Value};

use super::customer_param;
use crate::cards::{self, Behaviour, Decline, TestCard};
use crate::debits;
use crate::error::ApiError;
use crate::list;
use crate::params::{merge_metadata, Params};
use crate::state::{new_id, Ctx, Obj};

fn billing_details(email: Option<String>, name: Option<String>) -> Value {
    json!({
        "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
        "email": email,
        "name": name,
        "phone": null,
        "tax_id": null
    })
}

/// `billing_details` from a request's `billing_details[…]` (name, email, phone, address).
fn billing_from(p: &Params) -> Result<Value, ApiError> {
    let b = p.obj("billing_details")?;
    let mut out = billing_details(b.str("email"), b.str("name"));
    out["phone"] = json!(b.str("phone"));
    let a = b.obj("address")?;
    for k in ["city", "country", "line1", "line2", "postal_code", "state"] {
        if let Some(v) = a.str(k) {
            out["address"][k] = json!(v);
        }
    }
    Ok(out)
}

/// Makes a new PaymentMethod of a test card (Stripe: each use of `pm_card_visa` yields a PaymentMethod).
pub fn materialize(
    ctx: &mut Ctx,
    card: &TestCard,
    email: Option<String>,
    name: Option<String>,
) -> Obj {
    let pm = json!({
        "id": new_id("pm_"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": billing_details(email, name),
        "card": cards::card_hash(card, ctx.now),
        "created": ctx.now,
        "customer": null,
        "livemode": ctx.livemode(),
        "metadata": {},
        "type": "card"
    });
    ctx.insert("payment_method", pm)
}

/// The PaymentMethod a parameter names: a stored one, or a new one for a test-card id.
pub fn resolve(ctx: &mut Ctx, id: &str, param: &str) -> Result<Obj, ApiError> {
    if let Some(card) = cards::by_payment_method_id(id) {
        return Ok(materialize(ctx, card, None, None));
    }
    match ctx.store.get_obj(id) {
        Some(v) if v["object"] == "payment_method" => Ok(v.clone()),
        _ => Err(ApiError::no_such_param("PaymentMethod", id, param)),
    }
}

/// The test card behind a PaymentMethod (or a legacy card object).
pub fn card_of(pm: &Value) -> &'static TestCard {
    let hash = if pm["object"] == "card" {
        pm
    } else {
        &pm["card"]
    };
    cards::for_card_details(hash).unwrap_or(&cards::TEST_CARDS[0])
}

/// Stripe's 402 for a card declined while being set up or attached (a zero-amount authorization).
pub fn setup_decline(d: &Decline) -> ApiError {
    ApiError::card_error(d.code, d.message, d.param).with("decline_code", json!(d.decline_code))
}

/// Fails like Stripe when this PaymentMethod could not be attached (declining card, unknown id).
pub fn check_attachable(ctx: &Ctx, id: &str) -> Result<(), ApiError> {
    let card = match cards::by_payment_method_id(id) {
        Some(c) => c,
        None => match ctx.store.get(id) {
            Some(v) if v["object"] == "payment_method" && v["type"] != "card" => return Ok(()),
            Some(v) if v["object"] == "payment_method" => card_of(v),
            _ => {
                return Err(ApiError::no_such_param(
                    "PaymentMethod",
                    id,
                    "payment_method",
                ))
            }
        },
    };
    // Stripe: 4000000000000341 "Attaching this card to a Customer object succeeds, but attempts to charge
    // the customer fail" — the declining cards, by contrast, fail when attached.
    if let Behaviour::Declined(d) = cards::behaviour_in(card, ctx.mode) {
        return Err(setup_decline(&d));
    }
    Ok(())
}

/// Attaches a PaymentMethod (stored or test-card id) to a customer; `payment_method.attached` on change.
pub fn attach_to(ctx: &mut Ctx, id: &str, customer: &str) -> Result<Obj, ApiError> {
    check_attachable(ctx, id)?;
    let pm = resolve(ctx, id, "payment_method")?;
    match pm["customer"].as_str() {
        // Attaching to the customer it already belongs to changes nothing.
        Some(c) if c == customer => Ok(pm),
        Some(_) => Err(ApiError::invalid(
            "The payment method you provided has already been attached to a customer.",
            Some("payment_method"),
        )),
        None => {
            let mut new = (*pm).clone();
            new["customer"] = json!(customer);
            let new = ctx.put(new);
            ctx.emit("payment_method.attached", new.clone(), None);
            Ok(new)
        }
    }
}

/// The expiry and CVC typed with a card number (`card[exp_month]`, `card[exp_year]`, `card[cvc]`),
/// checked as Stripe does (docs: testing, "Invalid data": an invalid month, a year in the past and a
/// two-digit CVC are refused with `invalid_expiry_month`, `invalid_expiry_year`, `invalid_cvc`).
/// A two-digit year means 20YY, as card faces print it.
fn typed_expiry(ctx: &Ctx, card: &Params) -> Result<Option<(i64, i64)>, ApiError> {
    if let Some(cvc) = card.str("cvc") {
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::card_error(
                "invalid_cvc",
                "Your card's security code is invalid.",
                Some("cvc"),
            ));
        }
    }
    let (Some(month), Some(year)) = (card.get("exp_month"), card.get("exp_year")) else {
        return Ok(None);
    };
    let month = crate::params::int_value(month, "card[exp_month]")
        .ok()
        .filter(|m| (1..=12).contains(m))
        .ok_or_else(|| {
            ApiError::card_error(
                "invalid_expiry_month",
                "Your card's expiration month is invalid.",
                Some("exp_month"),
            )
        })?;
    let year = crate::params::int_value(year, "card[exp_year]")
        .ok()
        .map(|y| if (0..100).contains(&y) { 2000 + y } else { y })
        .unwrap_or(0);
    // Months since year 0, now and of the expiry: a card is valid through its expiry month.
    let days = ctx.now.div_euclid(86_400);
    let (now_year, now_month) = civil_year_month(days);
    if year * 12 + month < now_year * 12 + now_month {
        return Err(ApiError::card_error(
            "invalid_expiry_year",
            "Your card's expiration year is invalid.",
            Some("exp_year"),
        ));
    }
    Ok(Some((month, year)))
}

/// Year and month (1–12) of a day counted from 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil_year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// `POST /v1/payment_methods`: `type=card` with `card[token]` (`tok_visa`, …) or a test `card[number]`, or
/// `type=sepa_debit` with `sepa_debit[iban]`.
pub fn create(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "type",
        "card",
        "sepa_debit",
        "billing_details",
        "metadata",
        "allow_redisplay",
        "customer",
        "payment_method",
    ])?;
    let kind = p.req_str("type")?;
    let billing = billing_from(p)?;
    let metadata = super::metadata_or_empty(p)?;
    let pm = match kind.as_str() {
        "card" => {
            let card_params = p.obj("card")?;
            let card = if let Some(tok) = card_params.str("token") {
                cards::by_token(&tok)
                    .ok_or_else(|| ApiError::no_such_param("token", &tok, "card[token]"))?
            } else {
                let number = card_params
                    .str("number")
                    .ok_or_else(|| ApiError::missing("card[number]"))?;
                let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                // Stripe: 4242424242424241 (and any number outside the test table) fails
                // with `incorrect_number` (docs: testing, "Invalid data").
                cards::lookup(&digits).ok_or_else(|| {
                    ApiError::card_error(
                        "incorrect_number",
                        "Your card number is incorrect.",
                        Some("number"),
                    )
                })?
            };
            let expiry = typed_expiry(ctx, &card_params)?;
            let pm = materialize(ctx, card, None, None);
            let mut with = (*pm).clone();
            with["billing_details"] = billing;
            with["metadata"] = metadata;
            if let Some((month, year)) = expiry {
                with["card"]["exp_month"] = json!(month);
                with["card"]["exp_year"] = json!(year);
            }
            return Ok(ctx.put(with));
        }
        "sepa_debit" => {
            let iban = p
                .obj("sepa_debit")?
                .str("iban")
                .ok_or_else(|| ApiError::missing("sepa_debit[iban]"))?;
            if !debits::is_valid(&iban) {
                return Err(ApiError::invalid_code(
                    "invalid_bank_account_iban",
                    "The IBAN you provided is invalid.",
                    Some("sepa_debit[iban]"),
                ));
            }
            // Stripe: a SEPA Direct Debit PaymentMethod "requires the account holder's name and
            // email" (billing_details[name], billing_details[email]).
            for k in ["name", "email"] {
                if billing[k].is_null() {
                    return Err(ApiError::missing(&format!("billing_details[{k}]")));
                }
            }
            let iban = debits::normalize(&iban);
            json!({
                "id": new_id("pm_"),
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": billing,
                "created": ctx.now,
                "customer": null,
                "livemode": ctx.livemode(),
                "metadata": metadata,
                "sepa_debit": {
                    "bank_code": &iban[4..9.min(iban.len())],
                    "branch_code": "",
                    "country": &iban[..2],
                    "fingerprint": debits::fingerprint(&iban),
                    "generated_from": {"charge": null, "setup_attempt": null},
                    "last4": &iban[iban.len() - 4..]
                },
                "type": "sepa_debit"
            })
        }
        other => {
            return Err(ApiError::invalid(
                format!("The simulator supports type=card and type=sepa_debit, got {other}."),
                Some("type"),
            ))
        }
    };
    Ok(ctx.insert("payment_method", pm))
}

/// `GET /v1/payment_methods/{id}`.
pub fn retrieve(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    if cards::by_payment_method_id(id).is_some() {
        return resolve(ctx, id, "id");
    }
    ctx.fetch("payment_method", "PaymentMethod", id, "id")
}

/// `POST /v1/payment_methods/{id}`: metadata, billing details and a card's expiry.
pub fn update(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&["metadata", "billing_details", "allow_redisplay", "card"])?;
    let old = ctx.fetch("payment_method", "PaymentMethod", id, "id")?;
    let mut new = (*old).clone();
    // Stripe (docs: update a PaymentMethod, `card`): a card's `exp_month` and `exp_year` can be
    // updated, e.g. when the bank extends it; each keeps its value when not given.
    let card = p.obj("card")?;
    if old["type"] == "card" {
        if let Some(month) = card.int("exp_month")? {
            if !(1..=12).contains(&month) {
                return Err(ApiError::card_error(
                    "invalid_expiry_month",
                    "Your card's expiration month is invalid.",
                    Some("exp_month"),
                ));
            }
            new["card"]["exp_month"] = json!(month);
        }
        if let Some(year) = card.int("exp_year")? {
            new["card"]["exp_year"] = json!(year);
        }
    }
    if let Some(m) = p.metadata()? {
        merge_metadata(&mut new, m);
    }
    let billing = p.obj("billing_details")?;
    for k in ["email", "name", "phone"] {
        if let Some(v) = billing.str(k) {
            new["billing_details"][k] = json!(v);
        }
    }
    Ok(ctx.update(&old, new, Some("payment_method.updated")))
}

/// What a card network changes on a saved card; each field not given keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkUpdate {
    /// The new expiry month (1 to 12).
    pub exp_month: Option<i64>,
    /// The new expiry year.
    pub exp_year: Option<i64>,
    /// The last four digits of a reissued card's new number.
    pub last4: Option<String>,
}

impl NetworkUpdate {
    /// From the form of `POST /_sim/payment_methods/{id}/network_update`.
    pub fn from_params(p: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            exp_month: p.int("exp_month")?,
            exp_year: p.int("exp_year")?,
            last4: p.str("last4"),
        })
    }
}

/// The card network updates a saved card in place (no API request): Stripe (docs: event types,
/// `payment_method.automatically_updated`: "Occurs whenever a payment method's details are
/// automatically updated by the network"; How cards work: card networks reissue stored cards and
/// update them in place for the Stripe user) changes the card's expiry or number and emits that
/// event, whose `request` names no request and no idempotency key. `last4` given means a new
/// number (a reissued card); each field not given keeps its value. Only cards are updated.
pub fn network_update(ctx: &mut Ctx, id: &str, update: &NetworkUpdate) -> Result<Obj, ApiError> {
    let old = ctx.fetch("payment_method", "PaymentMethod", id, "id")?;
    if old["type"] != "card" {
        return Err(ApiError::invalid(
            format!("PaymentMethod {id} is not a card; only cards are updated by the network."),
            None,
        ));
    }
    let mut new = (*old).clone();
    if let Some(month) = update.exp_month {
        if !(1..=12).contains(&month) {
            return Err(ApiError::invalid(
                "exp_month must be 1 to 12.",
                Some("exp_month"),
            ));
        }
        new["card"]["exp_month"] = json!(month);
    }
    if let Some(year) = update.exp_year {
        new["card"]["exp_year"] = json!(year);
    }
    if let Some(last4) = update.last4.as_deref() {
        if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::invalid(
                "last4 must be four digits.",
                Some("last4"),
            ));
        }
        new["card"]["last4"] = json!(last4);
    }
    Ok(ctx.update(&old, new, Some("payment_method.automatically_updated")))
}

/// `POST /v1/payment_methods/{id}/attach` — attached to this customer already is success; to another, an error.
pub fn attach(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&["customer", "customer_account"])?;
    let customer = p.req_str("customer")?;
    customer_param(ctx, &customer, "customer")?;
    if cards::by_payment_method_id(id).is_none() {
        ctx.fetch("payment_method", "PaymentMethod", id, "payment_method")?;
    }
    attach_to(ctx, id, &customer)
}

/// `POST /v1/payment_methods/{id}/detach`.
pub fn detach(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[])?;
    let old = ctx.fetch("payment_method", "PaymentMethod", id, "payment_method")?;
    if old["customer"].is_null() {
        return Err(ApiError::invalid(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            None,
        ));
    }
    let mut new = (*old).clone();
    new["customer"] = Value::Null;
    let new = ctx.put(new);
    ctx.emit(
        "payment_method.detached",
        new.clone(),
        Some(json!({"customer": old["customer"]})),
    );
    Ok(new)
}

fn list_filtered(
    ctx: &Ctx,
    customer: Option<String>,
    p: &Params,
    url: &str,
) -> Result<Obj, ApiError> {
    let kind = p.str("type");
    list::page(ctx.store, "payment_method", "PaymentMethod", url, p, |pm| {
        customer
            .as_deref()
            .is_none_or(|c| pm["customer"].as_str() == Some(c))
            && kind
                .as_deref()
                .is_none_or(|t| pm["type"].as_str() == Some(t))
    })
}

/// `GET /v1/payment_methods?customer=…&type=…`.
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "customer",
        "type",
        "limit",
        "starting_after",
        "ending_before",
        "customer_account",
    ])?;
    let customer = p.str("customer");
    if let Some(c) = &customer {
        customer_param(ctx, c, "customer")?;
    }
    list_filtered(ctx, customer, p, "/v1/payment_methods")
}

/// `GET /v1/customers/{id}/payment_methods`.
pub fn list_for_customer(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "type",
        "limit",
        "starting_after",
        "ending_before",
        "allow_redisplay",
    ])?;
    ctx.fetch("customer", "customer", id, "customer")?;
    list_filtered(
        ctx,
        Some(id.to_owned()),
        p,
        &format!("/v1/customers/{id}/payment_methods"),
    )
}

#[cfg(test)]
mod tests {
    use super::civil_year_month;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_year_month(0), (1970, 1));
        // 2024-02-29 is day 19782; 2024-03-01 is 19783.
        assert_eq!(civil_year_month(19_782), (2024, 2));
        assert_eq!(civil_year_month(19_783), (2024, 3));
        assert_eq!(civil_year_month(-1), (1969, 12));
    }
}
