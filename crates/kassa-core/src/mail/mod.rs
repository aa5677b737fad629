//! Kassa's e-mails as people read them: what each says, in words a customer understands
//! ([`decline_in_words`]). Sending them over SMTP is the worker's.

/// A Stripe decline code (`error.decline_code`, or `error.code` when there is none) in words for
/// the customer, for the alert and the e-mail. Wording follows the "Next steps" column of
/// Stripe's decline codes table (docs.stripe.com/declines/codes).
pub fn decline_in_words(code: &str) -> &'static str {
    match code.trim() {
        // "card_declined": the error code of every card decline; "generic_decline" and
        // "do_not_honor": "The card was declined for an unknown reason" — the customer should
        // contact their bank.
        "card_declined"
        | "generic_decline"
        | "do_not_honor"
        | "call_issuer"
        | "do_not_try_again"
        | "no_action_taken"
        | "not_permitted"
        | "revocation_of_authorization"
        | "transaction_not_allowed"
        | "try_again_later" => "Your bank declined the payment.",
        // Stripe: for lost_card, stolen_card, pickup_card, fraudulent, merchant_blacklist and
        // restricted_card "the specific reason for the decline should not be reported to the
        // customer. Instead, it needs to be presented as a generic_decline."
        "lost_card" | "stolen_card" | "pickup_card" | "fraudulent" | "merchant_blacklist"
        | "restricted_card" | "security_violation" => "Your bank declined the payment.",
        // "The card has insufficient funds to complete the purchase."
        "insufficient_funds" | "card_velocity_exceeded" | "withdrawal_count_limit_exceeded" => {
            "The card has insufficient funds."
        }
        "expired_card" => "The card has expired.",
        "incorrect_cvc" | "invalid_cvc" => "The card's security code (CVC) is incorrect.",
        "incorrect_number" | "invalid_number" | "invalid_account" => {
            "The card number is no longer valid."
        }
        "invalid_expiry_month" | "invalid_expiry_year" => "The card's expiry date is incorrect.",
        // "An error occurred while processing the card": the customer may try again.
        "processing_error" | "issuer_not_available" | "reenter_transaction" => {
            "An error occurred while processing the card. Please try again or use another card."
        }
        // Off-session: "the card was declined because the transaction requires authentication
        // such as 3D Secure" — the customer must come back on-session to confirm.
        "authentication_required"
        | "approve_with_id"
        | "offline_pin_required"
        | "online_or_offline_pin_required" => "Your bank asks you to confirm the payment.",
        "card_not_supported" => "The card does not support this kind of payment.",
        "currency_not_supported" => "The card does not support this currency.",
        _ => "The payment with your saved card could not be completed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decline_codes_in_words() {
        assert_eq!(
            decline_in_words("card_declined"),
            "Your bank declined the payment."
        );
        assert_eq!(
            decline_in_words("generic_decline"),
            "Your bank declined the payment."
        );
        assert_eq!(
            decline_in_words("insufficient_funds"),
            "The card has insufficient funds."
        );
        assert_eq!(decline_in_words("expired_card"), "The card has expired.");
        assert_eq!(
            decline_in_words("lost_card"),
            "Your bank declined the payment."
        );
        assert_eq!(
            decline_in_words("incorrect_cvc"),
            "The card's security code (CVC) is incorrect."
        );
        assert!(decline_in_words("processing_error").contains("try again"));
        assert_eq!(
            decline_in_words("authentication_required"),
            "Your bank asks you to confirm the payment."
        );
        assert_eq!(
            decline_in_words("something_new"),
            "The payment with your saved card could not be completed."
        );
    }
}
