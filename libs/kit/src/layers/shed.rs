//! A process-wide concurrency limit that sheds excess calls with `UNAVAILABLE`.
//!
//! tower's `ConcurrencyLimit` + `LoadShed` would answer `RESOURCE_EXHAUSTED` ("too many
//! requests for the connection") through tonic's error mapping, which clients treat as a
//! quota problem; `UNAVAILABLE` is the code gRPC clients retry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use slipway_proto::ApiError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LoadShedFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => LoadShedFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(_) => {
                let status: tonic::Status = ApiError::Unavailable(
                    "the server is at its concurrency limit; retry with backoff".to_owned(),
                )
                .into();
                LoadShedFuture::Shed {
                    response: Some(status.into_http()),
                }
            }
        }
    }
}

pin_project! {
    #[project = LoadShedProjection]
    pub enum LoadShedFuture<F, ResBody> {
        Admitted {
            #[pin]
            inner: F,
            // Held until the response headers exist: for unary calls that is the whole
            // handler, for streams the set-up (streams are long-lived by design and are
            // bounded by their own channels).
            permit: Option<OwnedSemaphorePermit>,
        },
        Shed {
            response: Option<http::Response<ResBody>>,
        },
    }
}

impl<F, ResBody, E> Future for LoadShedFuture<F, ResBody>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LoadShedProjection::Admitted { inner, permit } => {
                let result = ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(result)
            }
            LoadShedProjection::Shed { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_default()))
            }
        }
    }
}
