//! Amounts and currencies as Stripe defines them: which currencies Stripe charges in, how many
//! decimals each has, the smallest and largest amount Stripe accepts, and how to show an amount
//! to people ("$19.99", "¥1,000", "1.500 KWD").
//!
//! Amounts are always integers in the currency's minor unit, as Stripe's API takes them; nothing
//! here multiplies a zero-decimal amount by 100 or uses floating point.
//!
//! Sources (docs.stripe.com/currencies unless said otherwise):
//! - "Supported presentment currencies", "Zero-decimal currencies", "Three-decimal currencies",
//!   "Special cases" and "Minimum and maximum charge amounts" on docs.stripe.com/currencies;
//! - the `amount` parameter of PaymentIntents and Charges in Stripe's API reference: "The
//!   minimum amount is $0.50 US or equivalent in charge currency. The amount value supports up to
//!   eight digits (e.g., a value of 99999999 for a USD charge of $999,999.99)";
//! - support.stripe.com, "Deprecation of fractional ISK charges and refunds" (ISK in multiples
//!   of 100).

use std::fmt;
use std::str::FromStr;

/// Stripe's largest amount for one charge, in minor units: "The amount value supports up to eight
/// digits (e.g., a value of 99999999 for a USD charge of $999,999.99)" (API reference, `amount`).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// What is wrong with a currency or an amount, in words a finance person understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not one of Stripe's presentment currencies.
    #[error("Stripe does not accept the currency {code:?}")]
    UnknownCurrency {
        /// The code as given.
        code: String,
    },
    /// Zero or negative.
    #[error("the amount must be more than zero (got {amount} {currency})")]
    NotPositive {
        /// The amount in minor units.
        amount: i64,
        /// Its currency.
        currency: Currency,
    },
    /// Below Stripe's documented minimum charge for the currency.
    #[error(
        "{} is below Stripe's minimum of {} for {currency}",
        format_amount(*.amount, .currency),
        format_amount(.currency.minimum_charge(), .currency)
    )]
    BelowMinimum {
        /// The amount in minor units.
        amount: i64,
        /// Its currency.
        currency: Currency,
    },
    /// Above Stripe's eight-digit maximum.
    #[error(
        "{} is above Stripe's maximum of {} for one charge in {currency}",
        format_amount(*.amount, .currency),
        format_amount(MAX_AMOUNT, .currency)
    )]
    AboveMaximum {
        /// The amount in minor units.
        amount: i64,
        /// Its currency.
        currency: Currency,
    },
    /// Finer than Stripe charges in this currency (three-decimal currencies in steps of 0.010,
    /// ISK in whole krónur).
    #[error(
        "{} cannot be charged: Stripe charges {currency} only in steps of {}",
        format_amount(*.amount, .currency),
        format_amount(.currency.amount_step(), .currency)
    )]
    FinerThanStripeAllows {
        /// The amount in minor units.
        amount: i64,
        /// Its currency.
        currency: Currency,
    },
}

/// One row of the currency table.
#[derive(Debug)]
struct Spec {
    /// Lower-case ISO 4217 code, as Stripe's API wants it.
    code: &'static str,
    /// Digits after the decimal point in Stripe's minor unit.
    exponent: u32,
    /// Stripe's documented minimum charge in minor units, where the docs give one.
    minimum: Option<i64>,
    /// Amounts must be a multiple of this many minor units.
    step: i64,
    /// Symbol written before the amount, for the common currencies.
    symbol: Option<&'static str>,
}

const fn two(code: &'static str) -> Spec {
    Spec {
        code,
        exponent: 2,
        minimum: None,
        step: 1,
        symbol: None,
    }
}

/// Zero-decimal: "For the following zero-decimal currencies, the charge and the amount are the
/// same, without requiring multiplication" — BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV
/// XAF XOF XPF (docs.stripe.com/currencies#zero-decimal).
const fn zero(code: &'static str) -> Spec {
    Spec {
        code,
        exponent: 0,
        minimum: None,
        step: 1,
        symbol: None,
    }
}

/// Three-decimal: BHD JOD KWD OMR TND. "These API calls require the least-significant (last)
/// digit to be 0. Your integration must round amounts to the nearest ten. For example, 5.124 KWD
/// must be rounded to 5120 or 5130" (docs.stripe.com/currencies#three-decimal).
const fn three(code: &'static str) -> Spec {
    Spec {
        code,
        exponent: 3,
        minimum: None,
        step: 10,
        symbol: None,
    }
}

