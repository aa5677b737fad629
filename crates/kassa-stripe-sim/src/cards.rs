//! Stripe's test cards: the `pm_card_…` PaymentMethod ids and `tok_…` tokens, and what charging each does.
//!
//! Stripe: test PaymentMethod ids such as `pm_card_visa` can be used directly in test mode; each use
//! yields a PaymentMethod of that card (docs: testing, "Test cards" and "Declined payments").

use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
    /// Stripe (4000002760003184): "requires authentication on all transactions, regardless of how the card is set up."
    AuthenticationAlways,
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
}

/// Stripe: "Your card was declined." (`card_declined` / `generic_decline`).
pub const GENERIC_DECLINE: Decline = Decline {
    code: "card_declined",
    decline_code: "generic_decline",
    message: "Your card was declined.",
    param: None,
};

/// Stripe: `authentication_required` — "Your card was declined. This transaction requires authentication."
pub const AUTHENTICATION_REQUIRED: Decline = Decline {
    code: "authentication_required",
    decline_code: "authentication_required",
    message: "Your card was declined. This transaction requires authentication.",
    param: None,
};

/// One test card.
#[derive(Debug, Clone, Copy)]
pub struct TestCard {
    /// Card number.
    pub number: &'static str,
    /// PaymentMethod id usable in test mode.
    pub pm: &'static str,
    /// Token usable as a legacy Charges `source`.
    pub token: &'static str,
    /// Card brand (`visa`, `mastercard`, `amex`).
    pub brand: &'static str,
    /// What the card does.
    pub behaviour: Behaviour,
    /// Label for the hosted checkout page.
    pub label: &'static str,
}

const fn decline(
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
) -> Behaviour {
    Behaviour::Declined(Decline {
        code,
        decline_code,
        message,
        param: None,
    })
}

/// The test cards of Stripe's testing docs (TESTING.md's table) and a few common brands.
pub const TEST_CARDS: &[TestCard] = &[
    TestCard {
        number: "4242424242424242",
        pm: "pm_card_visa",
        token: "tok_visa",
        brand: "visa",
        behaviour: Behaviour::Succeeds,
        label: "Visa — succeeds",
    },
    TestCard {
        number: "5555555555554444",
        pm: "pm_card_mastercard",
        token: "tok_mastercard",
        brand: "mastercard",
        behaviour: Behaviour::Succeeds,
        label: "Mastercard — succeeds",
    },
    TestCard {
        number: "378282246310005",
        pm: "pm_card_amex",
        token: "tok_amex",
        brand: "amex",
        behaviour: Behaviour::Succeeds,
        label: "American Express — succeeds",
    },
    TestCard {
        number: "4000000000000002",
        pm: "pm_card_visa_chargeDeclined",
        token: "tok_chargeDeclined",
        brand: "visa",
        behaviour: Behaviour::Declined(GENERIC_DECLINE),
        label: "Declined (generic_decline)",
    },
    TestCard {
        number: "4000000000009995",
        pm: "pm_card_visa_chargeDeclinedInsufficientFunds",
        token: "tok_chargeDeclinedInsufficientFunds",
        brand: "visa",
        behaviour: decline(
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        label: "Declined (insufficient_funds)",
    },
    TestCard {
        number: "4000000000009987",
        pm: "pm_card_visa_chargeDeclinedLostCard",
        token: "tok_chargeDeclinedLostCard",
        brand: "visa",
        behaviour: decline("card_declined", "lost_card", "Your card was declined."),
        label: "Declined (lost_card)",
    },
    TestCard {
        number: "4000000000000069",
        pm: "pm_card_chargeDeclinedExpiredCard",
        token: "tok_chargeDeclinedExpiredCard",
        brand: "visa",
        behaviour: decline("expired_card", "expired_card", "Your card has expired."),
        label: "Declined (expired_card)",
    },
    TestCard {
        number: "4000000000000127",
        pm: "pm_card_chargeDeclinedIncorrectCvc",
        token: "tok_chargeDeclinedIncorrectCvc",
        brand: "visa",
        behaviour: Behaviour::Declined(Decline {
            code: "incorrect_cvc",
            decline_code: "incorrect_cvc",
            message: "Your card's security code is incorrect.",
            param: Some("cvc"),
        }),
        label: "Declined (incorrect_cvc)",
    },
    TestCard {
        number: "4000000000000119",
        pm: "pm_card_chargeDeclinedProcessingError",
        token: "tok_chargeDeclinedProcessingError",
        brand: "visa",
        behaviour: decline(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        label: "Declined (processing_error)",
    },
    TestCard {
        number: "4000000000000341",
        pm: "pm_card_chargeCustomerFail",
        token: "tok_chargeCustomerFail",
        brand: "visa",
        behaviour: Behaviour::ChargeCustomerFail,
        label: "Attaches, every charge declined",
    },
    TestCard {
        number: "4000002500003155",
        pm: "pm_card_authenticationRequiredOnSetup",
        token: "tok_authenticationRequiredOnSetup",
        brand: "visa",
        behaviour: Behaviour::AuthenticationOnSetup,
        label: "3D Secure on setup, then off-session OK",
    },
    TestCard {
        number: "4000002760003184",
        pm: "pm_card_authenticationRequired",
        token: "tok_authenticationRequired",
        brand: "visa",
        behaviour: Behaviour::AuthenticationAlways,
        label: "3D Secure always (off-session fails)",
    },
    TestCard {
        number: "4000003800000446",
        pm: "pm_card_authenticationRequiredSetupForOffSession",
        token: "tok_authenticationRequiredSetupForOffSession",
        brand: "visa",
        behaviour: Behaviour::AuthenticationOnSession,
        label: "3D Secure on-session, off-session OK",
    },
];

/// The test card behind a `pm_card_…` id, a `tok_…` token or a card number.
pub fn lookup(id_or_number: &str) -> Option<&'static TestCard> {
    TEST_CARDS
        .iter()
        .find(|c| c.pm == id_or_number || c.token == id_or_number || c.number == id_or_number)
}

/// The test card of a stored card object (by its `fingerprint`).
pub fn for_card_details(card: &Value) -> Option<&'static TestCard> {
    static FINGERPRINTS: OnceLock<Vec<String>> = OnceLock::new();
    let fp = card.get("fingerprint")?.as_str()?;
    let all =
        FINGERPRINTS.get_or_init(|| TEST_CARDS.iter().map(|c| fingerprint(c.number)).collect());
    all.iter().position(|f| f == fp).map(|i| &TEST_CARDS[i])
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
        "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
        "country": "US",
        "display_brand": card.brand,
        "exp_month": exp_month,
        "exp_year": exp_year,
        "fingerprint": fingerprint(card.number),
        "funding": "credit",
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
        let hash = card_hash(lookup("pm_card_visa").unwrap(), 1_700_000_000);
        assert_eq!(hash["last4"], "4242");
        assert_eq!(for_card_details(&hash).map(|c| c.pm), Some("pm_card_visa"));
        assert!(hash["exp_year"].as_i64().unwrap() > 2023);
    }
}
