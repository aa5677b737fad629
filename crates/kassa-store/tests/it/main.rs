//! Integration tests of kassa-store against the real PostgreSQL (`KASSA_DATABASE_URL`, or the
//! local server): every test gets a database of its own.

mod charges;
mod checkout_sessions;
mod connect;
mod customers;
mod events;
mod leadership;
mod outbox;
mod saved_cards;
mod settle;
mod test_db;
