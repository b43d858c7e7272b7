//! One live stream per cluster: the newest wins.
//!
//! Within a replica, [`Registry`] maps each cluster to its current session; registering a
//! newer session ends the older one (`ABORTED`). Across replicas, every session announces
//! itself with a *session-started notice* and obeys the notices of others:
//!
//! - subject: `slipway.notices.agent.<cluster_id>.sessions` ([`sessions_subject`]), sent
//!   with `EventBus::notify` as a plain core-NATS message *outside* the `AGENT` stream.
//!   `AGENT` is a work queue (commands hold secrets and go once acknowledged): a notice
//!   stored there would have no consumer to take it and would stay until `max_age`, and
//!   only sessions alive right now care about it anyway (the subscription that receives
//!   it was always core NATS, so delivery is at most once either way);
//! - payload: the `slipway.agent.v1.Welcome` the new session sent its agent (session id,
//!   heartbeat interval, server time); `Nats-Msg-Id` is the session id;
//! - rule: a session that sees a notice for its cluster with a *greater* session id ends
//!   with `ABORTED`. Session ids are UUIDv7, so greater means started later (to the
//!   millisecond, then by random bits): two streams opened at once on two replicas still
//!   agree on a single winner instead of aborting each other.
//!
//! Sessions follow notices with a live subscription opened before their own notice is
//! published, so of two sessions racing, each sees the other's notice.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use slipway_events::EventsError;
use tokio_util::sync::CancellationToken;

/// The subject of session-started notices for `cluster_id` (see the module docs).
pub fn sessions_subject(cluster_id: &str) -> Result<String, EventsError> {
    slipway_events::subject::agent_sessions(cluster_id)
}

/// The current session of each cluster on this replica.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    session_id: String,
    /// Cancelled when a newer session of the same cluster replaces this one.
    replaced: CancellationToken,
}

impl Registry {
    /// Makes `session_id` the cluster's current session and returns the token cancelled
    /// when a newer one replaces it. An older current session is told to end. (Should the
    /// current one be newer, which ids from `Uuid::now_v7` make impossible within one
    /// process, the token returned is already cancelled.)
    pub fn register(&self, cluster_id: &str, session_id: &str) -> CancellationToken {
        let replaced = CancellationToken::new();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(cluster_id) {
            Some(current) if current.session_id.as_str() > session_id => {
                replaced.cancel();
                return replaced;
            }
            Some(current) => current.replaced.cancel(),
            None => {}
        }
        sessions.insert(
            cluster_id.to_owned(),
            Entry {
                session_id: session_id.to_owned(),
                replaced: replaced.clone(),
            },
        );
        replaced
    }

    /// Forgets `session_id` if it is still the cluster's current session.
    pub fn deregister(&self, cluster_id: &str, session_id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions
            .get(cluster_id)
            .is_some_and(|entry| entry.session_id == session_id)
        {
            sessions.remove(cluster_id);
        }
    }

    /// The clusters with a current session, sorted.
    pub fn clusters(&self) -> Vec<String> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clusters: Vec<String> = sessions.keys().cloned().collect();
        clusters.sort();
        clusters
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_newest_session_wins() {
        let registry = Registry::default();
        let first = registry.register("c", "0001");
        assert!(!first.is_cancelled());
        let second = registry.register("c", "0002");
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
        // The old one leaving does not remove the new one.
        registry.deregister("c", "0001");
        assert_eq!(registry.clusters(), vec!["c".to_owned()]);
        // An older one arriving late is refused at once.
        assert!(registry.register("c", "0000").is_cancelled());
        assert!(!second.is_cancelled());
        registry.deregister("c", "0002");
        assert!(registry.clusters().is_empty());
    }

    #[test]
    fn notices_have_their_own_subject_outside_every_stream() {
        let subject = sessions_subject("c1").unwrap();
        assert_eq!(subject, "slipway.notices.agent.c1.sessions");
        assert_eq!(slipway_events::StreamKind::for_subject(&subject), None);
        assert!(sessions_subject("a.b").is_err());
    }
}
