//! The seam between the agent's session (which speaks the Connect protocol) and the place
//! workloads run: Kubernetes, or local processes for `slipway dev` and end-to-end tests.
//!
//! A runtime executes one [`Command`] at a time per call (the session may run several
//! commands concurrently, for different environments) and tells the session what happens
//! through [`RuntimeEvents`]: per-workload step progress, workload status changes, and
//! workload output. The session owns everything protocol-shaped — acks, sequence numbers,
//! the final command-level report, idempotency by command id — so a runtime only has to
//! make the cluster match the command and say how it went.

pub mod kubernetes;
pub mod process;

use std::future::Future;
use std::pin::Pin;

use slipway_proto::agent::v1 as pb;
use tokio::sync::mpsc;

/// What a runtime reports while it works. Sent on an unbounded channel: a runtime never
/// waits on a slow connection to the orchestrator (the session drops and counts log lines
/// when it falls behind; steps and statuses are small and few).
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    /// Progress of one workload of the command being executed. The session fills in
    /// `command_id`, `deployment_id` and `sequence`; the runtime sets `service_id`, `step`,
    /// `status`, `message`, `runtime_state`, `failure_reason` and `time`.
    Step(pb::StepReport),
    /// A workload's current state changed (also outside any command: a process crashed).
    Status(pb::WorkloadStatus),
    /// Output of a workload (or of a command's job run).
    Log(pb::LogChunk),
}

/// The sending half a runtime reports through.
pub type RuntimeEvents = mpsc::UnboundedSender<RuntimeEvent>;

/// Why a command failed as a whole: the reason and a message a user can act on (never a
/// secret value). Sent as the command-level final `StepReport`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandFailure {
    pub reason: pb::FailureReason,
    pub message: String,
}

impl CommandFailure {
    pub fn new(reason: pb::FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A command this runtime cannot apply at all (answered `COMMAND_ACK_RESULT_REJECTED`,
/// nothing changed): an image on the process runtime, a Helm release without Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// A boxed future, so runtimes can be used as `Arc<dyn Runtime>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where workloads run.
pub trait Runtime: Send + Sync + 'static {
    /// Which runtime this is, for `Hello.runtime`.
    fn kind(&self) -> pb::RuntimeKind;

    /// The runtime's version, for `Hello.runtime_version` (Kubernetes server version, or
    /// OS and kernel for processes).
    fn version(&self) -> BoxFuture<'_, String>;

    /// Whether this runtime can apply `command` at all; checked before it is accepted.
    fn check(&self, command: &pb::Command) -> Result<(), Unsupported>;

    /// Applies `command`: every workload, in parallel, until each is done (ready, stopped,
    /// deleted, run) or the command's timeout passes. Applying the same command again must
    /// be harmless (the session prevents it, but a crash between apply and record can't).
    fn execute<'a>(
        &'a self,
        command: &'a pb::Command,
        events: RuntimeEvents,
    ) -> BoxFuture<'a, Result<(), CommandFailure>>;

    /// The state of every workload this runtime manages, for the full resync sent after
    /// each `Welcome`.
    fn workloads(&self) -> BoxFuture<'_, Result<Vec<pb::WorkloadStatus>, CommandFailure>>;
}