const fn min(spec: Spec, minimum: i64) -> Spec {
    Spec {
        minimum: Some(minimum),
        ..spec
    }
}

const fn sym(spec: Spec, symbol: &'static str) -> Spec {
    Spec {
        symbol: Some(symbol),
        ..spec
    }
}

/// Stripe's presentment currencies for card payments (docs.stripe.com/currencies, "Supported
/// presentment currencies"), sorted by code.
///
/// Minimums come from the table "Minimum and maximum charge amounts" on the same page (USD $0.50,
/// AED 2.00, AUD 0.50, BGN 1.00, BRL 0.50, CAD 0.50, CHF 0.50, CZK 15.00, DKK 2.50, EUR 0.50,
/// GBP 0.30, HKD 4.00, HUF 175.00, INR 0.50, JPY ¥50, MXN 10, MYR 2, NOK 3.00, NZD 0.50,
/// PLN 2.00, RON 2.00, SEK 3.00, SGD 0.50, THB 10). Symbols are the English (CLDR) ones where
/// they are unambiguous for people reading an e-mail.
static CURRENCIES: &[Spec] = &[
    min(two("aed"), 200),
    two("afn"),
    two("all"),
    two("amd"),
    two("ang"),
    two("aoa"),
    two("ars"),
    sym(min(two("aud"), 50), "A$"),
    two("awg"),
    two("azn"),
    two("bam"),
    two("bbd"),
    two("bdt"),
    min(two("bgn"), 100),
    three("bhd"),
    zero("bif"),
    two("bmd"),
    two("bnd"),
    two("bob"),
    sym(min(two("brl"), 50), "R$"),
    two("bsd"),
    two("bwp"),
    two("byn"),
    two("bzd"),
    sym(min(two("cad"), 50), "CA$"),
    two("cdf"),
    min(two("chf"), 50),
    zero("clp"),
    sym(two("cny"), "CN¥"),
    two("cop"),
    two("crc"),
    two("cve"),
    min(two("czk"), 1500),
    zero("djf"),
    min(two("dkk"), 250),
    two("dop"),
    two("dzd"),
    two("egp"),
    two("etb"),
    sym(min(two("eur"), 50), "€"),
    two("fjd"),
    two("fkp"),
    sym(min(two("gbp"), 30), "£"),
    two("gel"),
    two("gip"),
    two("gmd"),
    zero("gnf"),
    two("gtq"),
    two("gyd"),
    sym(min(two("hkd"), 400), "HK$"),
    two("hnl"),
    two("htg"),
    min(two("huf"), 17500),
    two("idr"),
    sym(two("ils"), "₪"),
    sym(min(two("inr"), 50), "₹"),
    // "ISK has become effectively zero-decimal and charged amounts must be evenly divisible by
    // 100 … ISK will remain a two-decimal currency in the Stripe API" (support.stripe.com,
    // deprecation of fractional ISK charges, from 14 April 2023).
    Spec {
        step: 100,
        ..two("isk")
    },
    two("jmd"),
    three("jod"),
    sym(min(zero("jpy"), 50), "¥"),
    two("kes"),
    two("kgs"),
    two("khr"),
    zero("kmf"),
    sym(zero("krw"), "₩"),
    three("kwd"),
    two("kyd"),
    two("kzt"),
    two("lak"),
    two("lbp"),
    two("lkr"),
    two("lrd"),
    two("lsl"),
    two("mad"),
    two("mdl"),
    zero("mga"),
    two("mkd"),
    two("mmk"),
    two("mnt"),
    two("mop"),
    two("mur"),
    two("mvr"),
    two("mwk"),
    sym(min(two("mxn"), 1000), "MX$"),
    min(two("myr"), 200),
    two("mzn"),
    two("nad"),
    two("ngn"),
    two("nio"),
    min(two("nok"), 300),
    two("npr"),
    sym(min(two("nzd"), 50), "NZ$"),
    three("omr"),
    two("pab"),
    two("pen"),
    two("pgk"),
    sym(two("php"), "₱"),
    two("pkr"),
    min(two("pln"), 200),
    zero("pyg"),
    two("qar"),
    min(two("ron"), 200),
    two("rsd"),
    two("rub"),
    zero("rwf"),
    two("sar"),
    two("sbd"),
    two("scr"),
    min(two("sek"), 300),
    min(two("sgd"), 50),
    two("shp"),
    two("sle"),
    two("sos"),
    two("srd"),
    two("szl"),
    min(two("thb"), 1000),
    two("tjs"),
    three("tnd"),
    two("top"),
    two("try"),
    two("ttd"),
    sym(two("twd"), "NT$"),
    two("tzs"),
    two("uah"),
    zero("ugx"),
    sym(min(two("usd"), 50), "$"),
    two("uyu"),
    two("uzs"),
    zero("vnd"),
    zero("vuv"),
    two("wst"),
    zero("xaf"),
    two("xcd"),
    zero("xof"),
    zero("xpf"),
    two("yer"),
    two("zar"),
    two("zmw"),
];

