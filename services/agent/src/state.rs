//! What the agent remembers across restarts: the commands it finished, with their final
//! report.
//!
//! The orchestrator redelivers a command until it sees an ack, and may redeliver one the
//! agent applied just before it restarted. Each command id is applied once: the session
//! records a command here (durably) *before* it sends the final report, so a restarted
//! agent lists it in `Hello.applied_command_ids` and answers a redelivery `DUPLICATE` with
//! the stored final report instead of applying it again.
//!
//! The record is one JSON file in the agent's state directory, rewritten whole (temporary
//! file, fsync, rename) so a crash leaves either the old or the new file, never half of
//! one. Writes of commands finishing together are coalesced into one file write.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use slipway_proto::agent::v1 as pb;

/// Name of the file in the state directory.
pub const STATE_FILE: &str = "applied-commands.json";

/// Finished commands kept, most recent first. The same bound as `Hello.applied_command_ids`:
/// the orchestrator only redelivers commands it has no ack for, which are recent, so older
/// ones are never asked about again.
pub const MAX_APPLIED: usize = 1000;

/// Version of the file format, so a future agent can read (or refuse) an older file.
const FORMAT_VERSION: u32 = 1;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read agent state {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "agent state {} is damaged ({source}); move it away to start afresh (commands it lists \
         may then be applied again)",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("agent state {} has format version {found}; this agent reads version {FORMAT_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write agent state {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One finished command and its final command-level report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCommand {
    pub command_id: String,
    pub deployment_id: String,
    /// `StepStatus` by its proto name (`STEP_STATUS_SUCCEEDED` or `STEP_STATUS_FAILED`):
    /// names keep the file readable and survive renumbering mistakes.
    pub status: String,
    /// `FailureReason` by its proto name.
    pub failure_reason: String,
    pub message: String,
    /// The final report's `sequence`: resent unchanged, so the orchestrator drops it when it
    /// already has it.
    pub sequence: u32,
    pub finish_time_seconds: i64,
    pub finish_time_nanos: i32,
}

impl AppliedCommand {
    /// What to remember of a final command-level report.
    pub fn from_report(report: &pb::StepReport) -> Self {
        let time = report.time.unwrap_or_default();
        Self {
            command_id: report.command_id.clone(),
            deployment_id: report.deployment_id.clone(),
            status: report.status().as_str_name().to_owned(),
            failure_reason: report.failure_reason().as_str_name().to_owned(),
            message: report.message.clone(),
            sequence: report.sequence,
            finish_time_seconds: time.seconds,
            finish_time_nanos: time.nanos,
        }
    }

    /// The final command-level report, as first sent.
    pub fn final_report(&self) -> pb::StepReport {
        let status = pb::StepStatus::from_str_name(&self.status).unwrap_or(pb::StepStatus::Failed);
        let failure_reason = pb::FailureReason::from_str_name(&self.failure_reason)
            .unwrap_or(pb::FailureReason::Unspecified);
        pb::StepReport {
            command_id: self.command_id.clone(),
            deployment_id: self.deployment_id.clone(),
            service_id: String::new(),
            step: crate::session::COMMAND_STEP.to_owned(),
            status: status as i32,
            message: self.message.clone(),
            runtime_state: pb::RuntimeState::Unspecified as i32,
            failure_reason: failure_reason as i32,
            time: Some(prost_types::Timestamp {
                seconds: self.finish_time_seconds,
                nanos: self.finish_time_nanos,
            }),
            sequence: self.sequence,
        }
    }
}

/// The file's shape.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Most recent first.
    applied: Vec<AppliedCommand>,
}

/// The in-memory copy of the file.
struct Memory {
    /// Most recent first, at most [`MAX_APPLIED`].
    applied: VecDeque<AppliedCommand>,
    /// Bumped by every change; compared with what the file holds.
    generation: u64,
}

/// The agent's durable record of finished commands.
pub struct AgentState {
    path: PathBuf,
    memory: Mutex<Memory>,
    /// The generation the file holds. Held across a write, so writes never interleave and a
    /// caller whose change an earlier write already covered returns without writing.
    written: tokio::sync::Mutex<u64>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AgentState {
    /// Opens (creating the directory if needed) the state kept in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        std::fs::create_dir_all(dir).map_err(|source| StateError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let applied = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: StateFile =
                    serde_json::from_slice(&bytes).map_err(|source| StateError::Damaged {
                        path: path.clone(),
                        source,
                    })?;
                if file.version != FORMAT_VERSION {
                    return Err(StateError::Version {
                        path,
                        found: file.version,
                    });
                }
                file.applied.into_iter().take(MAX_APPLIED).collect()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(Self {
            path,
            memory: Mutex::new(Memory {
                applied,
                generation: 0,
            }),
            written: tokio::sync::Mutex::new(0),
        })
    }

