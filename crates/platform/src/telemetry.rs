//! Logging: JSON lines on stdout (or readable text), each carrying the fields of the request
//! span it was written in, so every line of a request has its `request_id`.

use std::sync::OnceLock;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

use crate::settings::{LogFormat, LogSettings};

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Changes the installed subscriber's filter (`log.level` changed by config-service).
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber. `PROMPTFLOW_LOG`, when set, overrides the configured level.
/// A second call (tests start many services in one process) does nothing.
pub fn init(settings: &LogSettings) -> Result<(), crate::settings::SettingsError> {
    let level = std::env::var("PROMPTFLOW_LOG").unwrap_or_else(|_| settings.level.clone());
    let filter = parse(&level).map_err(crate::settings::SettingsError)?;
    let (filter, handle) = reload::Layer::new(filter);
    let format = tracing_subscriber::fmt::layer()
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stdout);
    let format = match settings.format {
        LogFormat::Json => format
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .boxed(),
        LogFormat::Text => format.with_ansi(false).boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .is_ok()
    {
        let _ = SET_FILTER.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
    }
    Ok(())
}

fn parse(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("log.level `{level}` is not a valid filter: {e}"))
}

/// Applies a new `log.level` to the running process. Does nothing when `PROMPTFLOW_LOG`
/// pins the level or no subscriber was installed by [`init`].
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = parse(level)?;
    if std::env::var_os("PROMPTFLOW_LOG").is_some() {
        return Ok(());
    }
    match SET_FILTER.get() {
        Some(set) => set(filter),
        None => Ok(()),
    }
}
