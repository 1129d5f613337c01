//! Domain rules of business-service, with no I/O.

pub mod diff;
pub mod listing;
pub mod portable;
pub mod search_text;
pub mod starter;
pub mod template;
pub mod validation;
