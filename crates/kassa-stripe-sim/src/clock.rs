//! The simulator's notion of now: the wall clock plus an offset that `POST /_sim/clock/advance`
//! moves forward, so a test can let a day pass on Stripe's side in a moment.
//!
//! What follows the clock, as on Stripe:
//! - `created` of every object and event, and the `created[…]` filters of lists;
//! - Idempotency-Keys: Stripe says "You can remove keys from the system automatically after
//!   they're at least 24 hours old. We generate a new request if a key is reused after the
//!   original is pruned." (docs: idempotent requests), and the simulator forgets them exactly then
//!   ([`crate::idempotency`]);
//! - Checkout Sessions: an open session whose `expires_at` has passed expires and emits
//!   `checkout.session.expired` (docs: Checkout Session `expires_at`, "The timestamp at which the
//!   Checkout Session will expire"; event `checkout.session.expired`, "Occurs when a Checkout
//!   Session is expired");
//! - SEPA Direct Debits: a debit is `processing` until it settles, "after at least three minutes" for
//!   the slow test IBANs ([`crate::debits`]); advancing the clock settles those that fall due.
//!
//! Both modes share the clock.
//!
//! What does not: webhook signatures keep the wall clock. A receiver checks the `t=` of
//! `Stripe-Signature` against its own clock (Stripe's libraries allow 300 s), and the simulator
//! cannot move the receiver's clock; so only Stripe's side of the world ages. Rate limits and
//! fault latencies are real time too.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::state::unix_now;

/// The offset, in seconds, that the simulator's clock runs ahead of the wall clock.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    /// Unix time on the simulator's clock.
    pub fn now(&self) -> i64 {
        unix_now().saturating_add(self.offset())
    }

    /// How far ahead of the wall clock the simulator's clock runs, in seconds.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `seconds` (never backwards: Stripe's time only runs forward).
    /// Returns the new offset.
    pub fn advance(&self, seconds: u32) -> i64 {
        self.offset
            .fetch_add(i64::from(seconds), Ordering::SeqCst)
            .saturating_add(i64::from(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward_by_that_much() {
        let clock = Clock::default();
        let before = clock.now();
        assert_eq!(clock.advance(90_000), 90_000);
        assert_eq!(clock.advance(10), 90_010);
        let after = clock.now();
        assert!(
            (90_010..=90_012).contains(&(after - before)),
            "{before} → {after}"
        );
    }
}
