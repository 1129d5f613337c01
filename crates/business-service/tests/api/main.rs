//! API tests of business-service on SQLite and on PostgreSQL, with a real user-service
//! issuing the tokens.

mod helpers;

mod hostile;
mod library;
mod prompts;
mod sagas;
mod search;
mod sync;
mod transfer;
