//! Currencies: which exist, their minor units, and Stripe's minimum and maximum charge amounts.

use crate::error::ApiError;

/// Stripe: "Zero-decimal currencies: BIF, CLP, DJF, GNF, JPY, KMF, KRW, MGA, PYG, RWF, UGX, VND, VUV, XAF,
/// XOF, XPF" — amounts are whole units, never ×100 (docs: currencies, "Zero-decimal currencies").
pub const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Stripe: three-decimal currencies BHD, JOD, KWD, OMR, TND "require the least-significant (last) digit to
/// be 0" (docs: currencies, "Three-decimal currencies").
pub const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Presentment currencies Stripe supports (docs: currencies, "Supported presentment currencies").
const SUPPORTED: &[&str] = &[
    "usd", "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
    "bdt", "bgn", "bhd", "bif", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad",
    "cdf", "chf", "clp", "cny", "cop", "crc", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp",
    "etb", "eur", "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl",
    "htg", "huf", "idr", "ils", "inr", "isk", "jmd", "jod", "jpy", "kes", "kgs", "khr", "kmf",
    "krw", "kwd", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad", "mdl", "mga", "mkd",
    "mmk", "mnt", "mop", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok",
    "npr", "nzd", "omr", "pab", "pen", "pgk", "php", "pkr", "pln", "pyg", "qar", "ron", "rsd",
    "rub", "rwf", "sar", "sbd", "scr", "sek", "sgd", "shp", "sle", "sos", "srd", "std", "szl",
    "thb", "tjs", "tnd", "top", "try", "ttd", "twd", "tzs", "uah", "ugx", "uyu", "uzs", "vnd",
    "vuv", "wst", "xaf", "xcd", "xof", "xpf", "yer", "zar", "zmw",
];

/// Stripe's minimum charge amounts in minor units (docs: currencies, "Minimum and maximum charge amounts").
/// Other currencies: "the equivalent of $0.50"; without exchange rates the simulator asks for one minor unit.
const MINIMUMS: &[(&str, i64, &str)] = &[
    ("usd", 50, "$"),
    ("aed", 200, "د.إ"),
    ("aud", 50, "$"),
    ("bgn", 100, "лв"),
    ("brl", 50, "R$"),
    ("cad", 50, "$"),
    ("chf", 50, "Fr"),
    ("czk", 1500, "Kč"),
    ("dkk", 250, "kr."),
    ("eur", 50, "€"),
    ("gbp", 30, "£"),
    ("hkd", 400, "$"),
    ("huf", 17500, "Ft"),
    ("inr", 50, "₹"),
    ("jpy", 50, "¥"),
    ("mxn", 1000, "$"),
    ("myr", 200, "RM"),
    ("nok", 300, "kr."),
    ("nzd", 50, "$"),
    ("pln", 200, "zł"),
    ("ron", 200, "lei"),
    ("sek", 300, "kr."),
    ("sgd", 50, "$"),
    ("thb", 1000, "฿"),
];

/// Stripe: "The amount value supports up to eight digits (e.g., a value of 99999999 for a USD charge of
/// $999,999.99)" (docs: API reference, PaymentIntent `amount`).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// Number of decimals of the currency's minor unit (0, 2 or 3).
pub fn decimals(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

/// Formats a minor-unit amount for people: `1099 usd` → `10.99`, `500 jpy` → `500`.
pub fn format_major(amount: i64, currency: &str) -> String {
    let d = decimals(currency);
    if d == 0 {
        return amount.to_string();
    }
    let scale = 10i64.pow(d);
    let sign = if amount < 0 { "-" } else { "" };
    let a = amount.unsigned_abs();
    let scale_u = scale.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        a / scale_u,
        a % scale_u,
        width = d as usize
    )
}

/// Validates a currency code; Stripe: "Must be a supported currency", three-letter ISO code in lowercase.
pub fn check_currency(raw: &str, param: &str) -> Result<String, ApiError> {
    let c = raw.to_ascii_lowercase();
    if SUPPORTED.contains(&c.as_str()) {
        Ok(c)
    } else {
        Err(ApiError::invalid(
            format!(
                "Invalid currency: {raw}. Stripe currently supports these currencies: {}",
                SUPPORTED.join(", ")
            ),
            Some(param),
        ))
    }
}

/// Validates an amount to charge: positive, at least the currency's minimum, at most eight digits, and a
/// multiple of 10 in three-decimal currencies.
pub fn check_charge_amount(amount: i64, currency: &str, param: &str) -> Result<(), ApiError> {
    if amount < 1 {
        return Err(ApiError::invalid(
            "This value must be greater than or equal to 1.",
            Some(param),
        ));
    }
    if amount > MAX_AMOUNT {
        return Err(ApiError::invalid_code(
            "amount_too_large",
            format!(
                "Amount must be no more than {} {currency}",
                format_major(MAX_AMOUNT, currency)
            ),
            Some(param),
        ));
    }
    if THREE_DECIMAL.contains(&currency) && amount % 10 != 0 {
        return Err(ApiError::invalid_code(
            "invalid_amount",
            format!("Amounts in {currency} must have 0 as their last digit (round to the nearest ten), got {amount}."),
            Some(param),
        ));
    }
    if let Some((_, min, symbol)) = MINIMUMS.iter().find(|(c, _, _)| *c == currency) {
        if amount < *min {
            // Stripe: "amount_too_small: The specified amount is less than the minimum amount allowed" with the
            // message "Amount must be at least $0.50 usd" (docs: error codes).
            return Err(ApiError::invalid_code(
                "amount_too_small",
                format!(
                    "Amount must be at least {symbol}{} {currency}",
                    format_major(*min, currency)
                ),
                Some(param),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minor_units() {
        assert_eq!(format_major(1099, "usd"), "10.99");
        assert_eq!(format_major(500, "jpy"), "500");
        assert_eq!(format_major(1230, "kwd"), "1.230");
        assert_eq!(format_major(5, "eur"), "0.05");
    }

    #[test]
    fn minimums_per_currency() {
        assert!(check_charge_amount(50, "usd", "amount").is_ok());
        let e = check_charge_amount(49, "usd", "amount").unwrap_err();
        assert_eq!(e.error["code"], "amount_too_small");
        assert_eq!(e.error["message"], "Amount must be at least $0.50 usd");
        assert_eq!(e.error["param"], "amount");
        assert!(check_charge_amount(30, "gbp", "amount").is_ok());
        assert!(check_charge_amount(29, "gbp", "amount").is_err());
        // JPY is zero-decimal: 50 means ¥50, not ¥0.50.
        assert!(check_charge_amount(50, "jpy", "amount").is_ok());
        let e = check_charge_amount(49, "jpy", "amount").unwrap_err();
        assert_eq!(e.error["message"], "Amount must be at least ¥50 jpy");
    }

    #[test]
    fn three_decimal_last_digit() {
        assert!(check_charge_amount(1230, "kwd", "amount").is_ok());
        assert!(check_charge_amount(1235, "kwd", "amount").is_err());
    }

    #[test]
    fn currency_codes() {
        assert_eq!(check_currency("JPY", "currency").unwrap(), "jpy");
        assert!(check_currency("xyz", "currency").is_err());
    }

    proptest! {
        #[test]
        fn format_never_panics(a in any::<i64>(), c in prop::sample::select(SUPPORTED)) {
            let _ = format_major(a, c);
            let _ = check_charge_amount(a, c, "amount");
        }
    }
}
