//! Events that keep Kassa's records true: each re-fetches the object from Stripe and writes its
//! current state, so the order events arrive in does not matter.

use crate::setup::{payment_method_record, session_record};
use crate::HandlerError;
use kassa_store::{checkout_sessions, customers, CustomerRecord, PgConnection};
use kassa_stripe::objects::Customer;
use kassa_stripe::Client;

/// checkout.session.expired (and any session that is not a setup completion): record its state.
pub async fn record_checkout_session(
    stripe: &Client,
    conn: &mut PgConnection,
    session_id: &str,
    installation: &str,
) -> Result<(), HandlerError> {
    let session = stripe.checkout_sessions().retrieve(session_id, &[]).await?;
    checkout_sessions::upsert_checkout_session(
        conn,
        &session_record(&session, installation, None, None),
    )
    .await?;
    Ok(())
}

/// setup_intent.succeeded / setup_failed: record the card once it belongs to a customer.
///
/// Checkout's SetupIntent has no customer until the session is fulfilled, and the
/// checkout.session.completed handler records the card then; recording an unattached card here
/// would add nothing, so this only refreshes cards that already belong to someone.
pub async fn record_setup_intent(
    stripe: &Client,
    conn: &mut PgConnection,
    setup_intent_id: &str,
) -> Result<(), HandlerError> {
    let intent = stripe
        .setup_intents()
        .retrieve(setup_intent_id, &["payment_method"])
        .await?;
    if let Some(payment_method) = intent.payment_method.as_ref() {
        let payment_method = match payment_method {
            kassa_stripe::Expandable::Object(pm) => (**pm).clone(),
            kassa_stripe::Expandable::Id(id) => stripe.payment_methods().retrieve(id, &[]).await?,
        };
        if payment_method.customer.is_some() {
            customers::upsert_payment_method(conn, &payment_method_record(&payment_method, None))
                .await?;
        }
    }
    Ok(())
}

/// payment_method.attached / detached: attached to someone → recorded; attached to nobody →
/// detached for good.
pub async fn record_payment_method(
    stripe: &Client,
    conn: &mut PgConnection,
    payment_method_id: &str,
) -> Result<(), HandlerError> {
    let payment_method = match stripe
        .payment_methods()
        .retrieve(payment_method_id, &[])
        .await
    {
        Ok(pm) => pm,
        Err(error) if error.is_resource_missing() => {
            customers::mark_payment_method_detached(conn, payment_method_id).await?;
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if payment_method.customer.is_some() {
        customers::upsert_payment_method(conn, &payment_method_record(&payment_method, None))
            .await?;
    } else {
        customers::mark_payment_method_detached(conn, payment_method_id).await?;
    }
    Ok(())
}

/// customer.created / updated / deleted: record the customer as Stripe has it now.
pub async fn record_customer(
    stripe: &Client,
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<(), HandlerError> {
    let customer = match stripe.customers().retrieve(customer_id, &[]).await {
        Ok(customer) => customer,
        Err(error) if error.is_resource_missing() => {
            customers::mark_customer_deleted(conn, customer_id).await?;
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if customer.deleted {
        customers::mark_customer_deleted(conn, customer_id).await?;
        return Ok(());
    }
    customers::upsert_customer(conn, &customer_record(&customer)).await?;
    Ok(())
}

/// A Stripe customer as Kassa records it.
pub fn customer_record(customer: &Customer) -> CustomerRecord {
    CustomerRecord {
        id: customer.id.clone(),
        email: customer.email.clone(),
        name: customer.name.clone(),
        default_payment_method: customer
            .invoice_settings
            .default_payment_method
            .as_ref()
            .map(|pm| pm.id().to_owned()),
        deleted: customer.deleted,
        livemode: customer.livemode,
    }
}
