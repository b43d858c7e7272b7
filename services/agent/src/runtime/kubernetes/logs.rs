//! Workload output, sent back as `LogChunk`s:
//!
//! - the output of job runs, once the run is over, so a failing lifecycle job's deployment
//!   shows why ([`send_job_logs`], `from_command`);
//! - the output of the pods of running applications and databases, followed from the end
//!   of a successful rollout until the workload is stopped or deleted, or the pod goes away
//!   ([`Followers`]).
//!
//! Kubernetes merges a container's stdout and stderr into one log, so every line is
//! reported as stdout. Lines are the workload's own output: they are sent, never written to
//! the agent's own log.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, LogParams};
use slipway_proto::agent::v1 as pb;
use slipway_proto::logs::v1::LogStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::objects::{ANNOTATION_REVISION, Meta, service_selector};
use crate::runtime::{RuntimeEvent, RuntimeEvents};

/// Most output read from one pod of a job run.
const MAX_BYTES_PER_POD: i64 = 4 * 1024 * 1024;
/// Most lines of one chunk (report.proto).
const MAX_LINES_PER_CHUNK: usize = 1000;
/// Longest line (report.proto): longer ones are split.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Sends the output of every pod of the Job `job_name` as `from_command` chunks. Best
/// effort: output that cannot be read is logged and skipped, never a reason to fail a run.
pub async fn send_job_logs(
    client: &Client,
    meta: Meta<'_>,
    job_name: &str,
    events: &RuntimeEvents,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &meta.command.namespace);
    let listed = match pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
    {
        Ok(listed) => listed.items,
        Err(error) => {
            tracing::warn!(%error, job = job_name, "cannot list the pods of a job run");
            return;
        }
    };
    for pod in listed {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        let params = LogParams {
            timestamps: true,
            limit_bytes: Some(MAX_BYTES_PER_POD),
            ..LogParams::default()
        };
        match pods.logs(&name, &params).await {
            Ok(text) => {
                for chunk in chunks(meta, &name, &text) {
                    let _ = events.send(RuntimeEvent::Log(chunk));
                }
            }
            Err(error) => tracing::warn!(%error, pod = name, "cannot read the output of a job run"),
        }
    }
}

/// Splits `text` (as `kubectl logs --timestamps` prints it) into chunks of `instance`.
pub fn chunks(meta: Meta<'_>, instance: &str, text: &str) -> Vec<pb::LogChunk> {
    let now = prost_types::Timestamp::from(SystemTime::now());
    let mut lines = Vec::new();
    for raw in text.lines() {
        let (time, line) = split_timestamp(raw);
        push_line(time.unwrap_or(now), line, &mut lines);
    }
    lines
        .chunks(MAX_LINES_PER_CHUNK)
        .map(|lines| pb::LogChunk {
            organization_id: meta.command.organization_id.clone(),
            project_id: meta.command.project_id.clone(),
            environment_id: meta.command.environment_id.clone(),
            service_id: meta.workload.service_id.clone(),
            deployment_id: meta.command.deployment_id.clone(),
            from_command: true,
            instance: instance.to_owned(),
            stream: LogStream::Stdout as i32,
            lines: lines.to_vec(),
            dropped_count: 0,
        })
        .collect()
}

/// Appends `line` to `lines`, split into pieces of at most [`MAX_LINE_BYTES`].
fn push_line(time: prost_types::Timestamp, line: &str, lines: &mut Vec<pb::LogChunkLine>) {
    let mut rest = line;
    loop {
        let mut cut = rest.len().min(MAX_LINE_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        lines.push(pb::LogChunkLine {
            time: Some(time),
            text: head.to_owned(),
        });
        if tail.is_empty() {
            break;
        }
        rest = tail;
    }
}

/// The RFC 3339 timestamp Kubernetes puts before each line, and the line after it.
fn split_timestamp(raw: &str) -> (Option<prost_types::Timestamp>, &str) {
    if let Some((stamp, line)) = raw.split_once(' ')
        && let Ok(time) = stamp.parse::<k8s_openapi::jiff::Timestamp>()
    {
        let time = prost_types::Timestamp {
            seconds: time.as_second(),
            nanos: time.subsec_nanosecond(),
        };
        return (Some(time), line);
    }
    (None, raw)
}

/// Longest a followed line waits before its chunk is sent.
const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Most lines of a followed pod's chunk.
const MAX_FOLLOWED_LINES: usize = 500;
/// Most bytes of a chunk's lines (report.proto allows 256 KiB; this leaves room for a
/// last line and the chunk's ids).
const MAX_CHUNK_BYTES: usize = 200 * 1024;
/// Most output sent again from before a follower starts (the pod's start, capped): an agent
/// that restarts and follows a pod again resends at most this much.
const MAX_BACKLOG_SECONDS: i64 = 600;
/// Shortest wait before following a pod again after its stream ended while it still runs
/// (its container restarted, the connection dropped).
const MIN_RETRY: Duration = Duration::from_secs(1);

/// A workload: its namespace and service.
type WorkloadKey = (String, String);

/// The followers of the pods of running workloads, shared by every clone of the runtime.
#[derive(Default)]
pub struct Followers {
    /// Where followed output goes: the `events` of the latest command, or the sender given
    /// to `attach` (as the process runtime does).
    sink: Mutex<Option<RuntimeEvents>>,
    /// One follower task per followed pod, by workload and pod name.
    pods: Mutex<HashMap<WorkloadKey, HashMap<String, JoinHandle<()>>>>,
}

impl std::fmt::Debug for Followers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followers").finish_non_exhaustive()
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        let pods = self.pods.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (_, followed) in pods.drain() {
            for (_, task) in followed {
                task.abort();
            }
        }
    }
}

