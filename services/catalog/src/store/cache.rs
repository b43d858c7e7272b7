//! A short-lived cache of the rows nearly every call reads: projects and environments.
//!
//! Every environment-scoped RPC loads its environment (for the mode RBAC decides on), and
//! `GetEnvironment` is the catalog's hottest read; without a cache each is a database round
//! trip. Entries are dropped at once by this replica's own writes (the store invalidates
//! what it changed) and, for other replicas' writes, on any `slipway.events.catalog.*`
//! event (projects and environments always publish one); the TTL bounds staleness if an
//! event is lost. A generation counter keeps a read that raced a write from caching the
//! old row after the write invalidated it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Kind, Row};

/// How long an entry is served without reading the database again.
const TTL: Duration = Duration::from_secs(5);
/// Most entries kept; beyond it the cache is emptied (cheap, and rare).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct RowCache {
    entries: Mutex<HashMap<(Kind, String), (Row, Instant)>>,
    generation: AtomicU64,
}

impl RowCache {
    /// Whether rows of `kind` are cached: only kinds whose every change publishes an
    /// event, so other replicas learn of it.
    pub(crate) fn caches(kind: Kind) -> bool {
        matches!(kind, Kind::Project | Kind::Environment)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, kind: Kind, id: &str) -> Option<Row> {
        let entries = self.entries.lock().ok()?;
        let (row, stored) = entries.get(&(kind, id.to_owned()))?;
        (stored.elapsed() < TTL).then(|| row.clone())
    }

    /// Caches `row`, read when the generation was `generation`; skipped if anything was
    /// invalidated since, as the row may predate that write.
    pub(crate) fn insert(&self, row: &Row, generation: u64) {
        if let Ok(mut entries) = self.entries.lock()
            && self.generation() == generation
        {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert((row.kind, row.id.clone()), (row.clone(), Instant::now()));
        }
    }

    pub(crate) fn invalidate(&self, kind: Kind, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&(kind, id.to_owned()));
        }
    }

    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}
