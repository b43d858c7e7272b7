//! Request validation: every check that needs no database, collected into one
//! `INVALID_ARGUMENT` with a field violation per bad field, before anything is read or
//! written.

use chrono::{DateTime, Utc};
use slipway_proto::{ApiError, FieldViolation};

/// Longest free-text description.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest idempotency key.
pub const MAX_REQUEST_ID: usize = 64;
/// Longest display name.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page, whatever is asked.
pub const MAX_PAGE_SIZE: u64 = 500;

/// Collects violations; [`Violations::finish`] turns them into the one error.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Whether `field` already has a violation (later checks on it would only repeat it).
    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|violation| violation.field == field)
    }

    /// `Ok` when nothing was wrong.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }

    /// A DNS label: lowercase letters, digits and '-', 1–63, not starting or ending with
    /// '-'. Names end up in URLs, Kubernetes labels and CLI arguments.
    pub fn dns_label(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        } else if value.len() > 63 {
            self.add(field, "must be at most 63 characters");
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || value.starts_with('-')
            || value.ends_with('-')
        {
            self.add(
                field,
                "must be a dns label: lowercase letters, digits and '-', not at either end",
            );
        }
    }

    /// An id the client must send.
    pub fn required(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        } else if value.len() > 128 {
            self.add(field, "must be at most 128 characters");
        }
    }

    /// Free text up to `max` characters.
    pub fn max_chars(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        }
    }

    pub fn request_id(&mut self, value: &str) {
        self.max_chars("request_id", value, MAX_REQUEST_ID);
    }

    /// A time that must lie ahead.
    pub fn future(&mut self, field: &str, time: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        if time.is_some_and(|time| time <= now) {
            self.add(field, "must be in the future");
        }
    }

    /// An email address: one '@' with something on both sides, a dot in the domain, no
    /// spaces. Deliberately loose: the invitee's mailbox is the real check.
    pub fn email(&mut self, field: &str, value: &str) {
        let valid = value.len() <= 254
            && !value.chars().any(char::is_whitespace)
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if value.is_empty() {
            self.add(field, "is required");
        } else if !valid {
            self.add(field, "must be an email address");
        }
    }

    /// A page size: 0 means the default, larger than the cap means the cap.
    pub fn page_size(&mut self, value: i32) -> u64 {
        match u64::try_from(value) {
            Err(_) => {
                self.add("page_size", "must not be negative");
                DEFAULT_PAGE_SIZE
            }
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_emails() {
        let mut v = Violations::new();
        v.dns_label("a", "ok-name-1");
        v.email("e", "ada@example.com");
        assert!(v.finish().is_ok());
        for bad in ["", "-x", "x-", "Upper", "with space", &"x".repeat(64)] {
            let mut v = Violations::new();
            v.dns_label("name", bad);
            assert!(v.has("name"), "{bad:?}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
        ] {
            let mut v = Violations::new();
            v.email("email", bad);
            assert!(v.has("email"), "{bad:?}");
        }
    }

    #[test]
    fn page_sizes() {
        let mut v = Violations::new();
        assert_eq!(v.page_size(0), 50);
        assert_eq!(v.page_size(7), 7);
        assert_eq!(v.page_size(10_000), 500);
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        v.page_size(-1);
        assert!(v.has("page_size"));
    }
}
