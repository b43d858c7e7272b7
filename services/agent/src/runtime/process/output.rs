//! stdout and stderr of a process, read line by line and sent as [`pb::LogChunk`]s.
//!
//! Lines are batched: after the first line of a batch the reader keeps collecting for a
//! short window (or until a chunk is full), so a chatty process sends a few chunks per
//! second rather than one per line, and a quiet one still shows each line at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_proto::agent::v1 as pb;
use slipway_proto::logs::v1::LogStream;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::time::Instant;

use super::Shared;
use crate::runtime::RuntimeEvent;

/// How long a batch stays open after its first line.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most lines in one chunk (the proto's limit).
const MAX_LINES: usize = 1000;
/// Most text in one chunk (the proto's limit is 256 KiB; this leaves room for framing).
const MAX_BYTES: usize = 250 * 1024;
/// Longest line; longer ones are split (the proto's limit).
const MAX_LINE: usize = 16 * 1024;

/// Whose output it is: the ids every chunk carries.
#[derive(Clone, Debug, Default)]
pub(super) struct LogIds {
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    pub from_command: bool,
}

impl LogIds {
    pub fn from_command(command: &pb::Command, service_id: &str, from_command: bool) -> Self {
        Self {
            organization_id: command.organization_id.clone(),
            project_id: command.project_id.clone(),
            environment_id: command.environment_id.clone(),
            service_id: service_id.to_owned(),
            deployment_id: command.deployment_id.clone(),
            from_command,
        }
    }
}

/// Splits `text` into pieces of at most [`MAX_LINE`] bytes, on character boundaries.
fn split_long(text: String) -> Vec<String> {
    if text.len() <= MAX_LINE {
        return vec![text];
    }
    let mut pieces = Vec::new();
    let mut rest = text.as_str();
    while rest.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    pieces.push(rest.to_owned());
    pieces
}

fn line_of(buf: &[u8]) -> String {
    let trimmed = buf.strip_suffix(b"\n").unwrap_or(buf);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    String::from_utf8_lossy(trimmed).into_owned()
}

/// Reads `reader` to its end, sending its lines as chunks of `instance`.
pub(super) async fn capture(
    reader: impl AsyncRead + Unpin,
    stream: LogStream,
    ids: LogIds,
    instance: String,
    shared: Arc<Shared>,
) {
    let mut reader = BufReader::new(reader);
    // Kept across calls: `read_until` appends what it read before being cancelled by the
    // batch window, and the next call continues the same line.
    let mut buf = Vec::new();
    let mut eof = false;
    while !eof {
        let mut lines: Vec<pb::LogChunkLine> = Vec::new();
        let mut bytes = 0;
        let mut deadline: Option<Instant> = None;
        while lines.len() < MAX_LINES && bytes < MAX_BYTES {
            let read = match deadline {
                None => reader.read_until(b'\n', &mut buf).await,
                Some(at) => {
                    match tokio::time::timeout_at(at, reader.read_until(b'\n', &mut buf)).await {
                        Ok(read) => read,
                        Err(_) => break,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => {
                    eof = true;
                    if buf.is_empty() {
                        break;
                    }
                }
                Ok(_) => {}
            }
            let time = Some(prost_types::Timestamp::from(SystemTime::now()));
            for text in split_long(line_of(&buf)) {
                bytes += text.len();
                lines.push(pb::LogChunkLine { time, text });
            }
            buf.clear();
            if eof {
                break;
            }
            deadline.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
        }
        if !lines.is_empty() {
            shared.emit(RuntimeEvent::Log(pb::LogChunk {
                organization_id: ids.organization_id.clone(),
                project_id: ids.project_id.clone(),
                environment_id: ids.environment_id.clone(),
                service_id: ids.service_id.clone(),
                deployment_id: ids.deployment_id.clone(),
                from_command: ids.from_command,
                instance: instance.clone(),
                stream: stream as i32,
                lines,
                dropped_count: 0,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_split_on_char_boundaries() {
        let text = "é".repeat(MAX_LINE);
        let pieces = split_long(text.clone());
        assert!(pieces.iter().all(|p| p.len() <= MAX_LINE));
        assert_eq!(pieces.concat(), text);
        assert_eq!(line_of(b"abc\r\n"), "abc");
        assert_eq!(line_of(b"a\xffb"), "a\u{fffd}b");
    }
}
