//! What every PromptFlow service shares. See `ARCHITECTURE.md` for the map.

pub mod auth;
pub mod clock;
pub mod config_client;
pub mod db;
pub mod discovery;
pub mod events;
pub mod extract;
pub mod live;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod text;

pub use problem::{FieldError, Problem};
