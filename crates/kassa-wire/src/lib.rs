//! kassa-wire: the bytes Kassa reads from the outside world, and those it signs or encodes for it.
//!
//! - [`webhook`]: Stripe's webhook signature (`Stripe-Signature`), verified over the raw body.
//! - [`form`]: Stripe's nested form encoding of request parameters.
//! - [`envelope`]: the few fields of a Stripe event the ingress reads before publishing it.
//! - [`charge`]: a back-office charge request as callers write it; [`charge_csv`]: the charge
//!   CSV file's header and rows.
//!
//! Pure: no I/O, no clock of its own, no async runtime, no HTTP, database or broker client. Its
//! users (kassa-stripe, kassa-ingress, kassa-core) re-export these modules where they always
//! stood; keeping them here lets the fuzz targets build them with only their small dependencies.

#![warn(missing_docs)]

pub mod charge;
pub mod charge_csv;
pub mod envelope;
pub mod form;
pub mod webhook;
