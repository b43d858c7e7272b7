//! The fan-out of live lines: one reader on `LOGS` per process, however many tails.
//!
//! The hub reads every new batch once, decodes it once, and offers its lines to the tails
//! of that organization and environment. Offering never waits: each tail has a bounded
//! queue, and when it is full the oldest unsent line is dropped and counted, so a tail
//! whose client does not read cannot slow the hub, the other tails, or the producers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use slipway_events::{EventBus, ReadFrom, StreamKind};
use slipway_proto::logs::v1 as pb;
use slipway_service::AbortOnDrop;
use tokio::sync::{Notify, watch};

use crate::line::{self, Filter, StoredBatch};

/// Pause before reopening the hub's reader after the bus failed it.
const REOPEN_DELAY: Duration = Duration::from_millis(500);

type Key = (String, String);

#[derive(Default)]
struct Registry {
    tails: HashMap<Key, Vec<Arc<Tail>>>,
    next_id: u64,
}

/// The fan-out. Cheap to clone; the reader task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    /// True once the reader is open: a tail registered after that misses no new line.
    ready: watch::Receiver<bool>,
    _task: Arc<AbortOnDrop>,
}

impl Hub {
    /// Starts the hub's reader on `bus`.
    pub fn start(bus: Arc<dyn EventBus>) -> Self {
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(follow(bus, Arc::downgrade(&registry), ready_tx));
        Self {
            registry,
            ready,
            _task: Arc::new(AbortOnDrop::new(task)),
        }
    }

    /// Registers a tail on `organization_id`/`filter.environment_id`, holding at most
    /// `capacity` unsent lines. It receives every line stored after this returns.
    pub async fn register(
        &self,
        organization_id: &str,
        filter: Filter,
        capacity: usize,
    ) -> TailHandle {
        let mut ready = self.ready.clone();
        // Only fails when the reader task is gone, and then nothing will come anyway.
        let _ = ready.wait_for(|ready| *ready).await;
        let key = (organization_id.to_owned(), filter.environment_id.clone());
        let mut registry = lock(&self.registry);
        registry.next_id += 1;
        let tail = Arc::new(Tail {
            id: registry.next_id,
            filter,
            capacity: capacity.max(1),
            after: AtomicU64::new(0),
            queue: Mutex::default(),
            notify: Notify::new(),
        });
        registry
            .tails
            .entry(key.clone())
            .or_default()
            .push(Arc::clone(&tail));
        TailHandle {
            tail,
            key,
            registry: Arc::downgrade(&self.registry),
        }
    }

