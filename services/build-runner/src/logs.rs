//! Build output to the `LOGS` stream, as `slipway.logs.v1.LogBatch`es.
//!
//! One [`LogSink`] per job: every producer (the runner's own step messages, the build
//! command's stdout and stderr) sends lines into one channel, and a single task turns them
//! into batches in arrival order and publishes them one after the other, so readers see the
//! lines in the order they were written. Batches are flushed at least every 250 ms and kept
//! under 1000 lines and 512 KiB, as `log_batch.proto` asks of producers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_events::{EventBus, EventBusExt, subject};
use slipway_proto::build::v1 as build;
use slipway_proto::logs::v1 as logs;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest a line may be (the contract's 16 KiB); longer ones are split.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most lines in one batch.
const MAX_BATCH_LINES: usize = 1000;
/// Encoded size a batch stays under (with room for the envelope).
const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Longest a line waits before its batch is published.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Who publishes, in every batch.
const PRODUCER: &str = "build-runner";

/// Where the lines of one job come from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// The runner's own messages about the build's progress.
    Runner,
    /// The build command's standard output.
    Stdout,
    /// The build command's standard error.
    Stderr,
}

/// A cheap handle to send lines of one job; clones share the job's ordering.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<logs::LogLine>,
    template: Arc<logs::LogLine>,
}

impl LogWriter {
    /// Sends one line (split when longer than 16 KiB).
    pub fn line(&self, source: Source, severity: logs::LogSeverity, text: &str) {
        let text = text.trim_end_matches(['\n', '\r']);
        for part in split(text) {
            let mut line = (*self.template).clone();
            line.time = Some(prost_types::Timestamp::from(SystemTime::now()));
            line.stream = match source {
                Source::Runner => logs::LogStream::Unspecified,
                Source::Stdout => logs::LogStream::Stdout,
                Source::Stderr => logs::LogStream::Stderr,
            } as i32;
            line.severity = severity as i32;
            line.message = part.to_owned();
            // A closed channel means the job is over; late lines have nowhere to go.
            let _ = self.tx.send(line);
        }
    }

    /// A progress message of the runner.
    pub fn info(&self, text: &str) {
        self.line(Source::Runner, logs::LogSeverity::Info, text);
    }

    /// A failure message of the runner.
    pub fn error(&self, text: &str) {
        self.line(Source::Runner, logs::LogSeverity::Error, text);
    }
}

/// Splits `text` into pieces of at most [`MAX_LINE_BYTES`], on character boundaries.
fn split(text: &str) -> Vec<&str> {
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
    parts.push(rest);
    parts
}

/// The publishing side of one job's log: owns the task that batches and publishes.
pub struct LogSink {
    writer: LogWriter,
    task: JoinHandle<()>,
}

impl LogSink {
    /// Starts the publisher of `job`'s lines on the job's `LOGS` subject.
    pub fn start(bus: Arc<dyn EventBus>, job: &build::BuildJob) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let template = logs::LogLine {
            organization_id: job.organization_id.clone(),
            project_id: job.project_id.clone(),
            environment_id: job.environment_id.clone(),
            service_id: job.service_id.clone(),
            deployment_id: job.deployment_id.clone(),
            kind: logs::LogKind::Build as i32,
            instance: job.job_id.clone(),
            ..Default::default()
        };
        let service_token = if job.service_id.is_empty() {
            "_"
        } else {
            job.service_id.as_str()
        };
        let subject = subject::logs(&job.organization_id, &job.environment_id, service_token);
        let batch_template = logs::LogBatch {
            organization_id: job.organization_id.clone(),
            environment_id: job.environment_id.clone(),
            service_id: job.service_id.clone(),
            producer: PRODUCER.to_owned(),
            ..Default::default()
        };
        let task = tokio::spawn(async move {
            match subject {
                Ok(subject) => publish_loop(bus, subject, batch_template, rx).await,
                Err(error) => {
                    tracing::warn!(%error, "build logs cannot be published: the job's ids do not make a subject");
                    drain(rx).await;
                }
            }
        });
        Self {
            writer: LogWriter {
                tx,
                template: Arc::new(template),
            },
            task,
        }
    }

    /// A handle to send lines.
    pub fn writer(&self) -> LogWriter {
        self.writer.clone()
    }

    /// Publishes what is left and stops. Lines sent by clones still alive after this are lost.
    pub async fn finish(self) {
        let Self { writer, task } = self;
        drop(writer);
        // Clones held by finished readers are gone by now; bound the wait for any other.
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

async fn drain(mut rx: mpsc::UnboundedReceiver<logs::LogLine>) {
    while rx.recv().await.is_some() {}
}

async fn publish_loop(
    bus: Arc<dyn EventBus>,
    subject: String,
    template: logs::LogBatch,
    mut rx: mpsc::UnboundedReceiver<logs::LogLine>,
) {
    let mut open = true;
    while open {
        // Wait for the first line of the next batch, then gather for up to FLUSH_EVERY.
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut lines = vec![first];
        let mut bytes = lines[0].message.len() + 64;
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while lines.len() < MAX_BATCH_LINES && bytes < MAX_BATCH_BYTES - MAX_LINE_BYTES - 256 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => {
                    bytes += line.message.len() + 64;
                    lines.push(line);
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let batch = logs::LogBatch {
            id: uuid::Uuid::now_v7().to_string(),
            lines,
            ..template.clone()
        };
        publish(bus.as_ref(), &subject, &batch).await;
    }
}

/// Publishes one batch, retrying a few times: logs matter, but never more than the build.
async fn publish(bus: &dyn EventBus, subject: &str, batch: &logs::LogBatch) {
    for attempt in 1..=5u32 {
        match bus.publish_proto(subject, &batch.id, batch).await {
            Ok(_) => return,
            Err(error) if attempt == 5 => {
                tracing::warn!(%error, lines = batch.lines.len(), "build log lines lost");
            }
            Err(error) => {
                tracing::debug!(%error, attempt, "build log publish failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_split_on_char_boundaries() {
        let text = "é".repeat(MAX_LINE_BYTES);
        let parts = split(&text);
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(parts.concat(), text);
        assert_eq!(split("short"), vec!["short"]);
    }
}
