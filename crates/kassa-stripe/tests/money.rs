//! Property tests for `kassa_stripe::money`: formatting never panics and never changes the
//! amount, and validation agrees with Stripe's rules for every currency.

use kassa_stripe::money::{format_amount, validate_amount, Currency, MoneyError, MAX_AMOUNT};
use proptest::prelude::*;

fn any_currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    proptest::sample::select(all)
}

/// The digits of `text`, leading zeros dropped ("$0.05" → "5", "¥1,000" → "1000").
fn digits_of(text: &str) -> String {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

proptest! {
    #[test]
    fn formats_any_amount_keeping_its_digits(amount in any::<i64>(), currency in any_currency()) {
        let text = format_amount(amount, &currency);
        prop_assert_eq!(digits_of(&text), amount.unsigned_abs().to_string());
        prop_assert_eq!(text.starts_with('-'), amount < 0);
    }

    #[test]
    fn decimals_match_the_exponent(amount in any::<i64>(), currency in any_currency()) {
        let text = format_amount(amount, &currency);
        match currency.exponent() {
            0 => prop_assert!(!text.contains('.'), "{} has a decimal point", text),
            exponent => {
                let (_, after) = text.split_once('.').expect("a decimal point");
                let fraction: String = after.chars().take_while(char::is_ascii_digit).collect();
                prop_assert_eq!(fraction.len(), exponent as usize);
            }
        }
    }

    #[test]
    fn thousands_are_grouped_by_three(amount in 0i64..=i64::MAX, currency in any_currency()) {
        let text = format_amount(amount, &currency);
        let number: String = text
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .collect();
        let groups: Vec<&str> = number.split(',').collect();
        prop_assert!(!groups[0].is_empty() && groups[0].len() <= 3, "{}", text);
        for group in &groups[1..] {
            prop_assert_eq!(group.len(), 3, "{}", text);
        }
    }

    #[test]
    fn validation_matches_stripe_rules(amount in any::<i64>(), currency in any_currency()) {
        let verdict = validate_amount(amount, &currency);
        let stripe_accepts = amount > 0
            && amount <= MAX_AMOUNT
            && amount % currency.amount_step() == 0
            && amount >= currency.minimum_charge();
        prop_assert_eq!(verdict.is_ok(), stripe_accepts);
        if let Err(error) = verdict {
            // Every message names the currency, so a finance person knows which rule applies.
            prop_assert!(error.to_string().contains(currency.code()), "{}", error);
        }
    }

    #[test]
    fn three_decimal_amounts_must_end_in_zero(tens in 1i64..9_999_999, last in 1i64..10) {
        for code in ["bhd", "jod", "kwd", "omr", "tnd"] {
            let currency = Currency::parse(code).unwrap();
            prop_assert_eq!(validate_amount(tens * 10, &currency), Ok(()));
            let finer = validate_amount(tens * 10 + last, &currency);
            let is_finer = matches!(finer, Err(MoneyError::FinerThanStripeAllows { .. }));
            prop_assert!(is_finer);
        }
    }

    #[test]
    fn parsing_any_string_never_panics(code in ".{0,8}") {
        match Currency::parse(&code) {
            Ok(currency) => prop_assert_eq!(currency.code(), code.trim().to_ascii_lowercase()),
            Err(MoneyError::UnknownCurrency { code: given }) => prop_assert_eq!(given, code),
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn every_minimum_passes_its_own_validation() {
    for currency in Currency::all() {
        assert_eq!(
            validate_amount(currency.minimum_charge(), &currency),
            Ok(()),
            "{currency}"
        );
        if currency.minimum_charge() > currency.amount_step() {
            let below = currency.minimum_charge() - currency.amount_step();
            assert!(matches!(
                validate_amount(below, &currency),
                Err(MoneyError::BelowMinimum { .. })
            ));
        }
    }
}
