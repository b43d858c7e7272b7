//! What an agent sends up, put on NATS for the rest of the control plane.
//!
//! `CommandAck`, `StepReport` and `WorkloadStatus` become `AgentReport`s on
//! `slipway.agent.<cluster>.reports`, so whichever replica runs the deployment folds them
//! in (it need not hold the agent's stream). `LogChunk`s become `slipway.logs.v1.LogBatch`es
//! on `slipway.logs.<org>.<env>.<service>` for log-streaming.

use std::time::{Duration, SystemTime};

use slipway_events::{EventBus, EventBusExt as _, EventsError, subject};
use slipway_proto::agent::v1 as pb;
use slipway_proto::logs::v1 as logs;
use uuid::Uuid;

/// Attempts per publish before the relay gives up: a publish is deduplicated by its
/// message id, so retrying is safe, and a short outage should not end a session.
const PUBLISH_ATTEMPTS: u32 = 3;

/// Lines per `LogBatch`: the contract keeps batches under 1000 lines.
const MAX_BATCH_LINES: usize = 999;

/// Approximate encoded bytes per `LogBatch`: the contract keeps them under 512 KiB.
const MAX_BATCH_BYTES: usize = 480 * 1024;

/// Longest `LogLine.message` in bytes (16 KiB); longer text is split into several lines.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Publishes `message` with `message_id`, retrying a failed publish with a short backoff.
pub async fn publish<M: prost::Message>(
    bus: &dyn EventBus,
    subject: &str,
    message_id: &str,
    message: &M,
) -> Result<(), EventsError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match bus.publish_proto(subject, message_id, message).await {
            Ok(_) => return Ok(()),
            Err(error) if attempt >= PUBLISH_ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::warn!(%error, subject, attempt, "publish failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
        }
    }
}

/// The report an agent message becomes, stamped with this session and the receive time.
pub fn agent_report(
    cluster_id: &str,
    session_id: &str,
    report: pb::agent_report::Report,
) -> pb::AgentReport {
    pb::AgentReport {
        report_id: Uuid::now_v7().to_string(),
        cluster_id: cluster_id.to_owned(),
        session_id: session_id.to_owned(),
        receive_time: Some(SystemTime::now().into()),
        report: Some(report),
    }
}

/// Why a `LogChunk` was dropped rather than relayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DroppedChunk {
    /// The chunk names another organization than the cluster's: an agent may only speak
    /// for the workloads of its own organization.
    #[error("the chunk is for another organization than the cluster's")]
    ForeignOrganization,
    /// A required id is missing or cannot be a subject token.
    #[error("the chunk's {0} is missing or malformed")]
    BadId(&'static str),
}

/// A batch and the subject it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingBatch {
    pub subject: String,
    pub batch: logs::LogBatch,
}

