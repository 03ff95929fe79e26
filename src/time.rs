//! Times are stored as milliseconds since the Unix epoch and shown as RFC 3339 UTC with
//! milliseconds (`2026-11-22T10:00:00.123Z`).

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(rfc3339(1_795_341_600_123), "2026-11-22T10:00:00.123Z");
    }
}
