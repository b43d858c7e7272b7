//! The four streams and their settings.
//!
//! The stream layout is part of the platform's contract (DESIGN.md, "Events on NATS
//! JetStream"), so it is fixed in code: [`StreamKind`]. What an operator may tune — how long
//! and how much each stream keeps — is data: [`StreamSettings`] inside [`BusSettings`].

use std::time::Duration;

use crate::{error::EventsError, namespace::Namespace};

/// One of the platform's four streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `EVENTS`: domain events `slipway.events.<domain>.<type>`.
    Events,
    /// `BUILDS`: build jobs and results, a work queue: a message is gone once acknowledged.
    Builds,
    /// `AGENT`: commands to and reports from the agent of each cluster, a work queue:
    /// commands carry decrypted secrets and must not outlive their acknowledgement.
    Agent,
    /// `LOGS`: build, deployment and live logs; retention by age and size.
    Logs,
}

/// How a stream decides that a message may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Kept until a limit (age, bytes, count) pushes it out; consumers only move cursors.
    Limits,
    /// Removed as soon as the (single) consumer whose filter covers it acknowledges it.
    /// Consumers on such a stream must have non-overlapping filters and start from the
    /// beginning ([`DeliverFrom::All`](crate::DeliverFrom::All)); a message no consumer
    /// covers stays until a limit removes it.
    WorkQueue,
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Retention::Limits => "limits",
            Retention::WorkQueue => "work-queue",
        })
    }
}

/// Where JetStream keeps a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// On disk: survives server restarts. The production choice.
    #[default]
    File,
    /// In server memory: fast and gone on restart. For tests and throwaway sandboxes.
    Memory,
}

/// What a full stream does with a new message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Discard {
    /// Drop the oldest messages to make room.
    #[default]
    Old,
    /// Refuse the new message: the publisher gets an error. For queues whose messages
    /// must not silently vanish (build jobs).
    New,
}

