//! How many live tails each organization holds at once.
//!
//! A tail costs a task, a queue of up to `tail_buffer` lines and a share of the hub's
//! fan-out, for as long as its client keeps the stream open. Without a bound, one
//! organization's scripts (or a leak in them) could take what every other organization's
//! tails need; with it, the extra tail is refused with `RESOURCE_EXHAUSTED` and nobody
//! else notices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Live tails per organization, shared by every call of this process.
#[derive(Debug, Clone)]
pub struct TailQuota {
    limit: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One live tail: counted until dropped (when the tail's task ends).
#[derive(Debug)]
pub struct TailPermit {
    organization_id: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl TailQuota {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Arc::default(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A permit for one more tail of `organization_id`; None at the limit.
    pub fn acquire(&self, organization_id: &str) -> Option<TailPermit> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(organization_id.to_owned()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(TailPermit {
            organization_id: organization_id.to_owned(),
            held: Arc::clone(&self.held),
        })
    }

    /// Tails `organization_id` holds now.
    pub fn held(&self, organization_id: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(organization_id).copied().unwrap_or(0)
    }
}

impl Drop for TailPermit {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.organization_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.organization_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_organization_until_dropped() {
        let quota = TailQuota::new(2);
        let a1 = quota.acquire("a").unwrap();
        let _a2 = quota.acquire("a").unwrap();
        assert!(quota.acquire("a").is_none());
        let _b1 = quota.acquire("b").unwrap();
        assert_eq!(quota.held("a"), 2);
        drop(a1);
        assert_eq!(quota.held("a"), 1);
        assert!(quota.acquire("a").is_some());
        assert_eq!(quota.held("a"), 1, "a dropped permit gives its place back");
    }
}
