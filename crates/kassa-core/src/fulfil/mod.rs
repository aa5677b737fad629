//! Fulfilment: what a completed Checkout Session or a succeeded PaymentIntent becomes — a card
//! saved as the customer's default ([`checkout_session`]), a payment recorded and announced once
//! ([`payment`]).
//!
//! The webhook handler calls these functions inside the transaction of the event it handles;
//! the merchant's success page and the payment-confirmation API call them through
//! [`Fulfilment`], synchronously, in a transaction of their own. It is the same idempotent code
//! on every path, so whichever path gets there first acts and the others find the work done.

pub mod checkout_session;
pub mod payment;

pub use checkout_session::{
    fulfil_checkout_session, fulfil_checkout_session_and_mark, Fulfilled, Fulfiller, SavedCard,
};
pub use payment::{record_payment_intent, record_payment_intent_with, MailOptions, PaymentState};

use crate::keys::KeyScope;
use crate::Error;
use kassa_broker::Topology;
use kassa_store::payments::RecordedBy;
use kassa_store::{Store, StoreError};
use kassa_stripe::{Client, Mode, Modes};

/// What fulfilling found, for the page or the API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutcome {
    /// Paid and recorded (`first`: by this call; otherwise another path had recorded it).
    Paid {
        /// `pi_…`.
        payment_intent_id: String,
        /// Minor units.
        amount: i64,
        /// Lower-case ISO code.
        currency: String,
        /// Whether this call recorded it.
        first: bool,
    },
    /// A setup session: the card is saved as the customer's default.
    CardSaved {
        /// `cus_…`.
        customer_id: String,
    },
    /// Not paid (yet): Stripe's status, for people.
    NotPaid(String),
}

/// Fulfilment over Kassa's Stripe clients (one per configured mode), database and topology, for
/// the success page and the payment confirmation. Each object is read with the client of its
/// own mode, never the other's.
#[derive(Clone, Debug)]
pub struct Fulfilment {
    modes: Modes,
    store: Store,
    topology: Topology,
}

impl Fulfilment {
    /// Fulfilment with these connections; alerts go to `topology`'s exchanges.
    pub fn new(stripe: impl Into<Modes>, store: Store, topology: Topology) -> Self {
        Self {
            modes: stripe.into(),
            store,
            topology,
        }
    }

    /// The Stripe clients of the configured modes.
    pub fn modes(&self) -> &Modes {
        &self.modes
    }

    /// The client of `mode`; a mode without a key is a permanent error (nothing is sent).
    fn stripe(&self, mode: Mode) -> Result<&Client, Error> {
        self.modes
            .client(mode)
            .map_err(|e| Error::Permanent(e.to_string()))
    }

    /// Fulfils the Checkout Session `session_id` of `mode` as the success page.
    pub async fn checkout_session(
        &self,
        mode: Mode,
        session_id: &str,
    ) -> Result<PageOutcome, Error> {
        let stripe = self.stripe(mode)?;
        let mut tx = self.store.begin().await?;
        let how = Fulfiller {
            stripe,
            topology: &self.topology,
            recorded_by: RecordedBy::SuccessPage,
            installation: self.store.installation_id(),
        };
        // Keys of their own: this path never shares a key with the webhook's attempts, and every
        // step reads Stripe's state first (see KeyScope).
        let keys = KeyScope::new(
            self.store.installation_id(),
            format!("success_page:{session_id}"),
            0,
        );
        let fulfilled = fulfil_checkout_session(how, &mut tx, session_id, &keys).await?;
        tx.commit().await.map_err(StoreError::from)?;
        match fulfilled {
            Fulfilled::Payment(state) => self.paid(state).await,
            Fulfilled::Card(card) => Ok(PageOutcome::CardSaved {
                customer_id: card.customer_id,
            }),
            Fulfilled::Nothing(status) => Ok(PageOutcome::NotPaid(status)),
        }
    }

    /// Records the PaymentIntent `payment_intent_id` of `mode` if it succeeded, as the
    /// confirmation call.
    pub async fn payment_intent(
        &self,
        mode: Mode,
        payment_intent_id: &str,
    ) -> Result<PageOutcome, Error> {
        self.payment_intent_with(mode, payment_intent_id, &MailOptions::default())
            .await
    }

    /// [`Fulfilment::payment_intent`], the e-mails sent as `mail` says when this call is the
    /// one that records the payment (`first`).
    pub async fn payment_intent_with(
        &self,
        mode: Mode,
        payment_intent_id: &str,
        mail: &MailOptions,
    ) -> Result<PageOutcome, Error> {
        let stripe = self.stripe(mode)?;
        let mut tx = self.store.begin().await?;
        let state = record_payment_intent_with(
            stripe,
            &mut tx,
            &self.topology,
            payment_intent_id,
            RecordedBy::Confirmation,
            mail,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.paid(state).await
    }

    async fn paid(&self, state: PaymentState) -> Result<PageOutcome, Error> {
        match state {
            PaymentState::Succeeded {
                payment_intent_id,
                recorded,
            } => {
                let payment = self.store.payment_by_intent(&payment_intent_id).await?;
                let (amount, currency) =
                    payment.map(|p| (p.amount, p.currency)).unwrap_or_default();
                Ok(PageOutcome::Paid {
                    payment_intent_id,
                    amount,
                    currency,
                    first: recorded,
                })
            }
            PaymentState::NotPaid(status) => Ok(PageOutcome::NotPaid(status)),
        }
    }
}
