//! Where an environment sits (organization, project, mode), for authorization.
//!
//! Log-streaming has no catalog client (it is mounted with nothing but its platform), so it
//! learns environments from catalog's own events, `catalog.environment.created|updated|
//! deleted` on `EVENTS`, which carry exactly that. The stream is the source: each lookup
//! first reads what was stored since the last one (usually nothing: one ordered-consumer
//! round trip), so a mode change or a deletion counts from the very next call, and an
//! environment created a moment ago is found.
//!
//! Limit: an environment whose events have aged out of `EVENTS` (7 days) before this
//! process first read them is unknown here and answers `NOT_FOUND`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use slipway_auth::rbac::EnvironmentMode;
use slipway_events::{EventBus, EventsError, ReadFrom, StreamKind};
use slipway_proto::common::v1::EnvironmentMode as WireMode;
use slipway_proto::events::v1::{Event, event::Payload};
use tokio::sync::Mutex;

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
    environments: HashMap<String, Placement>,
    /// Last `EVENTS` sequence applied.
    applied: u64,
}

/// The environments seen in catalog's events. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    bus: Arc<dyn EventBus>,
    state: Arc<Mutex<State>>,
}

/// The directory could not read `EVENTS`.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Events(#[from] EventsError),
    #[error("reading environment events took too long")]
    TimedOut,
}

impl Directory {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            bus,
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
        while let Some(record) = reader.next().await {
            let record = record?;
            state.applied = record.sequence;
            match Event::decode(record.payload.as_ref()) {
                Ok(event) => apply(&mut state.environments, event),
                Err(error) => tracing::warn!(%error, "skipping an undecodable environment event"),
            }
            if record.pending == 0 {
                break;
            }
        }
        Ok(())
    }
}

fn apply(environments: &mut HashMap<String, Placement>, event: Event) {
    let placement = |project_id: String, mode: i32| Placement {
        organization_id: event.organization_id.clone(),
        project_id,
        mode: rbac_mode(mode),
    };
    match event.payload {
        Some(Payload::EnvironmentCreated(created)) => {
            let entry = placement(created.project_id, created.mode);
            environments.insert(created.environment_id, entry);
        }
        Some(Payload::EnvironmentUpdated(updated)) => {
            let entry = placement(updated.project_id, updated.mode);
            environments.insert(updated.environment_id, entry);
        }
        Some(Payload::EnvironmentDeleted(deleted)) => {
            environments.remove(&deleted.environment_id);
        }
        _ => {}
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
