//! One module per table of `business_db` (the search structures are not entities: see
//! `storage::search`).

pub mod categories;
pub mod favorites;
pub mod folders;
pub mod prompt_tags;
pub mod prompt_versions;
pub mod prompts;
