//! Stripe's test cards: the `pm_card_…` PaymentMethod ids and `tok_…` tokens, and what charging each does;
//! and the one card the simulator sets aside for live mode.
//!
//! Stripe: test PaymentMethod ids such as `pm_card_visa` can be used directly in test mode; each use
//! yields a PaymentMethod of that card (docs: testing, "Test cards" and "Declined payments").
//!
//! Modes (docs: testing, "use test API keys in all API calls" with test cards; declines, decline codes):
//! in live mode a known test card is declined — `card_declined` with decline code `testmode_decline`
//! ("A Stripe test card number was used"), message "Your card was declined. Your request was in live
//! mode, but used a known test card." — and in test mode a real card is declined with
//! `test_mode_live_card` ("Your request was in test mode, but used a non test (live) card"). The
//! simulator knows no real cards, so it sets one number aside as its live card ([`LIVE_CARD`],
//! simulator-only): it pays in live mode and, being "real", is declined in test mode.

use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::mode::Mode;

/// What happens when a card is set up or charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Every setup and charge succeeds.
    Succeeds,
    /// Setup (attach, SetupIntent) and charges are declined with this outcome.
    Declined(Decline),
    /// Stripe: "Attaching this card to a Customer object succeeds, but attempts to charge the customer fail."
    ChargeCustomerFail,
    /// Stripe (4000002500003155): "requires authentication for off-session payments unless you set it up for
    /// future payments. After you set it up, off-session payments no longer require authentication."
    AuthenticationOnSetup,
    /// Stripe (4000002760003184 and the 3D Secure "required" cards): "requires authentication on all
    /// transactions, regardless of how the card is set up"; with a decline, the payment is declined after
    /// the customer authenticated (4000008260003178 `insufficient_funds`, 4000008400001629
    /// `card_declined`, 4000008400001280 `processing_error`).
    AuthenticationAlways(Option<Decline>),
    /// Stripe (4000003800000446): "requires authentication for one-time and other on-session payments. However,
    /// all off-session payments will succeed as if the card has been previously set up."
    AuthenticationOnSession,
}

/// A decline outcome: Stripe's `code`, `decline_code` and customer-facing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decline {
    /// Error `code` (`card_declined`, `expired_card`, …).
    pub code: &'static str,
    /// Error `decline_code`.
    pub decline_code: &'static str,
    /// Error `message`, Stripe's wording.
    pub message: &'static str,
    /// Error `param`, where Stripe names one (`cvc` for incorrect_cvc).
    pub param: Option<&'static str>,
    /// Radar blocked the payment before it reached the issuer (charge `outcome.type = "blocked"`).
    pub radar_block: bool,
}

const fn declined(
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
) -> Decline {
    Decline {
        code,
        decline_code,
        message,
        param: None,
        radar_block: false,
    }
}

/// Stripe: "Your card was declined." (`card_declined` / `generic_decline`).
pub const GENERIC_DECLINE: Decline = declined(
    "card_declined",
    "generic_decline",
    "Your card was declined.",
);

/// Stripe: `insufficient_funds` — "Your card has insufficient funds."
pub const INSUFFICIENT_FUNDS: Decline = declined(
    "card_declined",
    "insufficient_funds",
    "Your card has insufficient funds.",
);

/// Stripe: a known test card in live mode is declined (decline code `testmode_decline`, docs: decline
/// codes, "A Stripe test card number was used").
pub const TESTMODE_DECLINE: Decline = declined(
    "card_declined",
    "testmode_decline",
    "Your card was declined. Your request was in live mode, but used a known test card.",
);

/// Stripe: a real (non-test) card in test mode is declined with `test_mode_live_card`.
pub const TEST_MODE_LIVE_CARD: Decline = declined(
    "card_declined",
    "test_mode_live_card",
    "Your card was declined. Your request was in test mode, but used a non test (live) card. For a list of valid test cards, visit: https://stripe.com/docs/testing.",
);

