//! Request ids that cost no system call.
//!
//! tower-http's `MakeRequestUuid` draws a random UUID per call, which reads the OS random
//! source every time. Ids only need to be unique, not unpredictable: a random per-process
//! prefix plus a counter is, and is cheap enough for the hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower_http::request_id::{MakeRequestId, RequestId};

#[derive(Debug, Clone)]
pub struct MakeSequentialRequestId {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    prefix: String,
    next: AtomicU64,
}

impl MakeSequentialRequestId {
    pub fn new() -> Self {
        let prefix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id()) << 64;
        Self {
            state: Arc::new(State {
                prefix: format!("{:016x}", (prefix as u64) ^ (prefix >> 64) as u64),
                next: AtomicU64::new(1),
            }),
        }
    }
}

impl Default for MakeSequentialRequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl MakeRequestId for MakeSequentialRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let sequence = self.state.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{sequence:x}", self.state.prefix);
        http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_share_a_prefix() {
        let mut maker = MakeSequentialRequestId::new();
        let request = http::Request::new(());
        let first = maker.make_request_id(&request).unwrap();
        let second = maker.clone().make_request_id(&request).unwrap();
        let first = first.header_value().to_str().unwrap().to_owned();
        let second = second.header_value().to_str().unwrap().to_owned();
        assert_ne!(first, second);
        assert_eq!(first.split('-').next(), second.split('-').next());
    }
}
