//! Lines as stored: a `LogBatch` read back from `LOGS` becomes lines with their sequence,
//! and a validated filter decides which of them a reader sees.
//!
//! A line's sequence is the JetStream sequence of its batch shifted left by
//! [`INDEX_BITS`], plus its index in the batch: the stream assigns batch sequences in
//! arrival order, so this is strictly increasing per environment, identical for a line
//! read twice, and needs no counter of our own. A batch holds well under 2^16 lines (the
//! contract caps it at 1000, NATS at 1 MiB of payload).

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message as _;
use slipway_events::StoredRecord;
use slipway_proto::logs::v1 as pb;

/// Bits of a sequence that number the line inside its batch.
pub const INDEX_BITS: u32 = 16;

/// The first line sequence of the batch stored at `stream_sequence`.
pub fn first_sequence(stream_sequence: u64) -> u64 {
    stream_sequence << INDEX_BITS
}

/// The stream sequence of the batch holding the line at `sequence`.
pub fn batch_sequence(sequence: u64) -> u64 {
    sequence >> INDEX_BITS
}

/// A batch read back from the stream: its lines with their sequences, and the gap its
/// producer reported, if any.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// From the subject: the organization the producer was allowed to publish for.
    pub organization_id: String,
    pub environment_id: String,
    /// When JetStream stored the batch (readers bound time ranges with it).
    pub stored: SystemTime,
    pub stream_sequence: u64,
    pub lines: Vec<Arc<pb::LogLine>>,
    pub dropped: Option<pb::DroppedLines>,
}

/// Decodes a `LOGS` record; `None` (logged) for a payload that is not a `LogBatch`, which
/// readers skip rather than fail on.
pub fn decode(record: &StoredRecord) -> Option<StoredBatch> {
    // `slipway.logs.<org>.<env>.<service>`: the subject, which the orchestrator builds
    // from the agent's authenticated organization, is authoritative for where the lines
    // belong, not the payload.
    let mut tokens = record.subject.split('.').skip(2);
    let (Some(organization_id), Some(environment_id), Some(service), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        tracing::warn!(subject = %record.subject, "skipping a LOGS message on an unexpected subject");
        return None;
    };
    let service_id = if service == "_" { "" } else { service };
    let batch = match pb::LogBatch::decode(record.payload.as_ref()) {
        Ok(batch) => batch,
        Err(error) => {
            tracing::warn!(%error, sequence = record.sequence, "skipping a LOGS message that is not a LogBatch");
            return None;
        }
    };
    let first = first_sequence(record.sequence);
    let lines = batch
        .lines
        .into_iter()
        .take(1 << INDEX_BITS)
        .enumerate()
        .map(|(index, mut line)| {
            line.sequence = first + index as u64;
            organization_id.clone_into(&mut line.organization_id);
            environment_id.clone_into(&mut line.environment_id);
            service_id.clone_into(&mut line.service_id);
            Arc::new(line)
        })
        .collect();
    Some(StoredBatch {
        organization_id: organization_id.to_owned(),
        environment_id: environment_id.to_owned(),
        stored: record.time,
        stream_sequence: record.sequence,
        lines,
        dropped: batch.dropped,
    })
}

/// The time of a line as a `SystemTime` (the epoch when it has none).
pub fn line_time(line: &pb::LogLine) -> SystemTime {
    line.time
        .and_then(|time| SystemTime::try_from(time).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A `LogFilter`, validated, with its text lowered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    /// Kinds as their wire numbers; empty means every kind.
    pub kinds: Vec<i32>,
    pub instance: String,
    /// Wire number of the minimum severity; 0 means none.
    pub min_severity: i32,
    /// `contains`, lowercased; empty means no text filter.
    pub contains: String,
}

impl Filter {
    /// Whether `line` passes every set field (the environment is the subject's business).
    pub fn matches(&self, line: &pb::LogLine) -> bool {
        (self.service_id.is_empty() || line.service_id == self.service_id)
            && (self.deployment_id.is_empty() || line.deployment_id == self.deployment_id)
            && (self.kinds.is_empty() || self.kinds.contains(&line.kind))
            && (self.instance.is_empty() || line.instance == self.instance)
            && (self.min_severity == 0 || effective_severity(line.severity) >= self.min_severity)
            && (self.contains.is_empty() || contains_lowered(&line.message, &self.contains))
    }

    /// The logical subject filter of this environment (and service) in `organization_id`:
    /// every read is confined to the caller-checked organization by the subject itself.
    pub fn subject(&self, organization_id: &str) -> String {
        let service = if self.service_id.is_empty() {
            "*"
        } else {
            self.service_id.as_str()
        };
        format!(
            "slipway.logs.{organization_id}.{}.{service}",
            self.environment_id
        )
    }

    /// A stable description of the filter, binding page tokens to their query.
    pub fn describe(&self) -> String {
        format!(
            "{}|{}|{}|{:?}|{}|{}|{}",
            self.environment_id,
            self.service_id,
            self.deployment_id,
            self.kinds,
            self.instance,
            self.min_severity,
            self.contains
        )
    }
}

/// Unknown severity counts as INFO in filters.
fn effective_severity(severity: i32) -> i32 {
    if severity == i32::from(pb::LogSeverity::Unspecified) {
        i32::from(pb::LogSeverity::Info)
    } else {
        severity
    }
}

fn contains_lowered(message: &str, needle: &str) -> bool {
    if message.is_ascii() {
        message
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        message.to_lowercase().contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> Filter {
        Filter {
            environment_id: "e".into(),
            service_id: String::new(),
            deployment_id: String::new(),
            kinds: Vec::new(),
            instance: String::new(),
            min_severity: 0,
            contains: String::new(),
        }
    }

    #[test]
    fn sequences_increase_across_batches_and_lines() {
        assert!(first_sequence(2) > first_sequence(1) + 999);
        assert_eq!(batch_sequence(first_sequence(7) + 12), 7);
    }

    #[test]
    fn severity_and_text_filters() {
        let line = |severity: pb::LogSeverity, message: &str| pb::LogLine {
            severity: severity.into(),
            message: message.into(),
            ..Default::default()
        };
        let mut f = filter();
        f.min_severity = pb::LogSeverity::Warn.into();
        assert!(!f.matches(&line(pb::LogSeverity::Unspecified, "x")));
        assert!(f.matches(&line(pb::LogSeverity::Error, "x")));
        f.min_severity = pb::LogSeverity::Info.into();
        assert!(f.matches(&line(pb::LogSeverity::Unspecified, "x")));
        assert!(!f.matches(&line(pb::LogSeverity::Debug, "x")));
        f.min_severity = 0;
        f.contains = "héllo".into();
        assert!(f.matches(&line(pb::LogSeverity::Debug, "say HÉLLO there")));
        f.contains = "boom".into();
        assert!(f.matches(&line(pb::LogSeverity::Debug, "a BOOM!")));
        assert!(!f.matches(&line(pb::LogSeverity::Debug, "a bom")));
    }

    #[test]
    fn subjects_stay_in_the_organization() {
        let mut f = filter();
        assert_eq!(f.subject("o"), "slipway.logs.o.e.*");
        f.service_id = "s".into();
        assert_eq!(f.subject("o"), "slipway.logs.o.e.s");
    }
}
