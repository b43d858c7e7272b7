//! Times and spans as people type them: `90s`, `5m`, `2h`, `7d`, or an RFC 3339 time.

use crate::errors::UserError;

/// `90s`, `5m`, `2h`, `7d` (a bare number is seconds).
pub fn span(text: &str) -> anyhow::Result<chrono::Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let bad = || {
        UserError::hinted(
            format!("{text:?} is not a span of time"),
            "write it as a number and a unit: 90s, 5m, 2h, 7d",
        )
    };
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        "d" => number.saturating_mul(86_400),
        _ => return Err(bad().into()),
    };
    Ok(chrono::Duration::seconds(seconds))
}

fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn absolute(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A span from now into the future, or an absolute time.
pub fn future_time(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    match absolute(text) {
        Some(time) => Ok(timestamp(time)),
        None => Ok(timestamp(chrono::Utc::now() + span(text)?)),
    }
}

/// A span back from now, or an absolute time.
pub fn past_time(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    match absolute(text) {
        Some(time) => Ok(timestamp(time)),
        None => Ok(timestamp(chrono::Utc::now() - span(text)?)),
    }
}

/// A span as a protobuf Duration.
pub fn duration(text: &str) -> anyhow::Result<prost_types::Duration> {
    Ok(prost_types::Duration {
        seconds: span(text)?.num_seconds(),
        nanos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_their_unit() {
        assert_eq!(span("90s").ok().map(|d| d.num_seconds()), Some(90));
        assert_eq!(span("5m").ok().map(|d| d.num_seconds()), Some(300));
        assert_eq!(span("2h").ok().map(|d| d.num_seconds()), Some(7200));
        assert_eq!(span("7d").ok().map(|d| d.num_seconds()), Some(604_800));
        assert_eq!(span("12").ok().map(|d| d.num_seconds()), Some(12));
        assert!(span("5 parsecs").is_err());
        assert!(span("").is_err());
    }
}
