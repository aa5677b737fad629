//! Stripe's SEPA Direct Debit test account numbers and what debiting each does.
//!
//! Stripe (docs: SEPA Direct Debit, "Test your integration"): SEPA Direct Debit is a delayed notification
//! payment method — a confirmed PaymentIntent is `processing` (its charge `pending`) until the debit
//! settles, then `succeeded` or back to `requires_payment_method`. The test IBANs choose the outcome:
//!
//! | IBAN | outcome |
//! | --- | --- |
//! | AT611904300234573201 | `processing` → `succeeded` |
//! | AT321904300235473204 | `processing` → `succeeded` after at least three minutes |
//! | AT861904300235473202 | `processing` → `requires_payment_method` |
//! | AT051904300235473205 | `processing` → `requires_payment_method` after at least three minutes |
//! | AT591904300235473203 | `processing` → `succeeded` (a dispute follows; disputes are not simulated) |
//! | AT981904300002222227 | fails with `insufficient_funds` |
//!
//! DE89370400440532013000 succeeds too (Stripe's SEPA samples: "use DE89370400440532013000 for testing
//! successful debits"). Any other IBAN with a valid checksum is debited and fails: Stripe's own
//! `stripe trigger checkout.session.async_payment_failed` relies on that with IT60X0542811101000000123456.
//! An IBAN with a bad checksum is refused when the PaymentMethod is created.

/// How a debit ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The funds arrive.
    Succeeds,
    /// The debit fails with this charge `failure_code`.
    Fails(&'static str),
}

/// One test account.
#[derive(Debug, Clone, Copy)]
pub struct TestIban {
    /// The IBAN.
    pub iban: &'static str,
    /// How its debits end.
    pub settlement: Settlement,
    /// Seconds the debit stays `processing` (0: settled at the simulator's next clock tick).
    pub delay_secs: i64,
}

/// Stripe's "at least three minutes".
const THREE_MINUTES: i64 = 180;

/// The Austrian test IBANs of Stripe's SEPA Direct Debit test table.
pub const TEST_IBANS: &[TestIban] = &[
    TestIban {
        iban: "AT611904300234573201",
        settlement: Settlement::Succeeds,
        delay_secs: 0,
    },
    TestIban {
        iban: "AT321904300235473204",
        settlement: Settlement::Succeeds,
        delay_secs: THREE_MINUTES,
    },
    TestIban {
        iban: "AT861904300235473202",
        settlement: Settlement::Fails("generic_decline"),
        delay_secs: 0,
    },
    TestIban {
        iban: "AT051904300235473205",
        settlement: Settlement::Fails("generic_decline"),
        delay_secs: THREE_MINUTES,
    },
    TestIban {
        iban: "AT591904300235473203",
        settlement: Settlement::Succeeds,
        delay_secs: 0,
    },
    TestIban {
        iban: "AT981904300002222227",
        settlement: Settlement::Fails("insufficient_funds"),
        delay_secs: 0,
    },
    TestIban {
        iban: "DE89370400440532013000",
        settlement: Settlement::Succeeds,
        delay_secs: 0,
    },
];

/// An account outside the test table.
const UNLISTED: TestIban = TestIban {
    iban: "",
    settlement: Settlement::Fails("generic_decline"),
    delay_secs: 0,
};

/// The behaviour of an IBAN (spaces ignored): a test account's, else the failing unlisted one.
pub fn lookup(iban: &str) -> &'static TestIban {
    let compact = normalize(iban);
    TEST_IBANS
        .iter()
        .find(|t| t.iban == compact)
        .unwrap_or(&UNLISTED)
}

/// The IBAN without spaces, upper case.
pub fn normalize(iban: &str) -> String {
    iban.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// ISO 13616: two letters, two check digits, up to 30 alphanumerics, and the mod-97 remainder 1.
pub fn is_valid(iban: &str) -> bool {
    let s = normalize(iban);
    if !(15..=34).contains(&s.len())
        || !s.chars().all(|c| c.is_ascii_alphanumeric())
        || !s[..2].chars().all(|c| c.is_ascii_alphabetic())
        || !s[2..4].chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The behaviour of the account a `sepa_debit.fingerprint` names.
pub fn by_fingerprint(fingerprint: Option<&str>) -> &'static TestIban {
    fingerprint
        .and_then(|fp| TEST_IBANS.iter().find(|t| self::fingerprint(t.iban) == fp))
        .unwrap_or(&UNLISTED)
}

/// A stable fingerprint of an account (same IBAN, same fingerprint).
pub fn fingerprint(iban: &str) -> String {
    crate::cards::fingerprint(&normalize(iban))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ibans_have_valid_checksums() {
        for t in TEST_IBANS {
            assert!(is_valid(t.iban), "{}", t.iban);
        }
        assert!(is_valid("DE89 3704 0044 0532 0130 00"));
        assert!(!is_valid("AT611904300234573202"));
        assert!(!is_valid("AT61"));
        assert_eq!(lookup("at32 1904 3002 3547 3204").delay_secs, 180);
        assert_eq!(
            lookup("DE89370400440532013000").settlement,
            Settlement::Succeeds
        );
        assert_eq!(
            lookup("IT60X0542811101000000123456").settlement,
            Settlement::Fails("generic_decline")
        );
    }
}
