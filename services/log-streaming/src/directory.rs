//! Where an environment sits (organization, project, mode), for authorization.
//!
//! Log-streaming has no catalog client (it is mounted with nothing but its platform), so it
//! learns environments from catalog's own events, `catalog.environment.created|updated|
//! deleted` on `EVENTS`, which carry exactly that. The stream is the source: each lookup
//! first reads what was stored since the last one (usually nothing: one ordered-consumer
//! round trip), so a mode change or a deletion counts from the very next call, and an
//! environment created a moment ago is found.
//!
//! What was read is kept in this service's database ([`crate::store`]) with the sequence
//! it was read up to, so a restart, or a new replica, continues from there instead of
//! depending on `EVENTS` still holding every environment's creation (it keeps 7 days).
//! Limit: an installation whose log-streaming first starts after catalog's events of an
//! environment aged out does not know that environment (`NOT_FOUND`) until it changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use slipway_auth::rbac::EnvironmentMode;
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::DbErr;
use slipway_events::{EventBus, EventsError, ReadFrom, StreamKind};
use slipway_proto::common::v1::EnvironmentMode as WireMode;
use slipway_proto::events::v1::{Event, event::Payload};
use tokio::sync::Mutex;

use crate::store::{Change, DirectoryStore, StoredEnvironment};

/// The events this directory is built from.
const FILTER: &str = "slipway.events.catalog.environment.>";

/// How long catching up may take before a lookup gives up (the bus is unwell).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// An environment's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub organization_id: String,
    pub project_id: String,
    pub mode: Option<EnvironmentMode>,
}

#[derive(Default)]
struct State {
    /// Whether `environments` and `applied` were read from the store yet.
    loaded: bool,
    environments: HashMap<String, Placement>,
    /// Last `EVENTS` sequence applied.
    applied: u64,
}

/// The environments seen in catalog's events. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    bus: Arc<dyn EventBus>,
    store: DirectoryStore,
    state: Arc<Mutex<State>>,
}

/// The directory could not read `EVENTS`, or its own tables.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Events(#[from] EventsError),
    #[error("reading environment events took too long")]
    TimedOut,
    #[error("the environment directory's database failed")]
    Store(#[from] DbErr),
}

impl Directory {
    /// A directory reading `bus`, kept in `db` (with [`crate::store::Migrator`] applied).
    pub fn new(bus: Arc<dyn EventBus>, db: DatabaseConnection) -> Self {
        Self {
            bus,
            store: DirectoryStore::new(db),
            state: Arc::default(),
        }
    }

    /// Where `environment_id` sits; `None` when catalog never announced it or deleted it.
    pub async fn lookup(&self, environment_id: &str) -> Result<Option<Placement>, DirectoryError> {
        let mut state = self.state.lock().await;
        tokio::time::timeout(CATCH_UP_LIMIT, self.catch_up(&mut state))
            .await
            .map_err(|_| DirectoryError::TimedOut)??;
        Ok(state.environments.get(environment_id).cloned())
    }

    async fn catch_up(&self, state: &mut State) -> Result<(), DirectoryError> {
        if !state.loaded {
            let (stored, applied) = self.store.load().await?;
            state.environments = stored
                .into_iter()
                .map(|(id, env)| (id, placement(env)))
                .collect();
            state.applied = applied;
            state.loaded = true;
        }
        let mut reader = self
            .bus
            .read(
                StreamKind::Events,
                FILTER,
                ReadFrom::Sequence(state.applied + 1),
            )
            .await?;
        if reader.pending() == 0 {
            return Ok(());
        }
        let mut changes = Vec::new();
        let mut applied = state.applied;
        while let Some(record) = reader.next().await {
            let record = record?;
            applied = record.sequence;
            match Event::decode(record.payload.as_ref()) {
                Ok(event) => changes.extend(change(event)),
                Err(error) => tracing::warn!(%error, "skipping an undecodable environment event"),
            }
            if record.pending == 0 {
                break;
            }
        }
        // Stored first: memory never runs ahead of the database, so a failed write is
        // read again from `EVENTS` by the next lookup.
        self.store.save(&changes, applied).await?;
        for change in changes {
            match change {
                Change::Put(id, env) => {
                    state.environments.insert(id, placement(env));
                }
                Change::Remove(id) => {
                    state.environments.remove(&id);
                }
            }
        }
        state.applied = applied;
        Ok(())
    }
}

/// What `event` changes in the directory, if it is an environment event.
fn change(event: Event) -> Option<Change> {
    let stored = |project_id: String, mode: i32| StoredEnvironment {
        organization_id: event.organization_id.clone(),
        project_id,
        mode,
    };
    match event.payload {
        Some(Payload::EnvironmentCreated(created)) => Some(Change::Put(
            created.environment_id,
            stored(created.project_id, created.mode),
        )),
        Some(Payload::EnvironmentUpdated(updated)) => Some(Change::Put(
            updated.environment_id,
            stored(updated.project_id, updated.mode),
        )),
        Some(Payload::EnvironmentDeleted(deleted)) => Some(Change::Remove(deleted.environment_id)),
        _ => None,
    }
}

fn placement(env: StoredEnvironment) -> Placement {
    Placement {
        organization_id: env.organization_id,
        project_id: env.project_id,
        mode: rbac_mode(env.mode),
    }
}

fn rbac_mode(mode: i32) -> Option<EnvironmentMode> {
    match WireMode::try_from(mode).ok()? {
        WireMode::Unspecified => None,
        WireMode::Production => Some(EnvironmentMode::Production),
        WireMode::Staging => Some(EnvironmentMode::Staging),
        WireMode::Development => Some(EnvironmentMode::Development),
        WireMode::Preview => Some(EnvironmentMode::Preview),
    }
}
