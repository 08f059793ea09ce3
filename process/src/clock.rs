//! The wall clock, read in one place: Unix seconds (as ClickHouse's
//! `DateTime` takes them) and milliseconds, and RFC 3339 for people.
//! A clock before 1970 reads as 0; one past 2106 saturates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Unix seconds as a `DateTime` column holds them (`u32`), saturating.
pub fn seconds(unix: u64) -> u32 {
    u32::try_from(unix).unwrap_or(u32::MAX)
}

/// Unix seconds now, as a `DateTime` column holds them.
pub fn unix_now_u32() -> u32 {
    seconds(unix_now())
}

/// Unix seconds as RFC 3339 in UTC, e.g. `2026-12-03T10:00:00Z`.
pub fn rfc3339(unix: impl Into<u64>) -> String {
    let unix: u64 = unix.into();
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_and_seconds_saturate() {
        assert_eq!(rfc3339(1_796_256_000_u64), "2026-12-03T00:00:00Z");
        assert_eq!(seconds(u64::MAX), u32::MAX);
        assert!(unix_now() > 1_700_000_000);
        assert!(unix_now_ms() / 1000 >= unix_now() - 1);
    }
}