/// Stripe: `processing_error` — "An error occurred while processing your card. Try again in a little bit."
pub const PROCESSING_ERROR: Decline = declined(
    "processing_error",
    "processing_error",
    "An error occurred while processing your card. Try again in a little bit.",
);

/// Stripe: `authentication_required` — "Your card was declined. This transaction requires authentication."
pub const AUTHENTICATION_REQUIRED: Decline = declined(
    "authentication_required",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
);

/// Stripe (docs: testing, fraud prevention): Radar blocks the payment; the error is `card_declined` with
/// `decline_code = fraudulent`.
const RADAR_BLOCK: Decline = Decline {
    code: "card_declined",
    decline_code: "fraudulent",
    message: "Your card was declined.",
    param: None,
    radar_block: true,
};

/// The address and CVC checks a card reports (`card.checks`): `pass`, `fail`, `unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// `address_line1_check`.
    pub line1: &'static str,
    /// `address_postal_code_check`.
    pub postal_code: &'static str,
    /// `cvc_check`.
    pub cvc: &'static str,
}

const PASS: Checks = Checks {
    line1: "pass",
    postal_code: "pass",
    cvc: "pass",
};

/// One test card.
#[derive(Debug, Clone, Copy)]
pub struct TestCard {
    /// Card number.
    pub number: &'static str,
    /// PaymentMethod id usable in test mode.
    pub pm: &'static str,
    /// Token usable as a legacy Charges `source` or `card[token]`.
    pub token: &'static str,
    /// Further `pm_card_…` / `tok_…` ids Stripe's docs name for the same card.
    pub aliases: &'static [&'static str],
    /// Card brand (`visa`, `mastercard`, `amex`, …).
    pub brand: &'static str,
    /// `credit`, `debit` or `prepaid`.
    pub funding: &'static str,
    /// Issuing country.
    pub country: &'static str,
    /// The checks the card reports.
    pub checks: Checks,
    /// What the card does.
    pub behaviour: Behaviour,
    /// Label for the hosted checkout page.
    pub label: &'static str,
    /// The simulator's live card ([`LIVE_CARD`]) rather than one of Stripe's test cards.
    pub live: bool,
}

const fn card(
    number: &'static str,
    pm: &'static str,
    token: &'static str,
    brand: &'static str,
    behaviour: Behaviour,
    label: &'static str,
) -> TestCard {
    TestCard {
        number,
        pm,
        token,
        aliases: &[],
        brand,
        funding: "credit",
        country: "US",
        checks: PASS,
        behaviour,
        label,
        live: false,
    }
}

const fn decline(d: Decline) -> Behaviour {
    Behaviour::Declined(d)
}

