//! The current time, at the precision both databases keep (microseconds), so that a value
//! read back equals the value written on SQLite and on PostgreSQL alike.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// Milliseconds since the Unix epoch (event times, Eureka's timestamps).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
