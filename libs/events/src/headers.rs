//! Message headers, independent of the NATS client.
//!
//! The bus has its own header type so that the in-memory bus needs no NATS types and both
//! buses accept and reject the same headers. Names are case-sensitive (as NATS treats them)
//! and checked on insertion, because the NATS client *panics* on a malformed header name.

use std::collections::BTreeMap;

use crate::error::EventsError;

/// The header carrying the deduplication id (JetStream's own name for it).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Headers of a message: name → values, in insertion order per name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    map: BTreeMap<String, Vec<String>>,
}

fn check(name: &str, value: &str) -> Result<(), EventsError> {
    let reject = |reason| EventsError::InvalidHeader {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(reject("empty name"));
    }
    if name.chars().any(|c| !c.is_ascii_graphic() || c == ':') {
        return Err(reject("names are printable ascii without spaces or ':'"));
    }
    if value.contains(['\r', '\n']) {
        return Err(reject("values may not contain line breaks"));
    }
    Ok(())
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to the single value `value`, replacing earlier values.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), EventsError> {
        let (name, value) = (name.into(), value.into());
        check(&name, &value)?;
        self.map.insert(name, vec![value]);
        Ok(())
    }

    /// Adds one more value for `name`.
    pub fn append(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), EventsError> {
        let (name, value) = (name.into(), value.into());
        check(&name, &value)?;
        self.map.entry(name).or_default().push(value);
        Ok(())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// All values of `name`.
    pub fn get_all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.map
            .get(name)
            .into_iter()
            .flat_map(|values| values.iter().map(String::as_str))
    }

    /// Removes `name` and returns its values.
    pub fn remove(&mut self, name: &str) -> Option<Vec<String>> {
        self.map.remove(name)
    }

    /// Every (name, value) pair, names in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map
            .iter()
            .flat_map(|(name, values)| values.iter().map(move |v| (name.as_str(), v.as_str())))
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Rejects names the bus sets itself. JetStream interprets every `Nats-*` header
    /// (`Nats-Msg-Id`, `Nats-Expected-*`, …), so letting a caller set one would change
    /// delivery semantics behind the bus's back, and differently on the in-memory bus.
    pub(crate) fn check_not_reserved(&self) -> Result<(), EventsError> {
        match self
            .map
            .keys()
            .find(|name| name.to_ascii_lowercase().starts_with("nats-"))
        {
            Some(name) => Err(EventsError::InvalidHeader {
                name: name.clone(),
                reason: "Nats-* headers are reserved for the bus",
            }),
            None => Ok(()),
        }
    }

    /// Adds a pair that is known to be well formed (it came off the wire).
    pub(crate) fn push_unchecked(&mut self, name: String, value: String) {
        self.map.entry(name).or_default().push(value);
    }
}

impl opentelemetry::propagation::Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        // Propagators only emit well-formed W3C names and values; anything else is dropped
        // rather than failing the publish over tracing metadata.
        if let Err(error) = self.insert(key, value) {
            tracing::debug!(%error, "dropping malformed trace context header");
        }
    }
}

impl opentelemetry::propagation::Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        Headers::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_append_get() {
        let mut h = Headers::new();
        h.insert("a", "1").unwrap();
        h.append("a", "2").unwrap();
        h.insert("b", "x").unwrap();
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.len(), 2);
        h.insert("a", "3").unwrap();
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["3"]);
        assert_eq!(h.get("A"), None);
    }

    #[test]
    fn rejects_malformed() {
        let mut h = Headers::new();
        assert!(h.insert("", "v").is_err());
        assert!(h.insert("a b", "v").is_err());
        assert!(h.insert("a:b", "v").is_err());
        assert!(h.insert("a", "v\r\nx").is_err());
        assert!(h.is_empty());
    }

    #[test]
    fn reserved_names() {
        let mut h = Headers::new();
        h.insert("traceparent", "x").unwrap();
        assert!(h.check_not_reserved().is_ok());
        h.insert("nats-msg-id", "x").unwrap();
        assert!(h.check_not_reserved().is_err());
    }
}
