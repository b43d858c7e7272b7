//! `x-request-id` on every call: the caller's when it sent a usable one, else a fresh one,
//! set on the request (for handlers, logs and traces) and echoed on failed answers.
//!
//! Ids only need to be unique, not unpredictable: a per-process prefix plus a counter is,
//! and costs no system call (a random UUID per call reads the OS random source).
//!
//! The id is echoed on failures only (answers with a non-zero `grpc-status` in their
//! headers), which is when a caller quotes it in a support ticket. Echoing it on every
//! success would put a unique, uncompressible header on each response, a cost every call
//! pays in HPACK encoding on both ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::HeaderValue;
use pin_project_lite::pin_project;

use super::REQUEST_ID_HEADER;

/// Longest caller-sent id kept; a longer one is replaced rather than logged everywhere.
const MAX_CALLER_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    ids: Arc<IdSource>,
}

#[derive(Debug)]
struct IdSource {
    /// 16 lowercase hex digits, fixed for the process.
    prefix: [u8; 16],
    next: AtomicU64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex16(value: u64) -> [u8; 16] {
    let mut digits = [0u8; 16];
    for (index, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((value >> (60 - 4 * index)) & 0xf) as usize];
    }
    digits
}

impl IdSource {
    /// `<prefix>-<counter>`, both as 16 hex digits, written without the formatting
    /// machinery.
    fn next(&self) -> HeaderValue {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 33];
        id[..16].copy_from_slice(&self.prefix);
        id[16] = b'-';
        id[17..].copy_from_slice(&hex16(sequence));
        // Hex digits and '-' are always a valid header value.
        HeaderValue::from_bytes(&id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
    }
}

impl RequestIdLayer {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let mixed = (seed as u64) ^ ((seed >> 64) as u64) ^ (u64::from(std::process::id()) << 40);
        Self {
            ids: Arc::new(IdSource {
                prefix: hex16(mixed),
                next: AtomicU64::new(1),
            }),
        }
    }
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId {
            inner,
            ids: Arc::clone(&self.ids),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
    ids: Arc<IdSource>,
}

fn usable(value: &HeaderValue) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CALLER_ID_LEN
        && value.as_bytes().iter().all(|byte| byte.is_ascii_graphic())
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RequestId<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let id = match request.headers().get(REQUEST_ID_HEADER) {
            Some(value) if usable(value) => value.clone(),
            _ => {
                let fresh = self.ids.next();
                request
                    .headers_mut()
                    .insert(REQUEST_ID_HEADER, fresh.clone());
                fresh
            }
        };
        RequestIdFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project! {
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let Ok(response) = &mut result {
            let failed = response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code.as_bytes() != b"0");
            if let (true, Some(id)) = (failed, this.id.take()) {
                response.headers_mut().insert(REQUEST_ID_HEADER, id);
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_share_a_prefix() {
        let layer = RequestIdLayer::new();
        let first = layer.ids.next();
        let second = layer.clone().ids.next();
        let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
        assert_ne!(first, second);
        assert_eq!(first.len(), 33);
        assert_eq!(first.split('-').next(), second.split('-').next());
        assert!(second.ends_with("0000000000000002"), "{second}");
    }

    #[test]
    fn hex16_writes_every_digit() {
        assert_eq!(&hex16(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex16(0), b"0000000000000000");
    }

    #[test]
    fn only_short_printable_caller_ids_are_kept() {
        assert!(usable(&HeaderValue::from_static("abc-123")));
        assert!(!usable(&HeaderValue::from_static("")));
        assert!(!usable(&HeaderValue::from_static("has space")));
        let long = "x".repeat(MAX_CALLER_ID_LEN + 1);
        assert!(!usable(&HeaderValue::from_str(&long).unwrap()));
    }
}
