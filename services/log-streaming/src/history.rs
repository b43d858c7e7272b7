//! Stored lines, read back from `LOGS` with ordered readers confined to one
//! organization's environment (and service) subject.
//!
//! JetStream reads forward only, so "the newest lines" are read in windows of stream
//! sequences walking back from the end, each window read forward and growing fourfold, so
//! a quiet environment in a busy stream costs a few reads, not one per batch.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_events::{EventBus, EventsError, ReadFrom, StreamKind};
use slipway_proto::logs::v1 as pb;

use crate::line::{self, Filter, StoredBatch};

/// How far a line's own time may lie from when it was stored (producer clocks, batching,
/// an agent resending what it buffered): time bounds are widened by this much when they
/// pick where to start or stop reading, then applied exactly to each line.
pub const CLOCK_SLACK: Duration = Duration::from_secs(300);

/// How long one read may wait for the next stored message before the bus counts as
/// unavailable (it has said more is pending, so this is only ever a sick server).
const READ_STALL: Duration = Duration::from_secs(10);

/// First window of a backward read, in stream sequences.
const FIRST_WINDOW: u64 = 256;

/// Why stored lines could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Events(#[from] EventsError),
    #[error("the log store did not answer in time")]
    Stalled,
}

/// Reads stored batches of one subject.
#[derive(Clone)]
pub struct History {
    bus: Arc<dyn EventBus>,
}

impl History {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self { bus }
    }

    /// The sequence of the last batch stored in `LOGS` (any subject).
    pub async fn last_sequence(&self) -> Result<u64, HistoryError> {
        Ok(self.bus.stream_info(StreamKind::Logs).await?.last_sequence)
    }

    /// Visits the batches of `subject` from `from` on, oldest first, until `visit` breaks
    /// or what is stored is read.
    pub async fn forward(
        &self,
        subject: &str,
        from: ReadFrom,
        mut visit: impl FnMut(StoredBatch) -> ControlFlow<()>,
    ) -> Result<(), HistoryError> {
        let mut reader = self.bus.read(StreamKind::Logs, subject, from).await?;
        if reader.pending() == 0 {
            return Ok(());
        }
        loop {
            let record = match tokio::time::timeout(READ_STALL, reader.next()).await {
                Err(_) => return Err(HistoryError::Stalled),
                Ok(None) => return Ok(()),
                Ok(Some(record)) => record?,
            };
            let last = record.pending == 0;
            if let Some(batch) = line::decode(&record)
                && visit(batch).is_break()
            {
                return Ok(());
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Visits the batches of `subject` stored before stream sequence `before`, newest
    /// first, until `visit` breaks or the start of the stream is reached.
    pub async fn backward(
        &self,
        subject: &str,
        before: u64,
        mut visit: impl FnMut(StoredBatch) -> ControlFlow<()>,
    ) -> Result<(), HistoryError> {
        let mut high = before;
        let mut window = FIRST_WINDOW;
        while high > 1 {
            let low = high.saturating_sub(window).max(1);
            let mut batches = Vec::new();
            self.forward(subject, ReadFrom::Sequence(low), |batch| {
                if batch.stream_sequence >= high {
                    return ControlFlow::Break(());
                }
                batches.push(batch);
                ControlFlow::Continue(())
            })
            .await?;
            for batch in batches.into_iter().rev() {
                if visit(batch).is_break() {
                    return Ok(());
                }
            }
            high = low;
            window = window.saturating_mul(4);
        }
        Ok(())
    }

    /// The last `count` lines matching `filter` stored before stream sequence `before`,
    /// oldest first.
    pub async fn last_lines(
        &self,
        organization_id: &str,
        filter: &Filter,
        before: u64,
        count: usize,
    ) -> Result<Vec<pb::LogLine>, HistoryError> {
        let mut newest_first = Vec::new();
        self.backward(&filter.subject(organization_id), before, |batch| {
            for line in batch.lines.iter().rev() {
                if filter.matches(line) {
                    newest_first.push(pb::LogLine::clone(line));
                    if newest_first.len() >= count {
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
        newest_first.reverse();
        Ok(newest_first)
    }

    /// The matching lines from `from` on that `keep` accepts, at most the `cap` most
    /// recent, oldest first.
    pub async fn lines_since(
        &self,
        organization_id: &str,
        filter: &Filter,
        from: ReadFrom,
        keep: impl Fn(&pb::LogLine) -> bool,
        cap: usize,
    ) -> Result<Vec<pb::LogLine>, HistoryError> {
        let mut lines = VecDeque::new();
        self.forward(&filter.subject(organization_id), from, |batch| {
            for line in &batch.lines {
                if filter.matches(line) && keep(line) {
                    if lines.len() >= cap {
                        lines.pop_front();
                    }
                    lines.push_back(pb::LogLine::clone(line));
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
        Ok(lines.into())
    }
}

/// Where a forward read must start to see every line at or after `time`.
pub fn read_from_time(time: SystemTime) -> ReadFrom {
    ReadFrom::Time(
        time.checked_sub(CLOCK_SLACK)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}
