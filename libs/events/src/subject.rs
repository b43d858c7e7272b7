//! Subjects: validation, wildcard matching, and the subject names of DESIGN.md.
//!
//! The in-memory bus must route exactly as NATS does, and both buses must reject the same
//! malformed subjects, so the rules live here once. NATS rules: tokens are separated by
//! `.`, may not be empty, `*` matches exactly one token and `>` matches one or more trailing
//! tokens.

use crate::error::EventsError;

/// Checks a subject to publish to (`wildcards == false`) or a filter (`wildcards == true`).
pub(crate) fn validate(subject: &str, wildcards: bool) -> Result<(), EventsError> {
    let reject = |reason| EventsError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    };
    if subject.is_empty() {
        return Err(reject("empty"));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(reject("contains whitespace or control characters"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(reject("empty token")),
            "*" | ">" if !wildcards => return Err(reject("wildcards are not allowed here")),
            ">" if i != last => return Err(reject("'>' must be the last token")),
            "*" | ">" => {}
            t if t.contains(['*', '>']) => {
                return Err(reject("'*' and '>' must stand alone in a token"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that `part` can be one token of a subject built by the helpers below.
fn token(part: &str) -> Result<&str, EventsError> {
    if part.is_empty()
        || part.contains(['.', '*', '>'])
        || part.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(EventsError::InvalidSubject {
            subject: part.to_owned(),
            reason: "a subject token must be non-empty, without '.', '*', '>' or whitespace",
        });
    }
    Ok(part)
}

/// Whether the (valid) filter matches the (valid, literal) subject.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject matched by `filter` is also matched by `pattern`.
pub(crate) fn is_subset(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('.');
    let mut p = pattern.split('.');
    loop {
        match (f.next(), p.next()) {
            (Some(_), Some(">")) => return true,
            (Some(">"), Some(_)) => return false,
            (Some(_), Some("*")) => {}
            (Some(a), Some(b)) if a == b && a != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject is matched by both filters.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Domain events: `slipway.events.<domain>.<type>`, on stream `EVENTS`.
pub fn event(domain: &str, event_type: &str) -> Result<String, EventsError> {
    Ok(format!(
        "slipway.events.{}.{}",
        token(domain)?,
        token(event_type)?
    ))
}

/// All domain events of one domain: `slipway.events.<domain>.>` (a filter).
pub fn events_of(domain: &str) -> Result<String, EventsError> {
    Ok(format!("slipway.events.{}.>", token(domain)?))
}

/// Build jobs (a work queue on stream `BUILDS`).
pub const BUILD_JOBS: &str = "slipway.build.jobs";

/// Build results, on stream `BUILDS`.
pub const BUILD_RESULTS: &str = "slipway.build.results";

/// Commands to the agent of one cluster: `slipway.agent.<cluster>.commands`.
pub fn agent_commands(cluster: &str) -> Result<String, EventsError> {
    Ok(format!("slipway.agent.{}.commands", token(cluster)?))
}

/// Reports from the agent of one cluster: `slipway.agent.<cluster>.reports`.
pub fn agent_reports(cluster: &str) -> Result<String, EventsError> {
    Ok(format!("slipway.agent.{}.reports", token(cluster)?))
}

/// Reports from every agent: `slipway.agent.*.reports` (a filter).
pub const ALL_AGENT_REPORTS: &str = "slipway.agent.*.reports";

/// The root of ephemeral notices (`EventBus::notify`): no stream captures it, so nothing
/// published under it is stored.
pub const NOTICES: &str = "slipway.notices";

/// Session-started notices of one cluster's agent gateway:
/// `slipway.notices.agent.<cluster>.sessions` (ephemeral, outside the `AGENT` stream).
pub fn agent_sessions(cluster: &str) -> Result<String, EventsError> {
    Ok(format!("{NOTICES}.agent.{}.sessions", token(cluster)?))
}

/// Logs of one service: `slipway.logs.<org>.<env>.<service>`.
pub fn logs(org: &str, env: &str, service: &str) -> Result<String, EventsError> {
    Ok(format!(
        "slipway.logs.{}.{}.{}",
        token(org)?,
        token(env)?,
        token(service)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        for ok in ["a", "a.b.c", "slipway.events.x"] {
            assert!(validate(ok, false).is_ok(), "{ok}");
        }
        for ok in ["a.*", "a.>", "*.b", ">"] {
            assert!(validate(ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a.b*"] {
            assert!(validate(bad, false).is_err(), "{bad:?}");
        }
        for bad in ["a.>.b", "a.b>", "a\tb"] {
            assert!(validate(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn subsets() {
        assert!(is_subset("slipway.build.jobs", "slipway.build.>"));
        assert!(is_subset("slipway.build.>", "slipway.build.>"));
        assert!(is_subset("slipway.agent.*.reports", "slipway.agent.>"));
        assert!(!is_subset("slipway.build", "slipway.build.>"));
        assert!(!is_subset("slipway.>", "slipway.build.>"));
        assert!(!is_subset("a.*", "a.b"));
        assert!(is_subset("a.b", "a.*"));
    }

    #[test]
    fn overlapping() {
        assert!(overlaps("a.b", "a.b"));
        assert!(overlaps("a.*", "a.b"));
        assert!(overlaps("a.>", "a.b.c"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(!overlaps("slipway.build.jobs", "slipway.build.results"));
    }

    #[test]
    fn builders() {
        assert_eq!(
            event("catalog", "created").unwrap(),
            "slipway.events.catalog.created"
        );
        assert_eq!(agent_commands("c1").unwrap(), "slipway.agent.c1.commands");
        assert_eq!(logs("o", "e", "s").unwrap(), "slipway.logs.o.e.s");
        assert!(event("a.b", "c").is_err());
        assert!(logs("o", "*", "s").is_err());
        assert!(agent_reports("").is_err());
        assert_eq!(
            agent_sessions("c1").unwrap(),
            "slipway.notices.agent.c1.sessions"
        );
        assert!(agent_sessions("a.b").is_err());
    }
}