    /// Where the state is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids of the finished commands, most recent first, for `Hello.applied_command_ids`.
    pub fn applied_ids(&self) -> Vec<String> {
        self.memory()
            .applied
            .iter()
            .map(|applied| applied.command_id.clone())
            .collect()
    }

    /// The finished command `command_id`, if remembered.
    pub fn applied(&self, command_id: &str) -> Option<AppliedCommand> {
        self.memory()
            .applied
            .iter()
            .find(|applied| applied.command_id == command_id)
            .cloned()
    }

    /// Remembers a finished command and returns once the file holds it.
    ///
    /// On a write error the command is still remembered in memory (this process will not
    /// apply it again) and the next successful write persists it.
    pub async fn record(&self, applied: AppliedCommand) -> Result<(), StateError> {
        let generation = {
            let mut memory = self.memory();
            memory
                .applied
                .retain(|known| known.command_id != applied.command_id);
            memory.applied.push_front(applied);
            memory.applied.truncate(MAX_APPLIED);
            memory.generation += 1;
            memory.generation
        };
        let mut written = self.written.lock().await;
        if *written >= generation {
            // A write that started after our change already put it in the file.
            return Ok(());
        }
        let (snapshot, bytes) = {
            let memory = self.memory();
            let file = StateFile {
                version: FORMAT_VERSION,
                applied: memory.applied.iter().cloned().collect(),
            };
            let bytes = serde_json::to_vec_pretty(&file).map_err(|source| StateError::Write {
                path: self.path.clone(),
                source: std::io::Error::other(source),
            })?;
            (memory.generation, bytes)
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|join| StateError::Write {
                path: self.path.clone(),
                source: std::io::Error::other(join.to_string()),
            })??;
        *written = snapshot;
        Ok(())
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        // The lock guards plain data updated in one step; a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is still usable.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Replaces `path` with `bytes` so that a crash at any point leaves the old or the new
/// content: write a temporary file beside it, flush it to disk, rename it over, then flush
/// the directory so the rename itself survives a power loss.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let error = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)?;
    if let Some(dir) = path.parent() {
        // Best effort: some platforms and file systems cannot fsync a directory.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, sequence: u32) -> pb::StepReport {
        pb::StepReport {
            command_id: id.into(),
            deployment_id: "d1".into(),
            step: crate::session::COMMAND_STEP.into(),
            status: pb::StepStatus::Failed as i32,
            failure_reason: pb::FailureReason::Timeout as i32,
            message: "timed out".into(),
            time: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 7,
            }),
            sequence,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::open(dir.path()).unwrap();
        assert!(state.applied_ids().is_empty());
        for (index, id) in ["a", "b", "c"].into_iter().enumerate() {
            state
                .record(AppliedCommand::from_report(&report(id, index as u32 + 1)))
                .await
                .unwrap();
        }
        let reopened = AgentState::open(dir.path()).unwrap();
        assert_eq!(reopened.applied_ids(), ["c", "b", "a"]);
        assert_eq!(
            reopened.applied("b").unwrap().final_report(),
            report("b", 2)
        );
        assert!(reopened.applied("z").is_none());
    }

    #[tokio::test]
    async fn keeps_at_most_the_hello_limit() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::open(dir.path()).unwrap();
        // Recorded all at once, as commands finishing together are: the writes coalesce.
        let records = (0..MAX_APPLIED + 5)
            .map(|index| state.record(AppliedCommand::from_report(&report(&index.to_string(), 1))));
        for result in futures::future::join_all(records).await {
            result.unwrap();
        }
        let ids = AgentState::open(dir.path()).unwrap().applied_ids();
        assert_eq!(ids.len(), MAX_APPLIED);
        assert_eq!(ids[0], (MAX_APPLIED + 4).to_string());
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let error = AgentState::open(dir.path()).unwrap_err();
        assert!(matches!(error, StateError::Damaged { .. }), "{error}");
    }
}