/// The card test numbers of Stripe's testing docs (docs.stripe.com/testing: "Cards by brand", "Declined
/// payments", "Fraud prevention", "Invalid data", "Authentication and setup", "3D Secure"), each with its
/// `pm_card_…` PaymentMethod and `tok_…` token ids. A number the table lacks is an incorrect number.
pub const TEST_CARDS: &[TestCard] = &[
    // Cards by brand: every payment succeeds.
    card("4242424242424242", "pm_card_visa", "tok_visa", "visa", Behaviour::Succeeds, "Visa — succeeds"),
    TestCard { funding: "debit", ..card("4000056655665556", "pm_card_visa_debit", "tok_visa_debit", "visa", Behaviour::Succeeds, "Visa (debit) — succeeds") },
    card("5555555555554444", "pm_card_mastercard", "tok_mastercard", "mastercard", Behaviour::Succeeds, "Mastercard — succeeds"),
    TestCard { funding: "debit", ..card("5200828282828210", "pm_card_mastercard_debit", "tok_mastercard_debit", "mastercard", Behaviour::Succeeds, "Mastercard (debit) — succeeds") },
    TestCard { funding: "prepaid", ..card("5105105105105100", "pm_card_mastercard_prepaid", "tok_mastercard_prepaid", "mastercard", Behaviour::Succeeds, "Mastercard (prepaid) — succeeds") },
    // Stripe: American Express cards do not support 3D Secure (`pm_card_amex_threeDSecureNotSupported`).
    TestCard { aliases: &["pm_card_amex_threeDSecureNotSupported", "tok_amex_threeDSecureNotSupported"], ..card("378282246310005", "pm_card_amex", "tok_amex", "amex", Behaviour::Succeeds, "American Express — succeeds") },
    card("6011111111111117", "pm_card_discover", "tok_discover", "discover", Behaviour::Succeeds, "Discover — succeeds"),
    card("3056930009020004", "pm_card_diners", "tok_diners", "diners", Behaviour::Succeeds, "Diners Club — succeeds"),
    TestCard { country: "JP", ..card("3566002020360505", "pm_card_jcb", "tok_jcb", "jcb", Behaviour::Succeeds, "JCB — succeeds") },
    TestCard { country: "CN", ..card("6200000000000005", "pm_card_unionpay", "tok_unionpay", "unionpay", Behaviour::Succeeds, "UnionPay — succeeds") },
    // Declined payments.
    TestCard { aliases: &["pm_card_chargeDeclined", "tok_chargeDeclined"], ..card("4000000000000002", "pm_card_visa_chargeDeclined", "tok_visa_chargeDeclined", "visa", decline(GENERIC_DECLINE), "Declined (generic_decline)") },
    TestCard { aliases: &["pm_card_chargeDeclinedInsufficientFunds", "tok_chargeDeclinedInsufficientFunds"], ..card("4000000000009995", "pm_card_visa_chargeDeclinedInsufficientFunds", "tok_visa_chargeDeclinedInsufficientFunds", "visa", decline(INSUFFICIENT_FUNDS), "Declined (insufficient_funds)") },
    TestCard { aliases: &["pm_card_chargeDeclinedLostCard", "tok_chargeDeclinedLostCard"], ..card("4000000000009987", "pm_card_visa_chargeDeclinedLostCard", "tok_visa_chargeDeclinedLostCard", "visa", decline(declined("card_declined", "lost_card", "Your card was declined.")), "Declined (lost_card)") },
    TestCard { aliases: &["pm_card_chargeDeclinedStolenCard", "tok_chargeDeclinedStolenCard"], ..card("4000000000009979", "pm_card_visa_chargeDeclinedStolenCard", "tok_visa_chargeDeclinedStolenCard", "visa", decline(declined("card_declined", "stolen_card", "Your card was declined.")), "Declined (stolen_card)") },
    TestCard { aliases: &["pm_card_visa_chargeDeclinedExpiredCard", "tok_visa_chargeDeclinedExpiredCard"], ..card("4000000000000069", "pm_card_chargeDeclinedExpiredCard", "tok_chargeDeclinedExpiredCard", "visa", decline(declined("expired_card", "expired_card", "Your card has expired.")), "Declined (expired_card)") },
    TestCard { aliases: &["pm_card_visa_chargeDeclinedIncorrectCvc", "tok_visa_chargeDeclinedIncorrectCvc"], ..card("4000000000000127", "pm_card_chargeDeclinedIncorrectCvc", "tok_chargeDeclinedIncorrectCvc", "visa", decline(Decline { param: Some("cvc"), ..declined("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.") }), "Declined (incorrect_cvc)") },
    TestCard { aliases: &["pm_card_visa_chargeDeclinedProcessingError", "tok_visa_chargeDeclinedProcessingError"], ..card("4000000000000119", "pm_card_chargeDeclinedProcessingError", "tok_chargeDeclinedProcessingError", "visa", decline(PROCESSING_ERROR), "Declined (processing_error)") },
    card("4000000000006975", "pm_card_visa_chargeDeclinedVelocityLimitExceeded", "tok_visa_chargeDeclinedVelocityLimitExceeded", "visa", decline(declined("card_declined", "card_velocity_exceeded", "Your card was declined for making repeated attempts too frequently or exceeding its amount limit.")), "Declined (card_velocity_exceeded)"),
    card("4000000000000341", "pm_card_chargeCustomerFail", "tok_chargeCustomerFail", "visa", Behaviour::ChargeCustomerFail, "Attaches, every charge declined"),
    // Fraud prevention: Radar blocks the "always blocked" and "highest risk" cards; the others succeed
    // with the check results Stripe documents for them.
    TestCard { aliases: &["pm_card_chargeDeclinedFraudulent", "tok_chargeDeclinedFraudulent", "pm_card_visa_chargeDeclinedFraudulent", "tok_visa_chargeDeclinedFraudulent"], ..card("4100000000000019", "pm_card_radarBlock", "tok_radarBlock", "visa", decline(RADAR_BLOCK), "Always blocked (fraudulent)") },
    card("4000000000004954", "pm_card_riskLevelHighest", "tok_riskLevelHighest", "visa", decline(RADAR_BLOCK), "Highest risk, blocked (fraudulent)"),
    card("4000000000009235", "pm_card_riskLevelElevated", "tok_riskLevelElevated", "visa", Behaviour::Succeeds, "Elevated risk — succeeds"),
    TestCard { checks: Checks { cvc: "fail", ..PASS }, ..card("4000000000000101", "pm_card_cvcCheckFail", "tok_cvcCheckFail", "visa", Behaviour::Succeeds, "CVC check fails — succeeds") },
    TestCard { checks: Checks { postal_code: "fail", ..PASS }, ..card("4000000000000036", "pm_card_avsZipFail", "tok_avsZipFail", "visa", Behaviour::Succeeds, "Postal code check fails — succeeds") },
    TestCard { checks: Checks { line1: "fail", ..PASS }, ..card("4000000000000028", "pm_card_avsLine1Fail", "tok_avsLine1Fail", "visa", Behaviour::Succeeds, "Line 1 check fails — succeeds") },
    TestCard { checks: Checks { line1: "fail", postal_code: "fail", cvc: "pass" }, ..card("4000000000000010", "pm_card_avsFail", "tok_avsFail", "visa", Behaviour::Succeeds, "Address checks fail — succeeds") },
    TestCard { checks: Checks { line1: "unavailable", postal_code: "unavailable", cvc: "pass" }, ..card("4000000000000044", "pm_card_avsUnchecked", "tok_avsUnchecked", "visa", Behaviour::Succeeds, "Address unavailable — succeeds") },
    // Balance and refund behaviours outside the payment itself: the payment succeeds.
    card("4000000000000077", "pm_card_bypassPending", "tok_bypassPending", "visa", Behaviour::Succeeds, "Funds available at once — succeeds"),
    card("4000000000000259", "pm_card_createDispute", "tok_createDispute", "visa", Behaviour::Succeeds, "Disputed later — succeeds"),
    // Authentication and setup.
    card("4000002500003155", "pm_card_authenticationRequiredOnSetup", "tok_authenticationRequiredOnSetup", "visa", Behaviour::AuthenticationOnSetup, "3D Secure on setup, then off-session OK"),
    card("4000002760003184", "pm_card_authenticationRequired", "tok_authenticationRequired", "visa", Behaviour::AuthenticationAlways(None), "3D Secure always (off-session fails)"),
    card("4000008260003178", "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds", "tok_authenticationRequiredChargeDeclinedInsufficientFunds", "visa", Behaviour::AuthenticationAlways(Some(INSUFFICIENT_FUNDS)), "3D Secure always, then insufficient_funds"),
    card("4000003800000446", "pm_card_authenticationRequiredSetupForOffSession", "tok_authenticationRequiredSetupForOffSession", "visa", Behaviour::AuthenticationOnSession, "3D Secure on-session, off-session OK"),
    // 3D Secure.
    card("4000000000003220", "pm_card_threeDSecure2Required", "tok_threeDSecure2Required", "visa", Behaviour::AuthenticationAlways(None), "3D Secure 2 required"),
    card("4000000000003063", "pm_card_threeDSecureRequired", "tok_threeDSecureRequired", "visa", Behaviour::AuthenticationAlways(None), "3D Secure required"),
    card("4000008400001629", "pm_card_threeDSecureRequiredChargeDeclined", "tok_threeDSecureRequiredChargeDeclined", "visa", Behaviour::AuthenticationAlways(Some(GENERIC_DECLINE)), "3D Secure required, then declined"),
    card("4000008400001280", "pm_card_threeDSecureRequiredProcessingError", "tok_threeDSecureRequiredProcessingError", "visa", Behaviour::AuthenticationAlways(Some(PROCESSING_ERROR)), "3D Secure required, then processing_error"),
    card("4000000000003055", "pm_card_threeDSecureOptional", "tok_threeDSecureOptional", "visa", Behaviour::Succeeds, "3D Secure supported, not required — succeeds"),
];

