//! kassa-core: what Kassa does, with no HTTP and no consuming.
//!
//! - [`fulfil`]: a completed Checkout Session becomes a saved card or a recorded payment
//!   ([`fulfil::checkout_session`], [`fulfil::payment`]), the same code for the webhook, the
//!   success page and the payment confirmation.
//! - [`charges`]: back-office charges of saved cards — [`charges::execute`] sends one attempt as
//!   an off-session PaymentIntent and settles it, [`charges::recheckout`] asks the customer for
//!   another card after a decline, [`charges::settle`] settles from `payment_intent.*` webhooks,
//!   [`charges::lookup`] looks an attempt up on Stripe before anything is sent again,
//!   [`charges::review`] resolves what a person must look at.
//! - [`keys`]: every Idempotency-Key Kassa sends Stripe and the metadata that ties Stripe's
//!   objects to this installation.
//! - [`records`]: how Stripe's customers, cards and sessions are recorded, and the events that
//!   keep those records true; [`customers`]: customers taken from Stripe, one or all.
//! - [`charges::submit`], [`checkout`], [`connector`]: what the API and the command line ask
//!   for — a charge recorded with its job, a Checkout Session or PaymentIntent for the merchant's
//!   pages, the connector's small Stripe operations — each checked once, field by field
//!   ([`fields`]), before anything is sent or recorded.
//! - [`save_card`]: signed, revocable save-card links that open a fresh setup-mode Checkout
//!   Session each time (and re-pay links that outlive a session's 24 hours).
//! - [`widgets`]: payment widgets — the form a merchant embeds, its one PaymentIntent per page
//!   load, and the customer's choices put on it before the browser confirms.
//! - [`notify`]: alerts and the connector's notifications, queued through the outbox;
//!   [`mail`]: the e-mails' words, from askama templates escaped by [`html`].
//! - [`settings`]: the Stripe keys, webhook secrets, SMTP connections and admin token Kassa may
//!   keep in PostgreSQL, sealed under the master key.
//!
//! Every function here reads Stripe's current state before it acts, sends every Stripe POST
//! with a deterministic Idempotency-Key, and writes in the caller's transaction. It never
//! answers HTTP and never consumes from RabbitMQ: the API (kassa-api) and the consumers
//! (kassa-worker) call it.

pub mod charges;
pub mod checkout;
pub mod connector;
pub mod customers;
mod error;
pub mod fields;
pub mod fulfil;
pub mod html;
pub mod keys;
pub mod mail;
pub mod notify;
pub mod records;
pub mod save_card;
pub mod settings;
pub mod widgets;

pub use error::Error;