impl StreamKind {
    /// Every stream, in the order they are created.
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Events,
        StreamKind::Builds,
        StreamKind::Agent,
        StreamKind::Logs,
    ];

    /// The logical stream name (before namespacing).
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Events => "EVENTS",
            StreamKind::Builds => "BUILDS",
            StreamKind::Agent => "AGENT",
            StreamKind::Logs => "LOGS",
        }
    }

    /// The logical subject pattern the stream captures.
    pub fn subjects(self) -> &'static str {
        match self {
            StreamKind::Events => "slipway.events.>",
            StreamKind::Builds => "slipway.build.>",
            StreamKind::Agent => "slipway.agent.>",
            StreamKind::Logs => "slipway.logs.>",
        }
    }

    /// The retention the platform relies on for this stream.
    ///
    /// `BUILDS` and `AGENT` are work queues. On `AGENT` the consumers are one durable per
    /// cluster on `slipway.agent.<cluster>.commands` (shared by the orchestrator replicas)
    /// and one durable on `slipway.agent.*.reports` (shared too), which do not overlap; a
    /// command is gone from the stream once the agent's answer made its session
    /// acknowledge it. Nothing else may be published under `slipway.agent.>` without a
    /// consumer of its own, or it would stay until `max_age`: ephemeral notices go through
    /// [`EventBus::notify`](crate::EventBus::notify) on `slipway.notices.…` instead.
    pub fn retention(self) -> Retention {
        match self {
            StreamKind::Builds | StreamKind::Agent => Retention::WorkQueue,
            StreamKind::Events | StreamKind::Logs => Retention::Limits,
        }
    }

    /// The stream that captures a logical subject, if any.
    pub fn for_subject(subject: &str) -> Option<StreamKind> {
        StreamKind::ALL
            .into_iter()
            .find(|kind| crate::subject::matches(kind.subjects(), subject))
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits of one stream. `None` means unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Messages older than this are removed.
    pub max_age: Option<Duration>,
    /// The stream never holds more bytes than this.
    pub max_bytes: Option<u64>,
    /// The stream never holds more messages than this.
    pub max_messages: Option<u64>,
    /// A second publish with the same message id within this window is dropped (and
    /// reported as a duplicate). Must not exceed `max_age`.
    pub duplicate_window: Duration,
    /// Where the server keeps the stream.
    pub storage: Storage,
    /// What happens when a limit is reached.
    pub discard: Discard,
    /// Copies in a clustered JetStream (1..=5).
    pub replicas: usize,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MIB: u64 = 1024 * 1024;

impl StreamSettings {
    /// Defaults sized for a small installation: a week of history, bounded in bytes.
    fn defaults(max_age: Duration, max_bytes: u64, discard: Discard) -> Self {
        Self {
            max_age: Some(max_age),
            max_bytes: Some(max_bytes),
            max_messages: None,
            duplicate_window: Duration::from_secs(120),
            storage: Storage::File,
            discard,
            replicas: 1,
        }
    }

    fn validate(&self, stream: StreamKind) -> Result<(), EventsError> {
        let bad = |what: &str| Err(EventsError::InvalidSettings(format!("{stream}: {what}")));
        if self.duplicate_window.is_zero() {
            return bad("duplicate_window must be positive");
        }
        if let Some(max_age) = self.max_age {
            if max_age.is_zero() {
                return bad("max_age must be positive (use None for unlimited)");
            }
            if self.duplicate_window > max_age {
                return bad("duplicate_window may not exceed max_age");
            }
        }
        if self.max_bytes == Some(0) || self.max_messages == Some(0) {
            return bad("max_bytes and max_messages must be positive (use None for unlimited)");
        }
        if self.max_bytes.is_some_and(|b| i64::try_from(b).is_err())
            || self.max_messages.is_some_and(|m| i64::try_from(m).is_err())
        {
            return bad("max_bytes and max_messages must fit in an i64");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be between 1 and 5");
        }
        Ok(())
    }
}

/// Everything the bus needs to know besides where NATS is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusSettings {
    /// Prefix for stream names and subjects; empty in production.
    pub namespace: Namespace,
    /// `EVENTS`: 7 days, 1 GiB.
    pub events: StreamSettings,
    /// `BUILDS`: 7 days, 256 MiB, refuses new jobs when full.
    pub builds: StreamSettings,
    /// `AGENT`: 7 days, 256 MiB, refuses new messages when full. A work queue, so these
    /// limits only bound what no one has acknowledged yet (commands for a cluster whose
    /// agent stays away, reports while no orchestrator runs).
    pub agent: StreamSettings,
    /// `LOGS`: 3 days, 2 GiB.
    pub logs: StreamSettings,
    /// Largest payload the in-memory bus accepts (NATS enforces its server's own
    /// `max_payload`, 1 MiB by default, which this mirrors).
    pub max_payload: usize,
    /// How long a publish or a management request may take before it fails.
    pub request_timeout: Duration,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            namespace: Namespace::none(),
            events: StreamSettings::defaults(7 * DAY, 1024 * MIB, Discard::Old),
            builds: StreamSettings::defaults(7 * DAY, 256 * MIB, Discard::New),
            agent: StreamSettings::defaults(7 * DAY, 256 * MIB, Discard::New),
            logs: StreamSettings::defaults(3 * DAY, 2048 * MIB, Discard::Old),
            max_payload: MIB as usize,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl BusSettings {
    /// The same settings in another namespace.
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// The settings of one stream.
    pub fn stream(&self, kind: StreamKind) -> &StreamSettings {
        match kind {
            StreamKind::Events => &self.events,
            StreamKind::Builds => &self.builds,
            StreamKind::Agent => &self.agent,
            StreamKind::Logs => &self.logs,
        }
    }

    /// Mutable settings of one stream, for tests and tools that tune all streams alike.
    pub fn stream_mut(&mut self, kind: StreamKind) -> &mut StreamSettings {
        match kind {
            StreamKind::Events => &mut self.events,
            StreamKind::Builds => &mut self.builds,
            StreamKind::Agent => &mut self.agent,
            StreamKind::Logs => &mut self.logs,
        }
    }

    /// Rejects what the server would reject, before anything is created.
    pub fn validate(&self) -> Result<(), EventsError> {
        for kind in StreamKind::ALL {
            self.stream(kind).validate(kind)?;
        }
        if self.max_payload == 0 {
            return Err(EventsError::InvalidSettings(
                "max_payload must be positive".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(EventsError::InvalidSettings(
                "request_timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BusSettings::default().validate().unwrap();
    }

    #[test]
    fn rejects_window_longer_than_age() {
        let mut s = BusSettings::default();
        s.logs.max_age = Some(Duration::from_secs(10));
        assert!(s.validate().is_err());
    }

    #[test]
    fn queues_are_work_queues() {
        assert_eq!(StreamKind::Builds.retention(), Retention::WorkQueue);
        assert_eq!(StreamKind::Agent.retention(), Retention::WorkQueue);
        assert_eq!(StreamKind::Events.retention(), Retention::Limits);
        assert_eq!(StreamKind::Logs.retention(), Retention::Limits);
    }

    #[test]
    fn subjects_map_to_streams() {
        assert_eq!(
            StreamKind::for_subject("slipway.events.catalog.created"),
            Some(StreamKind::Events)
        );
        assert_eq!(
            StreamKind::for_subject("slipway.build.jobs"),
            Some(StreamKind::Builds)
        );
        assert_eq!(
            StreamKind::for_subject("slipway.agent.c1.commands"),
            Some(StreamKind::Agent)
        );
        assert_eq!(
            StreamKind::for_subject("slipway.logs.o.e.s"),
            Some(StreamKind::Logs)
        );
        assert_eq!(StreamKind::for_subject("slipway.other"), None);
        assert_eq!(
            StreamKind::for_subject("slipway.notices.agent.c1.sessions"),
            None
        );
        assert_eq!(StreamKind::for_subject("slipway.events"), None);
    }
}