/// The simulator's card for live mode (simulator-only, not a Stripe test card): it pays in live mode,
/// where Stripe's test cards are declined with `testmode_decline`, and is declined in test mode with
/// `test_mode_live_card`, as a real card would be. Number 4000 0000 0000 7775, PaymentMethod
/// `pm_card_simulatorLive`, token `tok_simulatorLive`.
pub const LIVE_CARD: TestCard = TestCard {
    live: true,
    ..card(
        "4000000000007775",
        "pm_card_simulatorLive",
        "tok_simulatorLive",
        "visa",
        Behaviour::Succeeds,
        "Simulator live card — succeeds in live mode",
    )
};

/// Every card the simulator knows: Stripe's test cards, then its live card.
pub fn all() -> impl Iterator<Item = &'static TestCard> {
    TEST_CARDS.iter().chain(std::iter::once(&LIVE_CARD))
}

/// The card behind a `pm_card_…` id, a `tok_…` token or a card number.
pub fn lookup(id_or_number: &str) -> Option<&'static TestCard> {
    all().find(|c| {
        c.pm == id_or_number
            || c.token == id_or_number
            || c.number == id_or_number
            || c.aliases.contains(&id_or_number)
    })
}

/// What a card does in `mode`: its own behaviour in its own mode; a test card in live mode and the
/// live card in test mode are declined as Stripe declines them.
pub fn behaviour_in(card: &TestCard, mode: Mode) -> Behaviour {
    match (card.live, mode) {
        (false, Mode::Live) => Behaviour::Declined(TESTMODE_DECLINE),
        (true, Mode::Test) => Behaviour::Declined(TEST_MODE_LIVE_CARD),
        _ => card.behaviour,
    }
}

