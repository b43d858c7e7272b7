//! Database URL handling: which backend a URL names, and a printable form of it.
//!
//! URLs arrive from configuration and carry credentials. Everything this crate logs or
//! puts into an error goes through [`redact_url`] or [`redact_message`] first, so a
//! password never reaches a log line, an error chain or a gRPC status.

use std::path::PathBuf;

use sea_orm::DbBackend;

use crate::Error;

/// The backend a URL selects, from its scheme.
///
/// `postgres://` and `postgresql://` select PostgreSQL; `sqlite:` selects SQLite (the
/// embedded mode). MySQL is deliberately not accepted: Slipway does not test against it,
/// so it is not offered.
pub fn backend_for_url(url: &str) -> Result<DbBackend, Error> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Ok(DbBackend::Postgres),
        Some("sqlite") => Ok(DbBackend::Sqlite),
        _ => Err(Error::UnsupportedUrl {
            url: redact_url(url),
        }),
    }
}

/// The URL with the password (if any) replaced by `***`, safe to log.
///
/// Only the `user:password@` part is touched; host, port, database and query stay, since
/// they are what an operator needs to see when a connection fails. SQLite URLs are paths
/// and carry no credentials, so they are returned as they are.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    if url[..scheme_end].eq_ignore_ascii_case("sqlite") {
        return url.to_owned();
    }
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    // The user info ends at the last '@' of the authority. A password that was not
    // percent-encoded may itself contain '/', '?' or '#', so search for '@' up to the end
    // of the string rather than up to the first path separator: over-redacting a strange
    // URL is better than printing part of a password.
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _password)) => {
            format!("{}{user}:***{}", &url[..rest_start], &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// The password in a URL, as written and percent-decoded, if there is one.
fn password_forms(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else {
        return Vec::new();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return Vec::new();
    };
    let Some((_, password)) = rest[..at].split_once(':') else {
        return Vec::new();
    };
    if password.is_empty() {
        return Vec::new();
    }
    let mut forms = vec![password.to_owned()];
    let decoded = percent_decode(password);
    if decoded != password {
        forms.push(decoded);
    }
    forms
}

/// A driver's error text with the URL and its password removed.
///
/// Drivers sometimes echo the connection string back (sea-orm does when it cannot parse
/// it), so the text is scrubbed of the whole URL and then of the bare password.
pub(crate) fn redact_message(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    for password in password_forms(url) {
        out = out.replace(&password, "***");
    }
    out
}

/// Decode `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a SQLite URL names an in-memory database, which lives only as long as the pool
/// keeps a connection open to it.
pub(crate) fn sqlite_is_memory(url: &str) -> bool {
    let body = sqlite_body(url);
    let (path, query) = body.split_once('?').unwrap_or((body, ""));
    path == ":memory:" || path.is_empty() || query.split('&').any(|kv| kv == "mode=memory")
}

/// The file a SQLite URL names (`sqlite://data/x.db` → `data/x.db`,
/// `sqlite:///var/x.db` → `/var/x.db`), or `None` for an in-memory database.
pub(crate) fn sqlite_file(url: &str) -> Option<PathBuf> {
    if sqlite_is_memory(url) {
        return None;
    }
    let body = sqlite_body(url);
    let path = body.split_once('?').map_or(body, |(path, _)| path);
    Some(PathBuf::from(percent_decode(path)))
}

/// What follows `sqlite:` or `sqlite://`.
fn sqlite_body(url: &str) -> &str {
    let after_scheme = url.split_once(':').map_or("", |(_, rest)| rest);
    after_scheme.strip_prefix("//").unwrap_or(after_scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_scheme() {
        assert_eq!(
            backend_for_url("postgres://u:p@h/db").ok(),
            Some(DbBackend::Postgres)
        );
        assert_eq!(
            backend_for_url("postgresql://h/db").ok(),
            Some(DbBackend::Postgres)
        );
        assert_eq!(
            backend_for_url("sqlite://x.db").ok(),
            Some(DbBackend::Sqlite)
        );
        assert_eq!(
            backend_for_url("sqlite::memory:").ok(),
            Some(DbBackend::Sqlite)
        );
        let err = backend_for_url("mysql://root:hunter2@h/db").err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("mysql://root:***@h/db"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5432/slipway?sslmode=require"),
            "postgres://app:***@db.internal:5432/slipway?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/slipway"),
            "postgres://app@db/slipway"
        );
        assert_eq!(redact_url("postgres://db/slipway"), "postgres://db/slipway");
        // An unencoded '@' or '/' inside the password must not leave a fragment behind.
        let odd = redact_url("postgres://app:p@ss/w0rd@db/slipway");
        assert_eq!(odd, "postgres://app:***@db/slipway");
        assert_eq!(
            redact_url("sqlite:///tmp/a:b@c.db"),
            "sqlite:///tmp/a:b@c.db"
        );
    }

    #[test]
    fn scrubs_messages() {
        let url = "postgres://app:p%40ss@db/slipway";
        let msg = format!("cannot parse '{url}', also saw p@ss and p%40ss");
        let out = redact_message(&msg, url);
        assert!(!out.contains("p@ss"), "{out}");
        assert!(!out.contains("p%40ss"), "{out}");
        assert!(out.contains("postgres://app:***@db/slipway"), "{out}");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_file("sqlite://data/x.db"), Some("data/x.db".into()));
        assert_eq!(sqlite_file("sqlite:///var/x.db"), Some("/var/x.db".into()));
        assert_eq!(
            sqlite_file("sqlite:///var/x.db?mode=rwc"),
            Some("/var/x.db".into())
        );
        assert_eq!(
            sqlite_file("sqlite:/var/x%20y.db"),
            Some("/var/x y.db".into())
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://file.db?mode=memory"), None);
        assert!(sqlite_is_memory("sqlite::memory:"));
        assert!(!sqlite_is_memory("sqlite://x.db"));
    }
}