/// A currency Stripe charges in. Parsed case-insensitively, kept and shown lower-case as
/// Stripe's API wants it ("You must use all lowercase letters when passing the three-letter ISO
/// code in any payment request").
#[derive(Clone, Copy)]
pub struct Currency(&'static Spec);

impl Currency {
    /// The currency for an ISO code such as `usd` or `JPY`; [`MoneyError::UnknownCurrency`] for a
    /// code Stripe does not charge in.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let lower = code.trim().to_ascii_lowercase();
        CURRENCIES
            .binary_search_by(|spec| spec.code.cmp(lower.as_str()))
            .map(|index| Currency(&CURRENCIES[index]))
            .map_err(|_| MoneyError::UnknownCurrency {
                code: code.to_owned(),
            })
    }

    /// US dollars: Kassa's default currency (`KASSA_DEFAULT_CURRENCY` unset).
    pub fn usd() -> Self {
        // `usd` is in the table (a test below says so); the fallback is never taken.
        Currency::parse("usd").unwrap_or(Currency(&CURRENCIES[0]))
    }

    /// Every currency this module knows, sorted by code.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES.iter().map(Currency)
    }

    /// The lower-case code, as sent to Stripe.
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// Digits in the minor unit: 0 for zero-decimal currencies (JPY, KRW, …), 3 for BHD JOD KWD
    /// OMR TND, else 2.
    pub fn exponent(&self) -> u32 {
        self.0.exponent
    }

    /// Whether Stripe takes amounts in this currency without ×100 (JPY, KRW, …).
    pub fn is_zero_decimal(&self) -> bool {
        self.0.exponent == 0
    }

    /// Stripe's documented minimum charge in minor units ("Minimum and maximum charge amounts",
    /// docs.stripe.com/currencies), or `None` where the table gives none.
    pub fn documented_minimum(&self) -> Option<i64> {
        self.0.minimum
    }

    /// The smallest amount Kassa lets through, in minor units: Stripe's documented minimum (USD
    /// 50, EUR 50, GBP 30, JPY 50, …). For a currency the table leaves out this is the smallest
    /// valid amount (one step of [`Currency::amount_step`]); Stripe still wants "$0.50 US or
    /// equivalent in charge currency" and refuses less with `amount_too_small`, which depends on
    /// the exchange rate of the day and so cannot be checked here.
    pub fn minimum_charge(&self) -> i64 {
        self.0.minimum.unwrap_or(self.0.step)
    }

    /// Amounts must be a multiple of this (10 for three-decimal currencies, 100 for ISK, else 1).
    pub fn amount_step(&self) -> i64 {
        self.0.step
    }
}

impl PartialEq for Currency {
    fn eq(&self, other: &Self) -> bool {
        self.0.code == other.0.code
    }
}

impl Eq for Currency {}

impl std::hash::Hash for Currency {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.code.hash(state);
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.0.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::parse(code)
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.code)
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// Whether Stripe would accept `amount` (minor units) for one charge in `currency`: more than
/// zero, a multiple of the currency's step (three-decimal amounts end in 0, ISK in 00), at least
/// Stripe's minimum, at most eight digits.
pub fn validate_amount(amount: i64, currency: &Currency) -> Result<(), MoneyError> {
    let currency = *currency;
    if amount <= 0 {
        return Err(MoneyError::NotPositive { amount, currency });
    }
    if amount > MAX_AMOUNT {
        return Err(MoneyError::AboveMaximum { amount, currency });
    }
    if amount % currency.amount_step() != 0 {
        return Err(MoneyError::FinerThanStripeAllows { amount, currency });
    }
    if amount < currency.minimum_charge() {
        return Err(MoneyError::BelowMinimum { amount, currency });
    }
    Ok(())
}