/// The `LogBatch`es of one chunk (usually one; more when the chunk is over the batch
/// limits), or why the chunk is dropped.
pub fn log_batches(
    cluster_id: &str,
    organization_id: &str,
    chunk: pb::LogChunk,
) -> Result<Vec<OutgoingBatch>, DroppedChunk> {
    if chunk.organization_id != organization_id {
        return Err(DroppedChunk::ForeignOrganization);
    }
    for (name, value) in [
        ("project_id", &chunk.project_id),
        ("environment_id", &chunk.environment_id),
    ] {
        if value.is_empty() {
            return Err(DroppedChunk::BadId(name));
        }
    }
    let service_token = if chunk.service_id.is_empty() {
        "_"
    } else {
        chunk.service_id.as_str()
    };
    let subject = subject::logs(&chunk.organization_id, &chunk.environment_id, service_token)
        .map_err(|_| DroppedChunk::BadId("environment_id or service_id"))?;
    let kind = if chunk.from_command {
        logs::LogKind::Deployment
    } else {
        logs::LogKind::Runtime
    };
    let stream = logs::LogStream::try_from(chunk.stream).unwrap_or(logs::LogStream::Unspecified);
    let first_time = chunk.lines.first().and_then(|line| line.time);
    let line = |time: Option<prost_types::Timestamp>, message: String| logs::LogLine {
        time,
        organization_id: chunk.organization_id.clone(),
        project_id: chunk.project_id.clone(),
        environment_id: chunk.environment_id.clone(),
        service_id: chunk.service_id.clone(),
        deployment_id: chunk.deployment_id.clone(),
        kind: kind.into(),
        instance: chunk.instance.clone(),
        stream: stream.into(),
        severity: severity(&message).into(),
        message,
        sequence: 0,
    };
    let lines: Vec<logs::LogLine> = chunk
        .lines
        .iter()
        .flat_map(|chunk_line| {
            split_text(&chunk_line.text)
                .into_iter()
                .map(|part| line(chunk_line.time, part.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();

    let mut groups: Vec<Vec<logs::LogLine>> = Vec::new();
    let mut current: Vec<logs::LogLine> = Vec::new();
    let mut current_bytes = 0;
    for line in lines {
        let size = line.message.len() + 160;
        if !current.is_empty()
            && (current.len() >= MAX_BATCH_LINES || current_bytes + size > MAX_BATCH_BYTES)
        {
            groups.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += size;
        current.push(line);
    }
    if !current.is_empty() || chunk.dropped_count > 0 {
        groups.push(current);
    }

    let producer = format!("agent/{cluster_id}");
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(index, lines)| {
            // Lines the agent dropped came just before the chunk's first line.
            let dropped = (index == 0 && chunk.dropped_count > 0).then(|| logs::DroppedLines {
                count: chunk.dropped_count,
                first_time,
                last_time: first_time,
                reason: logs::DropReason::RateLimited.into(),
            });
            OutgoingBatch {
                subject: subject.clone(),
                batch: logs::LogBatch {
                    id: Uuid::now_v7().to_string(),
                    organization_id: chunk.organization_id.clone(),
                    environment_id: chunk.environment_id.clone(),
                    service_id: chunk.service_id.clone(),
                    producer: producer.clone(),
                    lines,
                    dropped,
                },
            }
        })
        .collect())
}

/// `text` in pieces of at most [`MAX_LINE_BYTES`], cut on character boundaries.
fn split_text(text: &str) -> Vec<&str> {
    if text.len() <= MAX_LINE_BYTES {
        return vec![text];
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

/// The severity a line states: a JSON `level`/`severity` field, or a leading level word
/// (`ERROR …`, `[warn] …`, `INFO: …`). Unspecified when it states none.
pub fn severity(text: &str) -> logs::LogSeverity {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        for key in ["\"level\"", "\"severity\"", "\"lvl\""] {
            if let Some(at) = trimmed.find(key) {
                let after = trimmed[at + key.len()..]
                    .trim_start()
                    .trim_start_matches(':')
                    .trim_start()
                    .trim_start_matches('"');
                let word: String = after
                    .chars()
                    .take_while(char::is_ascii_alphabetic)
                    .collect();
                if let Some(level) = level_word(&word) {
                    return level;
                }
            }
        }
        return logs::LogSeverity::Unspecified;
    }
    let word: String = trimmed
        .trim_start_matches(['[', '<', '('])
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    level_word(&word).unwrap_or(logs::LogSeverity::Unspecified)
}

fn level_word(word: &str) -> Option<logs::LogSeverity> {
    match word.to_ascii_lowercase().as_str() {
        "trace" | "debug" | "dbg" => Some(logs::LogSeverity::Debug),
        "info" | "inf" | "notice" => Some(logs::LogSeverity::Info),
        "warn" | "warning" | "wrn" => Some(logs::LogSeverity::Warn),
        "error" | "err" | "fatal" | "critical" | "crit" | "panic" => Some(logs::LogSeverity::Error),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn chunk(lines: Vec<&str>) -> pb::LogChunk {
        pb::LogChunk {
            organization_id: "o".into(),
            project_id: "p".into(),
            environment_id: "e".into(),
            service_id: "s".into(),
            deployment_id: "d".into(),
            from_command: false,
            instance: "web-1".into(),
            stream: logs::LogStream::Stdout.into(),
            lines: lines
                .into_iter()
                .map(|text| pb::LogChunkLine {
                    time: Some(SystemTime::now().into()),
                    text: text.into(),
                })
                .collect(),
            dropped_count: 0,
        }
    }

    #[test]
    fn a_chunk_becomes_a_batch_on_its_service_subject() {
        let batches = log_batches("c", "o", chunk(vec!["ERROR boom", "hello"])).unwrap();
        assert_eq!(batches.len(), 1);
        let out = &batches[0];
        assert_eq!(out.subject, "slipway.logs.o.e.s");
        assert_eq!(out.batch.producer, "agent/c");
        assert_eq!(out.batch.lines.len(), 2);
        let line = &out.batch.lines[0];
        assert_eq!(line.kind, i32::from(logs::LogKind::Runtime));
        assert_eq!(line.severity, i32::from(logs::LogSeverity::Error));
        assert_eq!(line.instance, "web-1");
        assert_eq!(line.project_id, "p");
    }

    #[test]
    fn foreign_or_malformed_chunks_are_dropped() {
        assert_eq!(
            log_batches("c", "other", chunk(vec!["x"])).unwrap_err(),
            DroppedChunk::ForeignOrganization
        );
        let mut bad = chunk(vec!["x"]);
        bad.environment_id = "a.b".into();
        assert!(log_batches("c", "o", bad).is_err());
        let mut no_service = chunk(vec!["x"]);
        no_service.service_id.clear();
        assert_eq!(
            log_batches("c", "o", no_service).unwrap()[0].subject,
            "slipway.logs.o.e._"
        );
    }

    #[test]
    fn big_chunks_are_split() {
        let many = chunk(vec!["line"; 2500]);
        let batches = log_batches("c", "o", many).unwrap();
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.batch.lines.len() < 1000));
        let long = "é".repeat(MAX_LINE_BYTES);
        let batches = log_batches("c", "o", chunk(vec![long.as_str()])).unwrap();
        assert_eq!(batches[0].batch.lines.len(), 2);
    }

    #[test]
    fn severities() {
        assert_eq!(severity("WARN: disk"), logs::LogSeverity::Warn);
        assert_eq!(severity("[debug] x"), logs::LogSeverity::Debug);
        assert_eq!(
            severity(r#"{"level":"error","msg":"x"}"#),
            logs::LogSeverity::Error
        );
        assert_eq!(severity("listening on 80"), logs::LogSeverity::Unspecified);
    }
}
