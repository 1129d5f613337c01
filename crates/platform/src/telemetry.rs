//! Logging: JSON lines on stdout (or readable text), each carrying the fields of the request
//! span it was written in, so every line of a request has its `request_id`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber. `PROMPTFLOW_LOG`, when set, overrides the configured level.
/// A second call (tests start many services in one process) does nothing.
pub fn init(settings: &LogSettings) -> Result<(), crate::settings::SettingsError> {
    let level = std::env::var("PROMPTFLOW_LOG").unwrap_or_else(|_| settings.level.clone());
    let filter = EnvFilter::try_new(&level).map_err(|e| {
        crate::settings::SettingsError(format!("log.level `{level}` is not a valid filter: {e}"))
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stdout);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    Ok(())
}