/// `amount` (minor units) for people: `"$19.99"`, `"¥1,000"`, `"€5.00"`, `"£0.30"`,
/// `"1.500 KWD"` — the symbol for common currencies, else the amount and the upper-case code;
/// thousands separated by commas; zero-decimal amounts never divided by 100.
pub fn format_amount(amount: i64, currency: &Currency) -> String {
    let exponent = currency.exponent() as usize;
    let digits = amount.unsigned_abs().to_string();
    // Left-pad so there is at least one digit before the decimal point: 5 cents → "005".
    let digits = format!("{digits:0>width$}", width = exponent + 1);
    let (whole, fraction) = digits.split_at(digits.len() - exponent);

    let mut number = String::with_capacity(digits.len() + digits.len() / 3 + 2);
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            number.push(',');
        }
        number.push(digit);
    }
    if !fraction.is_empty() {
        number.push('.');
        number.push_str(fraction);
    }

    let sign = if amount < 0 { "-" } else { "" };
    match currency.0.symbol {
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None => format!("{sign}{number} {}", currency.code().to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_currency_is_us_dollars() {
        assert_eq!(Currency::usd().code(), "usd");
    }

    fn cur(code: &str) -> Currency {
        Currency::parse(code).expect("known currency")
    }

    #[test]
    fn table_is_sorted_and_lower_case() {
        for pair in CURRENCIES.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{} then {}",
                pair[0].code,
                pair[1].code
            );
        }
        for spec in CURRENCIES {
            assert_eq!(spec.code.len(), 3);
            assert_eq!(spec.code, spec.code.to_ascii_lowercase());
            if let Some(minimum) = spec.minimum {
                assert_eq!(minimum % spec.step, 0, "{}", spec.code);
            }
        }
    }

    #[test]
    fn parses_case_insensitively_and_keeps_lower_case() {
        assert_eq!(cur("USD").code(), "usd");
        assert_eq!(cur(" jPy ").to_string(), "jpy");
        assert_eq!("eur".parse::<Currency>().unwrap(), cur("EUR"));
        for code in [
            "usd", "eur", "gbp", "jpy", "krw", "chf", "cad", "aud", "nzd", "sek", "nok", "dkk",
            "pln", "czk", "huf", "ron", "bgn", "hkd", "sgd", "inr", "mxn", "brl", "thb", "myr",
            "idr", "php", "aed", "sar", "ils", "try", "zar", "twd", "vnd", "clp", "pyg", "bif",
            "djf", "gnf", "kmf", "mga", "rwf", "ugx", "vuv", "xaf", "xof", "xpf", "bhd", "jod",
            "kwd", "omr", "tnd", "isk",
        ] {
            assert!(Currency::parse(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn unknown_currency_is_refused() {
        for code in ["xyz", "", "us", "usdd", "btc", "€"] {
            assert_eq!(
                Currency::parse(code),
                Err(MoneyError::UnknownCurrency { code: code.into() })
            );
        }
    }

    #[test]
    fn exponents_follow_stripe() {
        for code in [
            "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND",
            "VUV", "XAF", "XOF", "XPF",
        ] {
            assert_eq!(cur(code).exponent(), 0, "{code}");
            assert!(cur(code).is_zero_decimal());
        }
        for code in ["BHD", "JOD", "KWD", "OMR", "TND"] {
            assert_eq!(cur(code).exponent(), 3, "{code}");
        }
        for code in ["usd", "eur", "gbp", "isk", "huf", "twd", "idr"] {
            assert_eq!(cur(code).exponent(), 2, "{code}");
        }
    }

    #[test]
    fn minimums_follow_stripe_table() {
        let expected = [
            ("usd", 50),
            ("aed", 200),
            ("aud", 50),
            ("bgn", 100),
            ("brl", 50),
            ("cad", 50),
            ("chf", 50),
            ("czk", 1500),
            ("dkk", 250),
            ("eur", 50),
            ("gbp", 30),
            ("hkd", 400),
            ("huf", 17500),
            ("inr", 50),
            ("jpy", 50),
            ("mxn", 1000),
            ("myr", 200),
            ("nok", 300),
            ("nzd", 50),
            ("pln", 200),
            ("ron", 200),
            ("sek", 300),
            ("sgd", 50),
            ("thb", 1000),
        ];
        for (code, minimum) in expected {
            assert_eq!(cur(code).minimum_charge(), minimum, "{code}");
            assert_eq!(cur(code).documented_minimum(), Some(minimum), "{code}");
        }
        let documented = Currency::all()
            .filter(|c| c.documented_minimum().is_some())
            .count();
        assert_eq!(documented, expected.len());
        // Without a documented minimum: the smallest valid amount.
        assert_eq!(cur("krw").minimum_charge(), 1);
        assert_eq!(cur("kwd").minimum_charge(), 10);
        assert_eq!(cur("isk").minimum_charge(), 100);
        assert_eq!(cur("zar").documented_minimum(), None);
    }

    #[test]
    fn validate_accepts_good_amounts() {
        assert_eq!(validate_amount(50, &cur("usd")), Ok(()));
        assert_eq!(validate_amount(1999, &cur("usd")), Ok(()));
        assert_eq!(validate_amount(1000, &cur("jpy")), Ok(()));
        assert_eq!(validate_amount(30, &cur("gbp")), Ok(()));
        assert_eq!(validate_amount(1500, &cur("kwd")), Ok(()));
        assert_eq!(validate_amount(MAX_AMOUNT, &cur("usd")), Ok(()));
        assert_eq!(validate_amount(4000, &cur("isk")), Ok(()));
        assert_eq!(validate_amount(1, &cur("krw")), Ok(()));
    }

    #[test]
    fn validate_refuses_with_words() {
        let usd = cur("usd");
        let err = validate_amount(49, &usd).unwrap_err();
        assert_eq!(
            err,
            MoneyError::BelowMinimum {
                amount: 49,
                currency: usd
            }
        );
        assert_eq!(
            err.to_string(),
            "$0.49 is below Stripe's minimum of $0.50 for usd"
        );

        let err = validate_amount(49, &cur("jpy")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "¥49 is below Stripe's minimum of ¥50 for jpy"
        );

        let err = validate_amount(0, &usd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the amount must be more than zero (got 0 usd)"
        );
        assert!(matches!(
            validate_amount(-5, &usd),
            Err(MoneyError::NotPositive { .. })
        ));

        let err = validate_amount(MAX_AMOUNT + 1, &usd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "$1,000,000.00 is above Stripe's maximum of $999,999.99 for one charge in usd"
        );

        let err = validate_amount(1505, &cur("kwd")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1.505 KWD cannot be charged: Stripe charges kwd only in steps of 0.010 KWD"
        );
        let err = validate_amount(4050, &cur("isk")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "40.50 ISK cannot be charged: Stripe charges isk only in steps of 1.00 ISK"
        );
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_amount(1999, &cur("usd")), "$19.99");
        assert_eq!(format_amount(1000, &cur("jpy")), "¥1,000");
        assert_eq!(format_amount(500, &cur("eur")), "€5.00");
        assert_eq!(format_amount(30, &cur("gbp")), "£0.30");
        assert_eq!(format_amount(1500, &cur("kwd")), "1.500 KWD");
        assert_eq!(format_amount(5, &cur("usd")), "$0.05");
        assert_eq!(format_amount(0, &cur("usd")), "$0.00");
        assert_eq!(format_amount(123_456_789, &cur("usd")), "$1,234,567.89");
        assert_eq!(format_amount(1_000_000, &cur("krw")), "₩1,000,000");
        assert_eq!(format_amount(999, &cur("jpy")), "¥999");
        assert_eq!(format_amount(150_000, &cur("chf")), "1,500.00 CHF");
        assert_eq!(format_amount(1_234_560, &cur("bhd")), "1,234.560 BHD");
        assert_eq!(format_amount(5000, &cur("xof")), "5,000 XOF");
        assert_eq!(format_amount(-1999, &cur("usd")), "-$19.99");
        assert_eq!(format_amount(-1500, &cur("kwd")), "-1.500 KWD");
        assert_eq!(
            format_amount(i64::MIN, &cur("usd")),
            "-$92,233,720,368,547,758.08"
        );
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&cur("JPY")).unwrap();
        assert_eq!(json, "\"jpy\"");
        let back: Currency = serde_json::from_str("\"KWD\"").unwrap();
        assert_eq!(back, cur("kwd"));
        assert!(serde_json::from_str::<Currency>("\"xyz\"").is_err());
    }
}
