//! A process-wide concurrency limit that sheds excess calls with `UNAVAILABLE`.
//!
//! tower's `ConcurrencyLimit` + `LoadShed` would answer `RESOURCE_EXHAUSTED` ("too many
//! requests for the connection") through tonic's error mapping, which clients treat as a
//! quota problem; `UNAVAILABLE` is the code gRPC clients retry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use slipway_proto::ApiError;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
}

impl LoadShedLayer {
    /// At most `limit` calls are handled at once across all connections.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: Arc::clone(&self.permits),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let status: tonic::Status = ApiError::Unavailable(
                "the server is at its concurrency limit; retry with backoff".to_owned(),
            )
            .into();
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            // Held until the response headers exist: for unary calls that is the whole
            // handler, for streams the set-up (streams are long-lived by design and are
            // bounded by their own channels).
            drop(permit);
            result
        })
    }
}