    /// How many tails are registered (for tests and metrics).
    pub fn tails(&self) -> usize {
        lock(&self.registry).tails.values().map(Vec::len).sum()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `LOGS` from now on and dispatches every batch, reopening after a failure from
/// the sequence after the last one seen, so a bus hiccup loses nothing.
async fn follow(
    bus: Arc<dyn EventBus>,
    registry: Weak<Mutex<Registry>>,
    ready: watch::Sender<bool>,
) {
    let mut from = ReadFrom::New;
    loop {
        match bus.read(StreamKind::Logs, "slipway.logs.>", from).await {
            Ok(mut reader) => {
                ready.send_replace(true);
                while let Some(item) = reader.next().await {
                    match item {
                        Ok(record) => {
                            from = ReadFrom::Sequence(record.sequence + 1);
                            let Some(registry) = registry.upgrade() else {
                                return;
                            };
                            if let Some(batch) = line::decode(&record) {
                                dispatch(&registry, &batch);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "the live log reader failed; reopening");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot open the live log reader; retrying"),
        }
        if registry.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(REOPEN_DELAY).await;
    }
}

fn dispatch(registry: &Mutex<Registry>, batch: &StoredBatch) {
    let tails: Vec<Arc<Tail>> = {
        let registry = lock(registry);
        let key = (batch.organization_id.clone(), batch.environment_id.clone());
        match registry.tails.get(&key) {
            Some(tails) => tails.clone(),
            None => return,
        }
    };
    for tail in tails {
        tail.offer(batch);
    }
}

/// One waiting item of a tail.
#[derive(Debug, Clone)]
enum Entry {
    Line(Arc<pb::LogLine>),
    /// A gap the producer reported (rate limited).
    Gap(pb::DroppedLines),
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    lines: usize,
    /// Lines dropped for this slow reader just before the front of `entries`.
    dropped: Option<pb::DroppedLines>,
}

/// One tail's queue.
struct Tail {
    id: u64,
    filter: Filter,
    capacity: usize,
    /// Lines at or below this sequence were sent by the backfill.
    after: AtomicU64,
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Tail {
    fn offer(&self, batch: &StoredBatch) {
        let mut offered = false;
        {
            let mut queue = lock(&self.queue);
            if let Some(gap) = &batch.dropped {
                queue.entries.push_back(Entry::Gap(*gap));
                offered = true;
            }
            for line in &batch.lines {
                if !self.filter.matches(line) {
                    continue;
                }
                while queue.lines >= self.capacity {
                    drop_oldest(&mut queue);
                }
                queue.entries.push_back(Entry::Line(Arc::clone(line)));
                queue.lines += 1;
                offered = true;
            }
        }
        if offered {
            self.notify.notify_one();
        }
    }
}

fn drop_oldest(queue: &mut Queue) {
    let Some(entry) = queue.entries.pop_front() else {
        queue.lines = 0;
        return;
    };
    let (count, time) = match entry {
        Entry::Line(line) => {
            queue.lines -= 1;
            (1, line.time)
        }
        Entry::Gap(gap) => (gap.count, gap.last_time),
    };
    let dropped = queue.dropped.get_or_insert_with(|| pb::DroppedLines {
        count: 0,
        first_time: time,
        last_time: time,
        reason: pb::DropReason::SlowClient.into(),
    });
    dropped.count += count;
    dropped.last_time = time.or(dropped.last_time);
}

/// A registered tail; dropping it unregisters it.
pub struct TailHandle {
    tail: Arc<Tail>,
    key: Key,
    registry: Weak<Mutex<Registry>>,
}

impl TailHandle {
    /// Lines at or below `sequence` were already sent: skip them from now on.
    pub fn sent_up_to(&self, sequence: u64) {
        self.tail.after.fetch_max(sequence, Ordering::Relaxed);
    }

    /// Waits until something is queued.
    pub async fn ready(&self) {
        let empty = {
            let queue = lock(&self.tail.queue);
            queue.entries.is_empty() && queue.dropped.is_none()
        };
        if empty {
            self.tail.notify.notified().await;
        }
    }

    /// Takes everything queued, as responses of at most `max_bytes` of messages each
    /// (and at least one line): a gap opens a new response carrying it as `dropped`.
    pub fn drain(&self, max_bytes: usize) -> Vec<pb::TailLogsResponse> {
        let (dropped, entries) = {
            let mut queue = lock(&self.tail.queue);
            queue.lines = 0;
            (queue.dropped.take(), std::mem::take(&mut queue.entries))
        };
        let after = self.tail.after.load(Ordering::Relaxed);
        let mut responses = Vec::new();
        let mut current = pb::TailLogsResponse {
            dropped,
            ..Default::default()
        };
        let mut last = after;
        let mut bytes = 0;
        for entry in entries {
            match entry {
                Entry::Line(line) if line.sequence <= after => {}
                Entry::Line(line) => {
                    let size = crate::tail::line_size(&line);
                    if !current.lines.is_empty() && bytes + size > max_bytes {
                        responses.push(std::mem::take(&mut current));
                        bytes = 0;
                    }
                    bytes += size;
                    last = last.max(line.sequence);
                    current.lines.push(pb::LogLine::clone(&line));
                }
                Entry::Gap(gap) => {
                    if !current.lines.is_empty() || current.dropped.is_some() {
                        responses.push(std::mem::take(&mut current));
                        bytes = 0;
                    }
                    current.dropped = Some(gap);
                }
            }
        }
        if !current.lines.is_empty() || current.dropped.is_some() {
            responses.push(current);
        }
        self.sent_up_to(last);
        responses
    }
}

impl Drop for TailHandle {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut registry = lock(&registry);
        if let Some(tails) = registry.tails.get_mut(&self.key) {
            tails.retain(|tail| tail.id != self.tail.id);
            if tails.is_empty() {
                registry.tails.remove(&self.key);
            }
        }
    }
}