/// The ids every chunk of a followed pod carries.
#[derive(Clone, Debug)]
struct ChunkIds {
    organization_id: String,
    project_id: String,
    environment_id: String,
    service_id: String,
    deployment_id: String,
    instance: String,
}

impl Followers {
    /// Sends events outside any command to `events` from now on.
    pub fn attach(&self, events: RuntimeEvents) {
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(events);
    }

    fn emit(&self, event: RuntimeEvent) {
        let sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = sink.as_ref() {
            // A closed channel means nobody listens right now: the output is dropped.
            let _ = sink.send(event);
        }
    }

    /// Follows every pod of the workload's current revision (after a successful rollout):
    /// starts a follower for each pod not followed yet, keeps the running ones, ends those
    /// of pods no longer current. Best effort: a failure is logged, never a command's.
    pub async fn follow_workload(self: &Arc<Self>, client: &Client, meta: Meta<'_>) {
        let ns = meta.command.namespace.as_str();
        let revision = meta.workload.revision.as_str();
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let selector = service_selector(&meta.workload.service_id);
        let listed = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(listed) => listed.items,
            Err(error) => {
                tracing::warn!(%error, workload = meta.workload.name, "cannot list pods to follow");
                return;
            }
        };
        let current: Vec<Pod> = listed
            .into_iter()
            .filter(|pod| {
                pod.metadata.deletion_timestamp.is_none()
                    && pod
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ANNOTATION_REVISION))
                        .is_none_or(|r| r == revision)
            })
            .collect();
        let names: HashSet<String> = current
            .iter()
            .filter_map(|pod| pod.metadata.name.clone())
            .collect();
        let key = (ns.to_owned(), meta.workload.service_id.clone());
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let followed = pods.entry(key).or_default();
        followed.retain(|name, task| {
            let keep = names.contains(name) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for pod in current {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            if followed.contains_key(&name) {
                continue;
            }
            let ids = ChunkIds {
                organization_id: meta.command.organization_id.clone(),
                project_id: meta.command.project_id.clone(),
                environment_id: meta.command.environment_id.clone(),
                service_id: meta.workload.service_id.clone(),
                deployment_id: meta.command.deployment_id.clone(),
                instance: name.clone(),
            };
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let task = tokio::spawn(follow_pod(
                Arc::downgrade(self),
                api.clone(),
                ids,
                backlog_seconds(started),
            ));
            followed.insert(name, task);
        }
    }

    /// Ends the followers of a workload (stopped or deleted).
    pub fn stop_workload(&self, namespace: &str, service_id: &str) {
        let removed = self
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(namespace.to_owned(), service_id.to_owned()));
        for (_, task) in removed.into_iter().flatten() {
            task.abort();
        }
    }

    /// How many followers of the workload are still running.
    pub fn following(&self, namespace: &str, service_id: &str) -> usize {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), service_id.to_owned()))
            .map_or(0, |followed| {
                followed.values().filter(|t| !t.is_finished()).count()
            })
    }
}

/// `sinceSeconds` of a pod's first stream: its output since it started, at most
/// [`MAX_BACKLOG_SECONDS`].
fn backlog_seconds(started: Option<k8s_openapi::jiff::Timestamp>) -> i64 {
    let Some(started) = started else {
        return MAX_BACKLOG_SECONDS;
    };
    let age = k8s_openapi::jiff::Timestamp::now().as_second() - started.as_second();
    (age + 1).clamp(1, MAX_BACKLOG_SECONDS)
}

