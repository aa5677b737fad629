//! The worker's fulfilment code, offered to the ingress's pages and API
//! ([`kassa_ingress::checkout::Fulfilment`]): the success page and the payment confirmation call
//! run the same idempotent code as the webhooks, in a transaction of their own, so whichever path
//! gets there first acts and the others find the work done.

use kassa_broker::Topology;
use kassa_ingress::checkout::{BoxFuture, FulfilError, Fulfilment, PageOutcome};
use kassa_store::payments::RecordedBy;
use kassa_store::{Store, StoreError};
use kassa_stripe::Client;
use kassa_worker::payments::{record_payment_intent, PaymentState};
use kassa_worker::setup::{fulfil_checkout_session, Fulfilled, Fulfiller, KeyScope};
use kassa_worker::HandlerError;
use std::sync::Arc;

/// Fulfilment over Kassa's Stripe client, database and topology.
#[derive(Clone)]
pub struct WorkerFulfilment {
    inner: Arc<Inner>,
}

struct Inner {
    stripe: Client,
    store: Store,
    topology: Topology,
}

impl WorkerFulfilment {
    /// Fulfilment with these connections; alerts go to `topology`'s exchanges.
    pub fn new(stripe: Client, store: Store, topology: Topology) -> Self {
        Self {
            inner: Arc::new(Inner {
                stripe,
                store,
                topology,
            }),
        }
    }
}

fn from_handler(error: HandlerError) -> FulfilError {
    let not_found = matches!(&error, HandlerError::Stripe(e) if e.is_resource_missing());
    FulfilError {
        transient: error.is_transient(),
        not_found,
        message: error.to_string(),
    }
}

fn from_store(error: StoreError) -> FulfilError {
    from_handler(HandlerError::from(error))
}

impl Inner {
    async fn paid(&self, state: PaymentState) -> Result<PageOutcome, FulfilError> {
        match state {
            PaymentState::Succeeded {
                payment_intent_id,
                recorded,
            } => {
                let payment = self
                    .store
                    .payment_by_intent(&payment_intent_id)
                    .await
                    .map_err(from_store)?;
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

    async fn session(&self, session_id: String) -> Result<PageOutcome, FulfilError> {
        let mut tx = self.store.begin().await.map_err(from_store)?;
        let how = Fulfiller {
            stripe: &self.stripe,
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
        let fulfilled = fulfil_checkout_session(how, &mut tx, &session_id, &keys)
            .await
            .map_err(from_handler)?;
        tx.commit()
            .await
            .map_err(|e| from_store(StoreError::from(e)))?;
        match fulfilled {
            Fulfilled::Payment(state) => self.paid(state).await,
            Fulfilled::Card(card) => Ok(PageOutcome::CardSaved {
                customer_id: card.customer_id,
            }),
            Fulfilled::Nothing(status) => Ok(PageOutcome::NotPaid(status)),
        }
    }

    async fn payment_intent(&self, payment_intent_id: String) -> Result<PageOutcome, FulfilError> {
        let mut tx = self.store.begin().await.map_err(from_store)?;
        let state = record_payment_intent(
            &self.stripe,
            &mut tx,
            &self.topology,
            &payment_intent_id,
            RecordedBy::Confirmation,
        )
        .await
        .map_err(from_handler)?;
        tx.commit()
            .await
            .map_err(|e| from_store(StoreError::from(e)))?;
        self.paid(state).await
    }
}

impl Fulfilment for WorkerFulfilment {
    fn checkout_session(&self, session_id: String) -> BoxFuture<Result<PageOutcome, FulfilError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.session(session_id).await })
    }

    fn payment_intent(
        &self,
        payment_intent_id: String,
    ) -> BoxFuture<Result<PageOutcome, FulfilError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.payment_intent(payment_intent_id).await })
    }
}
