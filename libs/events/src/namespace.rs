//! Namespaces isolate independent users of one NATS server.
//!
//! JetStream stream names and subjects are global to a NATS account. Parallel tests (and
//! several throwaway sandboxes on one developer server) would otherwise fight over the same
//! `EVENTS` stream and see each other's messages. A [`Namespace`] is a prefix applied to
//! *both*:
//!
//! | logical | namespace `""` (production) | namespace `t1234` |
//! | --- | --- | --- |
//! | stream `EVENTS` | `EVENTS` | `T1234_EVENTS` |
//! | subject `slipway.events.x` | `slipway.events.x` | `t1234.slipway.events.x` |
//!
//! Everything above the bus speaks *logical* names only: publishers pass
//! `slipway.events.x`, consumers filter on logical subjects and deliveries report logical
//! subjects. The bus adds the prefix on the way out and strips it on the way in, so code
//! cannot tell which namespace it runs in. Durable consumer names need no prefix: they live
//! inside the (already namespaced) stream.

use crate::error::EventsError;

/// Longest accepted namespace: leaves room in stream names (NATS caps them at 255 bytes,
/// and file storage uses them as directory names).
const MAX_LEN: usize = 64;

/// A prefix for stream names and subjects. Empty in production.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// The production namespace: no prefix at all.
    pub fn none() -> Self {
        Self(String::new())
    }

    /// A namespace from a token of ASCII lowercase letters, digits, `-` and `_`, starting
    /// with a letter. Lowercase only, so that its uppercase stream form maps back to exactly
    /// one namespace. An empty string is the production namespace.
    pub fn new(token: impl Into<String>) -> Result<Self, EventsError> {
        let token = token.into();
        if token.is_empty() {
            return Ok(Self(token));
        }
        let reject = |reason| EventsError::InvalidNamespace {
            namespace: token.clone(),
            reason,
        };
        if token.len() > MAX_LEN {
            return Err(reject("longer than 64 characters"));
        }
        if !token.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(reject("must start with a lowercase ascii letter"));
        }
        if !token
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(reject(
                "only lowercase ascii letters, digits, '-' and '_' are allowed",
            ));
        }
        Ok(Self(token))
    }

    /// A fresh namespace that no one else uses: `prefix` followed by a UUIDv7 in hex.
    /// Meant for tests, which run in parallel against one server.
    pub fn unique(prefix: &str) -> Result<Self, EventsError> {
        Self::new(format!("{prefix}{}", uuid::Uuid::now_v7().simple()))
    }

    /// The token itself (empty in production).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the production namespace.
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    /// The physical stream name for a logical one: `EVENTS` → `T1234_EVENTS`.
    pub fn stream_name(&self, logical: &str) -> String {
        if self.0.is_empty() {
            logical.to_owned()
        } else {
            format!("{}_{logical}", self.0.to_ascii_uppercase())
        }
    }

    /// The physical subject (or filter) for a logical one:
    /// `slipway.events.x` → `t1234.slipway.events.x`.
    pub fn subject(&self, logical: &str) -> String {
        if self.0.is_empty() {
            logical.to_owned()
        } else {
            format!("{}.{logical}", self.0)
        }
    }

    /// The logical subject for a physical one, or `None` when the subject lies outside this
    /// namespace (which a correctly namespaced stream never delivers).
    pub fn strip<'a>(&self, physical: &'a str) -> Option<&'a str> {
        if self.0.is_empty() {
            return Some(physical);
        }
        physical
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_namespace_is_identity() {
        let ns = Namespace::none();
        assert_eq!(ns.stream_name("EVENTS"), "EVENTS");
        assert_eq!(ns.subject("slipway.events.x"), "slipway.events.x");
        assert_eq!(ns.strip("slipway.events.x"), Some("slipway.events.x"));
        assert_eq!(Namespace::new("").unwrap(), ns);
    }

    #[test]
    fn prefixes_streams_and_subjects() {
        let ns = Namespace::new("t1234").unwrap();
        assert_eq!(ns.stream_name("EVENTS"), "T1234_EVENTS");
        assert_eq!(ns.subject("slipway.events.x"), "t1234.slipway.events.x");
        assert_eq!(ns.strip("t1234.slipway.events.x"), Some("slipway.events.x"));
        assert_eq!(ns.strip("t12345.slipway.events.x"), None);
        assert_eq!(ns.strip("slipway.events.x"), None);
    }

    #[test]
    fn rejects_bad_tokens() {
        for bad in ["T1", "1t", "a.b", "a b", "a*", "a>", "é", &"a".repeat(65)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Namespace::new("a-b_c9").is_ok());
    }

    #[test]
    fn unique_namespaces_differ() {
        let a = Namespace::unique("t").unwrap();
        let b = Namespace::unique("t").unwrap();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with('t'));
    }
}
