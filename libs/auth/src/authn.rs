//! Authentication at the edge of every gRPC service: read `authorization: Bearer …`,
//! resolve it to a [`Principal`] through a [`PrincipalResolver`], and hand the principal to
//! handlers in the request extensions.
//!
//! The resolver is the only part that differs between services: identity resolves
//! credentials from its own store, every other service asks identity (with a cache). The
//! layer wraps each gRPC service individually (not the whole server), so health and
//! reflection stay open to probes and tools.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use slipway_proto::{ApiError, AuthFailure};

use crate::rbac::Principal;

/// Why a bearer credential did not resolve to a principal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    #[error("no credentials")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    #[error("expired credentials")]
    Expired,
    /// The resolver could not decide (identity or the database is down); the caller may
    /// retry. Never answered as UNAUTHENTICATED, which would tell clients to log in again.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AuthnError> for ApiError {
    fn from(error: AuthnError) -> Self {
        match error {
            AuthnError::Missing => ApiError::Unauthenticated(AuthFailure::TokenMissing),
            AuthnError::Invalid => ApiError::Unauthenticated(AuthFailure::TokenInvalid),
            AuthnError::Expired => ApiError::Unauthenticated(AuthFailure::TokenExpired),
            AuthnError::Unavailable(detail) => ApiError::Unavailable(format!(
                "cannot check credentials right now ({detail}); retry shortly"
            )),
        }
    }
}

/// Turns a bearer credential (the text after `Bearer `) into the principal it stands for.
#[async_trait]
pub trait PrincipalResolver: Send + Sync + 'static {
    async fn resolve(&self, bearer: &str) -> Result<Principal, AuthnError>;
}

/// The bearer credential of a request, if it carries a well-formed `authorization` header.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthnError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthnError::Missing)?;
    let value = value.to_str().map_err(|_| AuthnError::Invalid)?;
    let (scheme, credential) = value.split_once(' ').ok_or(AuthnError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::Invalid);
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(AuthnError::Missing);
    }
    Ok(credential)
}

/// The principal the authentication layer resolved for this call.
///
/// Fails with `UNAUTHENTICATED` if the service was mounted without the layer, so a
/// forgotten layer never turns into an open door.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or(ApiError::Unauthenticated(AuthFailure::TokenMissing))
}

/// Wraps one gRPC service so that every call is authenticated first.
pub struct AuthenticateLayer<R: ?Sized> {
    resolver: Arc<R>,
}

impl<R: ?Sized> AuthenticateLayer<R> {
    pub fn new(resolver: Arc<R>) -> Self {
        Self { resolver }
    }
}

impl<R: ?Sized> Clone for AuthenticateLayer<R> {
    fn clone(&self) -> Self {
        Self {
            resolver: Arc::clone(&self.resolver),
        }
    }
}

impl<S, R: ?Sized> tower::Layer<S> for AuthenticateLayer<R> {
    type Service = Authenticated<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            resolver: Arc::clone(&self.resolver),
        }
    }
}

/// A gRPC service behind [`AuthenticateLayer`]; keeps the inner service's name.
pub struct Authenticated<S, R: ?Sized> {
    inner: S,
    resolver: Arc<R>,
}

impl<S: Clone, R: ?Sized> Clone for Authenticated<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            resolver: Arc::clone(&self.resolver),
        }
    }
}

impl<S: tonic::server::NamedService, R: ?Sized> tonic::server::NamedService
    for Authenticated<S, R>
{
    const NAME: &'static str = S::NAME;
}

impl<S, R, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Authenticated<S, R>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: PrincipalResolver + ?Sized,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The ready inner service is used for this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let resolver = Arc::clone(&self.resolver);
        Box::pin(async move {
            let resolved = match bearer(request.headers()) {
                Ok(credential) => resolver.resolve(credential).await,
                Err(error) => Err(error),
            };
            match resolved {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(error) => {
                    let status: tonic::Status = ApiError::from(error).into();
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_reads_the_credential() {
        assert_eq!(bearer(&headers("Bearer slp_abc")).unwrap(), "slp_abc");
        assert_eq!(bearer(&headers("bearer  slp_abc ")).unwrap(), "slp_abc");
    }

    #[test]
    fn bearer_refuses_what_is_not_one() {
        assert!(matches!(
            bearer(&http::HeaderMap::new()),
            Err(AuthnError::Missing)
        ));
        assert!(matches!(
            bearer(&headers("Basic dXNlcjpwYXNz")),
            Err(AuthnError::Invalid)
        ));
        assert!(matches!(
            bearer(&headers("Bearer ")),
            Err(AuthnError::Invalid) | Err(AuthnError::Missing)
        ));
        assert!(matches!(
            bearer(&headers("slp_abc")),
            Err(AuthnError::Invalid)
        ));
    }

    #[test]
    fn errors_map_to_the_documented_codes() {
        let status: tonic::Status = ApiError::from(AuthnError::Expired).into();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status: tonic::Status = ApiError::from(AuthnError::Unavailable("db".into())).into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
