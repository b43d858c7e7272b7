//! [`CachingResolver`]: any [`PrincipalResolver`] behind the authentication cache.
//!
//! A resolver that reads a database (identity's own store) or asks another service
//! (identity, from the others) is too slow to sit on every request: identity's `Check`
//! spent most of its time resolving the same credential again. The wrapper answers from a
//! [`PrincipalCache`] keyed by the credential's hash, and asks the inner resolver only on a
//! miss. Freshness is kept the way [`RemoteResolver`](crate::RemoteResolver) keeps it:
//! entries live a short TTL, refusals a shorter one, identity change events drop entries at
//! once ([`CachingResolver::follow_identity_events`]), and an answer that started before an
//! invalidation is never stored after it (the cache's generation check).
//!
//! Identity itself applies its own changes to the cache synchronously, before it publishes
//! them ([`CachingResolver::invalidate`]); the event follower covers changes made by other
//! replicas.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use slipway_events::{EventBus, EventsError};

use crate::authn::{AuthnError, PrincipalResolver};
use crate::cache::{CacheSettings, Invalidation, PrincipalCache, cache_key};
use crate::credential::{Credential, CredentialKind};
use crate::rbac::Principal;

/// Resolves through `R`, remembering answers in a [`PrincipalCache`].
pub struct CachingResolver<R> {
    inner: Arc<R>,
    cache: Arc<PrincipalCache>,
    resubscribe_delay: Duration,
}

impl<R> Clone for CachingResolver<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            cache: Arc::clone(&self.cache),
            resubscribe_delay: self.resubscribe_delay,
        }
    }
}

impl<R> std::fmt::Debug for CachingResolver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingResolver")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<R: PrincipalResolver> CachingResolver<R> {
    /// Wraps `inner` with an empty cache of `settings`.
    pub fn new(inner: Arc<R>, settings: CacheSettings) -> Self {
        Self {
            inner,
            cache: Arc::new(PrincipalCache::new(settings)),
            resubscribe_delay: Duration::from_secs(1),
        }
    }

    /// The pause before following identity events again after the subscription ended
    /// (1 s unless set).
    #[must_use]
    pub fn with_resubscribe_delay(mut self, delay: Duration) -> Self {
        self.resubscribe_delay = delay;
        self
    }

    /// The uncached resolver, for callers that need its richer answers.
    pub fn inner(&self) -> &Arc<R> {
        &self.inner
    }

    /// The cache, shared with the event follower; exposed for metrics and tests.
    pub fn cache(&self) -> &Arc<PrincipalCache> {
        &self.cache
    }

    /// Drops what `invalidation` makes stale, at once. Identity calls it for its own
    /// changes before publishing them, so its next answer is never stale.
    pub fn invalidate(&self, invalidation: &Invalidation) {
        self.cache.invalidate(invalidation);
    }

    /// Follows identity's change events into this cache; see
    /// [`remote::follow_identity_events`](crate::remote::follow_identity_events). Abort the
    /// returned handle to stop.
    pub async fn follow_identity_events(
        &self,
        bus: Arc<dyn EventBus>,
    ) -> Result<tokio::task::JoinHandle<()>, EventsError> {
        crate::remote::follow_identity_events(bus, Arc::clone(&self.cache), self.resubscribe_delay)
            .await
    }
}

#[async_trait]
impl<R: PrincipalResolver> PrincipalResolver for CachingResolver<R> {
    async fn resolve(&self, bearer: &str) -> Result<Principal, AuthnError> {
        resolve_cached(&self.cache, bearer, || self.inner.resolve(bearer)).await
    }
}

/// The cached resolution both [`CachingResolver`] and
/// [`RemoteResolver`](crate::RemoteResolver) run: refuse a malformed Slipway credential
/// offline (no cache entry, no call for what can never be valid), answer from the cache,
/// else `ask` and remember the answer, unless an invalidation happened meanwhile.
pub(crate) async fn resolve_cached<F, Fut>(
    cache: &PrincipalCache,
    bearer: &str,
    ask: F,
) -> Result<Principal, AuthnError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Principal, AuthnError>>,
{
    if bearer.is_empty() {
        return Err(AuthnError::Missing);
    }
    // Anything without a Slipway prefix may be a JWT; the inner resolver decides.
    if CredentialKind::from_prefix(bearer).is_some() {
        match Credential::parse(bearer) {
            Ok(credential) if credential.kind().is_bearer() => {}
            _ => return Err(AuthnError::Invalid),
        }
    }
    let key = cache_key(bearer);
    if let Some(cached) = cache.get(&key) {
        return cached;
    }
    // Read before asking: an invalidation while the answer is computed makes it unstorable.
    let generation = cache.generation();
    let resolved = ask().await;
    match &resolved {
        Ok(principal) => cache.insert_principal(key, principal.clone(), generation),
        Err(error) => cache.insert_refusal(key, error.clone(), generation),
    }
    resolved
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::credential::NewCredential;
    use crate::rbac::BuiltinRole;

    /// Counts the calls that reach it; one token is valid, every other credential invalid.
    struct Counting {
        valid: String,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl PrincipalResolver for Counting {
        async fn resolve(&self, bearer: &str) -> Result<Principal, AuthnError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if bearer == self.valid {
                Ok(Principal::api_token("tok", "org", BuiltinRole::Viewer))
            } else {
                Err(AuthnError::Invalid)
            }
        }
    }

    fn token() -> String {
        NewCredential::generate(CredentialKind::ApiToken)
            .unwrap()
            .into_secret()
    }

    #[tokio::test]
    async fn answers_and_refusals_are_cached_until_invalidated() {
        let valid = token();
        let other = token();
        let inner = Arc::new(Counting {
            valid: valid.clone(),
            calls: AtomicUsize::new(0),
        });
        let resolver = CachingResolver::new(Arc::clone(&inner), CacheSettings::default());
        for _ in 0..3 {
            assert_eq!(resolver.resolve(&valid).await.unwrap().id(), "tok");
            assert!(matches!(
                resolver.resolve(&other).await,
                Err(AuthnError::Invalid)
            ));
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);

        resolver.invalidate(&Invalidation::ApiToken("tok".into()));
        resolver.resolve(&valid).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn malformed_credentials_never_reach_the_inner_resolver() {
        let inner = Arc::new(Counting {
            valid: String::new(),
            calls: AtomicUsize::new(0),
        });
        let resolver = CachingResolver::new(Arc::clone(&inner), CacheSettings::default());
        let mut typo = token();
        typo.pop();
        typo.push('!');
        let invitation = NewCredential::generate(CredentialKind::Invitation)
            .unwrap()
            .into_secret();
        for bad in [typo.as_str(), invitation.as_str(), "slp_short"] {
            assert!(matches!(
                resolver.resolve(bad).await,
                Err(AuthnError::Invalid)
            ));
        }
        assert!(matches!(
            resolver.resolve("").await,
            Err(AuthnError::Missing)
        ));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
        assert!(resolver.cache().is_empty());
    }
}
