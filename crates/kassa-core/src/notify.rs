//! What Kassa tells merchants' own consumers, through the outbox: alerts about back-office
//! charges on `kassa.alerts` ([`charge_alert`]: `customer.repay_requested`, `charge.failed`,
//! `charge.needs_review`), and the connector triggers "new charge" and "new refund": a small JSON
//! message on the topic exchange `kassa.notifications` (routing keys `charge.created`,
//! `refund.created`).
//!
//! Which Stripe events mean "new": Stripe has no `charge.created` event. A charge is created in
//! one of three states and announced by the matching event — `charge.succeeded` ("Occurs
//! whenever a charge is successful"), `charge.pending` ("Occurs whenever a pending charge is
//! created") or `charge.failed` ("Occurs whenever a failed charge attempt occurs"); a pending
//! charge later also sends `charge.succeeded` or `charge.failed` (Stripe API reference, types of
//! events). So "new charge" is the first of these per charge: the notification's `message_id` is
//! `charge.created:{charge id}`, and the outbox's unique `message_id` keeps later events about the
//! same charge from announcing it again. "New refund" is `refund.created` ("Occurs whenever a
//! refund is created", same reference), one per refund; `charge.refunded` (the charge's view,
//! sent with it) is not a second trigger.
//!
//! The message goes through the outbox in the transaction that marks the event processed in the
//! inbox, so an event delivered by webhook and found again by the `/v1/events` poller announces
//! once, and a crash before the commit announces nothing (the redelivery does).

use crate::Error;
use kassa_broker::Topology;
use kassa_store::{outbox, ChargeRecord, OutboxMessage, PgConnection};
use kassa_stripe::objects::{Charge, Event};
use kassa_stripe::{Client, Expandable};
use serde_json::{json, Value};
use tracing::info;

/// Routing key of the "new charge" trigger.
pub const CHARGE_CREATED: &str = "charge.created";
/// Routing key of the "new refund" trigger.
pub const REFUND_CREATED: &str = "refund.created";

/// The Stripe event types that announce a new charge (see the module documentation).
pub const NEW_CHARGE_EVENTS: [&str; 3] = ["charge.succeeded", "charge.pending", "charge.failed"];
/// The Stripe event types that announce a new refund.
pub const NEW_REFUND_EVENTS: [&str; 1] = ["refund.created"];

/// Queues the alert `routing_key` about `charge` on `kassa.alerts`, in the caller's transaction:
/// the charge's id, reference, customer, amount, currency, attempt and this installation's id,
/// with `details` added. `message_id` makes a retried transaction queue it once.
pub async fn charge_alert(
    conn: &mut PgConnection,
    topology: &Topology,
    installation: &str,
    charge: &ChargeRecord,
    routing_key: &str,
    details: Value,
    message_id: String,
) -> Result<(), Error> {
    let mut body = json!({
        "charge_id": charge.id,
        "reference": charge.reference,
        "customer": charge.customer_id,
        "amount": charge.amount,
        "currency": charge.currency,
        "attempt": charge.attempt,
        "installation": installation,
    });
    if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
        body.extend(details.clone());
    }
    let message = OutboxMessage {
        exchange: topology.alerts_exchange(),
        routing_key: routing_key.to_owned(),
        message_id,
        message_type: routing_key.to_owned(),
        body,
        headers: json!({}),
    };
    outbox::enqueue(conn, &message).await?;
    Ok(())
}

/// Re-fetches the charge of `event` (the payload's state is never trusted) and queues the
/// `charge.created` notification in the caller's transaction, unless that charge was announced.
pub async fn announce_charge(
    stripe: &Client,
    conn: &mut PgConnection,
    topology: &Topology,
    event: &Event,
    charge_id: &str,
) -> Result<(), Error> {
    let charge = stripe.charges().retrieve(charge_id, &[]).await?;
    let body = json!({
        "type": CHARGE_CREATED,
        "id": charge.id,
        "object": "charge",
        "amount": charge.amount,
        "currency": charge.currency,
        "customer": charge.customer.as_ref().map(|c| c.id().to_owned()),
        "payment_intent": charge.payment_intent.as_ref().map(|p| p.id().to_owned()),
        "status": serde_json::to_value(charge.status).unwrap_or(Value::Null),
        "description": charge.description,
        "created": charge.created,
        "livemode": charge.livemode,
        "event_id": event.id,
        "event_type": event.type_,
    });
    enqueue(conn, topology, CHARGE_CREATED, &charge.id, body).await
}

/// Re-fetches the refund of `event` with its charge (for the customer) and queues the
/// `refund.created` notification in the caller's transaction.
pub async fn announce_refund(
    stripe: &Client,
    conn: &mut PgConnection,
    topology: &Topology,
    event: &Event,
    refund_id: &str,
) -> Result<(), Error> {
    let refund = stripe.refunds().retrieve(refund_id, &["charge"]).await?;
    let charge: Option<&Charge> = refund.charge.as_ref().and_then(Expandable::as_object);
    let body = json!({
        "type": REFUND_CREATED,
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "currency": refund.currency,
        "charge": refund.charge.as_ref().map(|c| c.id().to_owned()),
        "payment_intent": refund.payment_intent.as_ref().map(|p| p.id().to_owned()),
        "customer": charge.and_then(|c| c.customer.as_ref()).map(|c| c.id().to_owned()),
        "status": refund.status.map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
        "reason": refund.reason,
        "created": refund.created,
        // A refund has no `livemode` of its own; the event's is the account's mode.
        "livemode": event.livemode,
        "event_id": event.id,
        "event_type": event.type_,
    });
    enqueue(conn, topology, REFUND_CREATED, &refund.id, body).await
}

async fn enqueue(
    conn: &mut PgConnection,
    topology: &Topology,
    routing_key: &str,
    object_id: &str,
    body: Value,
) -> Result<(), Error> {
    let message = OutboxMessage {
        exchange: topology.notifications_exchange(),
        routing_key: routing_key.to_owned(),
        message_id: format!("{routing_key}:{object_id}"),
        message_type: routing_key.to_owned(),
        body,
        headers: json!({}),
    };
    if outbox::enqueue(conn, &message).await? {
        info!(object_id, routing_key, "notification queued");
    } else {
        info!(
            object_id,
            routing_key, "already announced; no second notification"
        );
    }
    Ok(())
}
