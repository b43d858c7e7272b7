//! One `TailLogs` call: register with the hub, send the backfill, mark the catch-up, then
//! forward live lines until the client goes away.
//!
//! Registering before reading the backfill is what makes the hand-over gap-free: every
//! line stored after registration reaches the tail's queue, every line stored before the
//! backfill's read ends is in the backfill, and the overlap is dropped by sequence.

use std::time::{Duration, SystemTime};

use slipway_events::ReadFrom;
use slipway_proto::logs::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::history::{History, HistoryError, read_from_time};
use crate::hub::Hub;
use crate::line::{self, Filter};

/// The most lines a backfill sends (`since_time` and `after_sequence` keep the newest).
pub const MAX_BACKFILL: usize = 10_000;

/// Silence after which an empty response tells the client the stream is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Message bytes per response: well under the 4 MiB clients accept by default.
const RESPONSE_BYTES: usize = 1024 * 1024;

/// What to send before following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    None,
    Lines(usize),
    Since(SystemTime),
    After(u64),
}

/// A validated, authorized tail.
#[derive(Debug, Clone)]
pub struct TailPlan {
    pub organization_id: String,
    pub filter: Filter,
    pub backfill: Backfill,
    /// Unsent lines kept for this tail before the oldest are dropped.
    pub capacity: usize,
}

/// The encoded weight of a line, for cutting responses.
pub fn line_size(line: &pb::LogLine) -> usize {
    line.message.len() + line.instance.len() + 200
}

/// Runs the tail until the client cancels (the receiving end of `out` is dropped).
pub async fn run(
    hub: Hub,
    history: History,
    plan: TailPlan,
    out: mpsc::Sender<Result<pb::TailLogsResponse, Status>>,
) {
    let handle = hub
        .register(&plan.organization_id, plan.filter.clone(), plan.capacity)
        .await;
    let backfill = match backfill(&history, &plan).await {
        Ok(backfill) => backfill,
        Err(error) => {
            tracing::warn!(%error, "log backfill failed");
            let _ = out
                .send(Err(Status::unavailable(
                    "the log store is unavailable; retry shortly",
                )))
                .await;
            return;
        }
    };
    handle.sent_up_to(backfill.sent_up_to);
    for response in chunks(backfill.lines) {
        if out.send(Ok(response)).await.is_err() {
            return;
        }
    }
    let caught_up = pb::TailLogsResponse {
        caught_up: true,
        ..Default::default()
    };
    if out.send(Ok(caught_up)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = out.closed() => return,
            () = handle.ready() => {
                for response in handle.drain(RESPONSE_BYTES) {
                    if out.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if out.send(Ok(pb::TailLogsResponse::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Sent {
    lines: Vec<pb::LogLine>,
    /// Live lines at or below this sequence are covered by the backfill.
    sent_up_to: u64,
}

async fn backfill(history: &History, plan: &TailPlan) -> Result<Sent, HistoryError> {
    let org = plan.organization_id.as_str();
    let filter = &plan.filter;
    let lines = match plan.backfill {
        Backfill::None => Vec::new(),
        Backfill::Lines(count) => {
            let last = history.last_sequence().await?;
            let lines = history.last_lines(org, filter, last + 1, count).await?;
            // Everything stored up to `last` was considered: only later lines are live.
            return Ok(Sent {
                lines,
                sent_up_to: line::first_sequence(last + 1).saturating_sub(1),
            });
        }
        Backfill::Since(since) => {
            let keep = |line: &pb::LogLine| line::line_time(line) >= since;
            history
                .lines_since(org, filter, read_from_time(since), keep, MAX_BACKFILL)
                .await?
        }
        Backfill::After(after) => {
            let keep = |line: &pb::LogLine| line.sequence > after;
            let from = ReadFrom::Sequence(line::batch_sequence(after));
            history
                .lines_since(org, filter, from, keep, MAX_BACKFILL)
                .await?
        }
    };
    let floor = match plan.backfill {
        Backfill::After(after) => after,
        _ => 0,
    };
    let sent_up_to = lines.last().map_or(floor, |line| line.sequence.max(floor));
    Ok(Sent { lines, sent_up_to })
}

/// The backfill as responses under [`RESPONSE_BYTES`] each.
fn chunks(lines: Vec<pb::LogLine>) -> Vec<pb::TailLogsResponse> {
    let mut responses = Vec::new();
    let mut current = pb::TailLogsResponse::default();
    let mut bytes = 0;
    for line in lines {
        let size = line_size(&line);
        if !current.lines.is_empty() && bytes + size > RESPONSE_BYTES {
            responses.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.lines.push(line);
    }
    if !current.lines.is_empty() {
        responses.push(current);
    }
    responses
}
