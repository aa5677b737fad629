//! More properties of amounts and currencies: what `format_amount` prints reads back as the same
//! amount (zero-decimal amounts never scaled), a currency code survives any case, whitespace and
//! serde, and Kassa's money rules never let through what the Stripe simulator — written from the
//! same Stripe docs, separately — refuses.

use kassa_stripe::money::{format_amount, validate_amount, Currency, MAX_AMOUNT};
use kassa_stripe_sim::currency as sim;
use proptest::prelude::*;

fn any_currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    proptest::sample::select(all)
}

fn zero_decimal() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().filter(Currency::is_zero_decimal).collect();
    proptest::sample::select(all)
}

/// Reads a formatted amount back into minor units: drops the symbol or code and the thousands
/// commas, then scales the decimal number by the currency's exponent. `None` if the text does not
/// hold exactly `exponent` decimals.
fn parse_formatted(text: &str, exponent: u32) -> Option<i128> {
    let negative = text.starts_with('-');
    let number: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| *c != ',')
        .collect();
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number.as_str(), ""),
    };
    if fraction.len() != exponent as usize {
        return None;
    }
    let value: i128 = format!("{whole}{fraction}").parse().ok()?;
    Some(if negative { -value } else { value })
}

proptest! {
    #[test]
    fn formatted_amounts_read_back_as_the_same_minor_units(
        amount in any::<i64>(),
        currency in any_currency(),
    ) {
        let text = format_amount(amount, &currency);
        prop_assert_eq!(parse_formatted(&text, currency.exponent()), Some(i128::from(amount)), "{}", text);
    }

    #[test]
    fn zero_decimal_amounts_are_never_scaled(amount in 1i64..=MAX_AMOUNT, currency in zero_decimal()) {
        prop_assert!(currency.is_zero_decimal());
        let text = format_amount(amount, &currency);
        // ¥1,000 is one thousand yen: the digits are the amount, with no decimal point.
        prop_assert!(!text.contains('.'), "{}", text);
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        prop_assert_eq!(digits, amount.to_string());
        // The simulator shows the same number of major units.
        prop_assert_eq!(sim::format_major(amount, currency.code()), amount.to_string());
    }

    #[test]
    fn the_simulator_shows_the_same_major_units(amount in any::<i64>(), currency in any_currency()) {
        prop_assume!(amount != i64::MIN);
        let text = sim::format_major(amount, currency.code());
        prop_assert_eq!(parse_formatted(&text, currency.exponent()), Some(i128::from(amount)), "{}", text);
    }

    #[test]
    fn codes_parse_in_any_case_with_surrounding_whitespace(
        currency in any_currency(),
        upper in proptest::collection::vec(any::<bool>(), 3),
        padding in "[ \t]{0,2}",
    ) {
        let code: String = currency
            .code()
            .chars()
            .zip(&upper)
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        let given = format!("{padding}{code}{padding}");
        let parsed = Currency::parse(&given).unwrap();
        prop_assert_eq!(parsed, currency);
        prop_assert_eq!(parsed.code(), currency.code());
        let json = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(&json, &format!("\"{}\"", currency.code()));
        prop_assert_eq!(serde_json::from_str::<Currency>(&json).unwrap(), currency);
    }

    #[test]
    fn what_kassa_accepts_the_simulator_accepts(amount in any::<i64>(), currency in any_currency()) {
        if validate_amount(amount, &currency).is_ok() {
            prop_assert!(
                sim::check_charge_amount(amount, currency.code(), "amount").is_ok(),
                "Kassa accepts {} {} but the simulator refuses it", amount, currency
            );
        }
    }

    #[test]
    fn amounts_near_the_minimum(currency in any_currency(), below in 1i64..1000) {
        let minimum = currency.minimum_charge();
        prop_assert_eq!(validate_amount(minimum, &currency), Ok(()));
        prop_assert!(validate_amount(minimum - below, &currency).is_err());
        prop_assert!(validate_amount(MAX_AMOUNT + below, &currency).is_err());
    }
}

#[test]
fn every_currency_is_one_the_simulator_supports_with_the_same_exponent() {
    for currency in Currency::all() {
        assert_eq!(
            sim::check_currency(currency.code(), "currency")
                .ok()
                .as_deref(),
            Some(currency.code()),
            "{currency}"
        );
        assert_eq!(
            sim::decimals(currency.code()),
            currency.exponent(),
            "{currency}"
        );
        assert_eq!(
            currency.is_zero_decimal(),
            sim::ZERO_DECIMAL.contains(&currency.code()),
            "{currency}"
        );
    }
    for code in sim::ZERO_DECIMAL.iter().chain(sim::THREE_DECIMAL) {
        assert!(Currency::parse(code).is_ok(), "Kassa does not know {code}");
    }
}