/// Follows one pod until it goes away (or the task is aborted): streams its log, and
/// streams it again from the last line seen when the stream ends while the pod still runs.
async fn follow_pod(
    followers: std::sync::Weak<Followers>,
    api: Api<Pod>,
    ids: ChunkIds,
    mut since_seconds: i64,
) {
    let mut last: Option<prost_types::Timestamp> = None;
    loop {
        let params = LogParams {
            follow: true,
            timestamps: true,
            since_seconds: Some(since_seconds),
            ..LogParams::default()
        };
        match api.log_stream(&ids.instance, &params).await {
            Ok(reader) => {
                let reader = std::pin::pin!(reader);
                if !read_stream(&followers, reader, &ids, &mut last).await {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, pod = ids.instance, "cannot follow a pod's output")
            }
        }
        // The stream ended: the pod went away, its container restarted, or the connection
        // dropped. Follow again only while the pod runs.
        match api.get_opt(&ids.instance).await {
            Ok(Some(pod))
                if pod.metadata.deletion_timestamp.is_none()
                    && !matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    ) => {}
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, pod = ids.instance, "cannot read a followed pod; no longer following it");
                return;
            }
        }
        tokio::time::sleep(MIN_RETRY).await;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        since_seconds = match last {
            Some(last) => (now - last.seconds + 1).clamp(1, MAX_BACKLOG_SECONDS),
            None => {
                (since_seconds + MIN_RETRY.as_secs().cast_signed() + 1).min(MAX_BACKLOG_SECONDS)
            }
        };
    }
}

/// Reads one log stream to its end, sending its lines in chunks (after [`FLUSH_AFTER`], or
/// once [`MAX_FOLLOWED_LINES`] lines or [`MAX_CHUNK_BYTES`] wait). Lines at or before `last`
/// (seen on an earlier stream) are skipped. False when the runtime is gone.
async fn read_stream<R: futures::AsyncBufRead>(
    followers: &std::sync::Weak<Followers>,
    mut reader: std::pin::Pin<&mut R>,
    ids: &ChunkIds,
    last: &mut Option<prost_types::Timestamp>,
) -> bool {
    let skip_until = *last;
    let mut batch: Vec<pb::LogChunkLine> = Vec::new();
    let mut bytes = 0usize;
    let mut flush_at: Option<Instant> = None;
    // Kept across reads: a read cut short by a flush keeps what it read.
    let mut buf: Vec<u8> = Vec::new();
    let flush = |batch: &mut Vec<pb::LogChunkLine>, bytes: &mut usize| -> bool {
        *bytes = 0;
        if batch.is_empty() {
            return true;
        }
        let Some(followers) = followers.upgrade() else {
            return false;
        };
        followers.emit(RuntimeEvent::Log(pb::LogChunk {
            organization_id: ids.organization_id.clone(),
            project_id: ids.project_id.clone(),
            environment_id: ids.environment_id.clone(),
            service_id: ids.service_id.clone(),
            deployment_id: ids.deployment_id.clone(),
            from_command: false,
            instance: ids.instance.clone(),
            stream: LogStream::Stdout as i32,
            lines: std::mem::take(batch),
            dropped_count: 0,
        }));
        true
    };
    loop {
        let read = match flush_at {
            Some(at) => match tokio::time::timeout_at(at, reader.read_until(b'\n', &mut buf)).await
            {
                Ok(read) => read,
                Err(_) => {
                    flush_at = None;
                    if !flush(&mut batch, &mut bytes) {
                        return false;
                    }
                    continue;
                }
            },
            None => reader.read_until(b'\n', &mut buf).await,
        };
        let ended = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(%error, pod = ids.instance, "a pod's output stream failed");
                true
            }
        };
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(&buf);
            let raw = text.trim_end_matches(['\n', '\r']);
            let (time, line) = split_timestamp(raw);
            let fresh = match (time, skip_until) {
                (Some(time), Some(until)) => {
                    (time.seconds, time.nanos) > (until.seconds, until.nanos)
                }
                _ => true,
            };
            if fresh {
                let time = time.unwrap_or_else(|| prost_types::Timestamp::from(SystemTime::now()));
                *last = Some(time);
                bytes += line.len();
                push_line(time, line, &mut batch);
                flush_at.get_or_insert_with(|| Instant::now() + FLUSH_AFTER);
            }
            buf.clear();
        }
        if ended {
            return flush(&mut batch, &mut bytes);
        }
        if batch.len() >= MAX_FOLLOWED_LINES || bytes >= MAX_CHUNK_BYTES {
            flush_at = None;
            if !flush(&mut batch, &mut bytes) {
                return false;
            }
        }
    }
}