/// The test card behind a `pm_card_…` PaymentMethod id (Stripe: usable directly in test mode).
pub fn by_payment_method_id(id: &str) -> Option<&'static TestCard> {
    if !id.starts_with("pm_card_") {
        return None;
    }
    lookup(id)
}

/// The test card behind a `tok_…` token.
pub fn by_token(id: &str) -> Option<&'static TestCard> {
    if !id.starts_with("tok_") {
        return None;
    }
    lookup(id)
}

/// The test card of a stored card object (by its `fingerprint`).
pub fn for_card_details(card: &Value) -> Option<&'static TestCard> {
    static FINGERPRINTS: OnceLock<Vec<String>> = OnceLock::new();
    let fp = card.get("fingerprint")?.as_str()?;
    let prints = FINGERPRINTS.get_or_init(|| all().map(|c| fingerprint(c.number)).collect());
    prints
        .iter()
        .position(|f| f == fp)
        .and_then(|i| all().nth(i))
}

/// Stripe: a fingerprint "uniquely identifies this particular card number"; same number, same fingerprint.
pub fn fingerprint(number: &str) -> String {
    let digest = Sha256::digest(number.as_bytes());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    digest
        .iter()
        .take(16)
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

/// Expiry given to test cards: December, three years ahead (Stripe accepts "any future date").
pub fn expiry(now: i64) -> (i64, i64) {
    // 365.25 days a year is close enough for a year number.
    let year = 1970 + now / 31_557_600;
    (12, year + 3)
}

/// The `card` hash of a PaymentMethod of this test card (docs: the PaymentMethod object).
pub fn card_hash(card: &TestCard, now: i64) -> Value {
    let (exp_month, exp_year) = expiry(now);
    let last4 = &card.number[card.number.len() - 4..];
    json!({
        "brand": card.brand,
        "checks": {"address_line1_check": card.checks.line1, "address_postal_code_check": card.checks.postal_code, "cvc_check": card.checks.cvc},
        "country": card.country,
        "display_brand": card.brand,
        "exp_month": exp_month,
        "exp_year": exp_year,
        "fingerprint": fingerprint(card.number),
        "funding": card.funding,
        "generated_from": null,
        "last4": last4,
        "networks": {"available": [card.brand], "preferred": null},
        "regulated_status": "unregulated",
        "three_d_secure_usage": {"supported": true},
        "wallet": null
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(
            lookup("pm_card_visa").map(|c| c.number),
            Some("4242424242424242")
        );
        assert_eq!(
            lookup("tok_chargeDeclined").map(|c| c.pm),
            Some("pm_card_visa_chargeDeclined")
        );
        assert!(lookup("pm_nope").is_none());
        assert_eq!(
            by_payment_method_id("pm_card_chargeDeclined").map(|c| c.number),
            Some("4000000000000002")
        );
        assert!(by_payment_method_id("tok_visa").is_none());
        assert!(by_token("pm_card_visa").is_none());
        let hash = card_hash(lookup("pm_card_visa").unwrap(), 1_700_000_000);
        assert_eq!(hash["last4"], "4242");
        assert_eq!(for_card_details(&hash).map(|c| c.pm), Some("pm_card_visa"));
        assert!(hash["exp_year"].as_i64().unwrap() > 2023);
    }

    #[test]
    fn the_live_card_pays_in_live_mode_only_and_test_cards_in_test_mode_only() {
        let live = lookup("4000000000007775").unwrap();
        assert!(live.live);
        assert_eq!(
            lookup("pm_card_simulatorLive").map(|c| c.number),
            Some(live.number)
        );
        assert_eq!(
            lookup("tok_simulatorLive").map(|c| c.number),
            Some(live.number)
        );
        assert!(TEST_CARDS
            .iter()
            .all(|c| c.number != live.number && !c.live));
        assert_eq!(behaviour_in(live, Mode::Live), Behaviour::Succeeds);
        assert_eq!(
            behaviour_in(live, Mode::Test),
            Behaviour::Declined(TEST_MODE_LIVE_CARD)
        );
        let visa = lookup("pm_card_visa").unwrap();
        assert_eq!(behaviour_in(visa, Mode::Test), Behaviour::Succeeds);
        assert_eq!(
            behaviour_in(visa, Mode::Live),
            Behaviour::Declined(TESTMODE_DECLINE)
        );
        let hash = card_hash(live, 1_700_000_000);
        assert_eq!(for_card_details(&hash).map(|c| c.pm), Some(live.pm));
        // A valid card number (Luhn).
        let digits: Vec<u32> = live.number.chars().filter_map(|c| c.to_digit(10)).collect();
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, d)| {
                if i % 2 == 1 {
                    let x = d * 2;
                    if x > 9 {
                        x - 9
                    } else {
                        x
                    }
                } else {
                    *d
                }
            })
            .sum();
        assert_eq!(sum % 10, 0);
    }
}
