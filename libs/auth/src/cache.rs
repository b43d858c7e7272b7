//! The authentication cache of services other than identity: principals by credential
//! hash, and custom roles by id, each for a short time.
//!
//! DESIGN.md has services call identity only for credentials they have not cached, and drop
//! cache entries on identity change events. The TTL is the safety net for an event that
//! was missed (NATS live subscriptions are at most once); the events make changes such as a
//! revoked token take effect at once rather than after the TTL.
//!
//! Keys are the SHA-256 of the bearer text ([`CredentialHash`]), never the text itself,
//! so a memory dump of a service holds no usable credential. Refusals (invalid, expired)
//! are cached too, for a shorter time, so a client retrying a bad token in a loop costs one
//! identity call per `negative_ttl` rather than one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::authn::AuthnError;
use crate::credential::CredentialHash;
use crate::rbac::{CustomRole, Principal, PrincipalKind, Role};

/// How long entries live and how many are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a resolved principal is served without asking identity again. Short: it
    /// bounds how stale roles can get if an invalidation event is lost.
    pub ttl: Duration,
    /// How long a refusal (invalid or expired credential) is remembered.
    pub negative_ttl: Duration,
    /// Most principals (and, separately, most custom roles) kept; beyond it, expired entries
    /// go first, then arbitrary ones.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_entries: 10_000,
        }
    }
}

/// What an identity change makes stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Everything (an event this build does not understand, or lost events).
    All,
    /// The API token with this id (revoked).
    ApiToken(String),
    /// The user with this id (membership added, changed or removed).
    User(String),
    /// Every principal with a membership in this organization (organization deleted).
    Organization(String),
    /// This custom role and every principal holding it (role updated or deleted).
    CustomRole(String),
}

/// The cache key of a bearer credential: the SHA-256 of its text.
pub fn cache_key(bearer: &str) -> CredentialHash {
    CredentialHash::from_bytes(Sha256::digest(bearer.as_bytes()).into())
}

enum Cached {
    Principal(Principal),
    Refused(AuthnError),
}

struct Entry<T> {
    value: T,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    principals: HashMap<CredentialHash, Entry<Cached>>,
    roles: HashMap<String, Entry<Arc<CustomRole>>>,
    /// Bumped on every invalidation. A lookup that started before an invalidation must not
    /// store its (possibly stale) answer afterwards; see [`PrincipalCache::generation`].
    generation: u64,
}

/// Principals by credential hash and custom roles by id, shared by a resolver and the task
/// following identity events.
pub struct PrincipalCache {
    settings: CacheSettings,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PrincipalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("PrincipalCache")
            .field("settings", &self.settings)
            .field("principals", &inner.principals.len())
            .field("roles", &inner.roles.len())
            .finish()
    }
}

impl PrincipalCache {
    /// An empty cache.
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// A poisoned lock only means another thread panicked mid-update of a plain map; the map
    /// is still usable, and a cache must not take the service down.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached answer for `key`, if fresh. A cached principal whose credential expired
    /// since it was resolved answers [`AuthnError::Expired`] without asking identity.
    pub fn get(&self, key: &CredentialHash) -> Option<Result<Principal, AuthnError>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = inner.principals.get(key)?;
        if entry.expires <= now {
            inner.principals.remove(key);
            return None;
        }
        match &entry.value {
            Cached::Principal(principal) => {
                if principal
                    .expire_time()
                    .is_some_and(|at| at <= SystemTime::now())
                {
                    return Some(Err(AuthnError::Expired));
                }
                Some(Ok(principal.clone()))
            }
            Cached::Refused(error) => Some(Err(error.clone())),
        }
    }

    /// The current generation. Read it before asking identity and pass it to the `insert`
    /// calls: an invalidation in between makes them no-ops, so an answer that may predate a
    /// revocation is never cached after the revocation was applied.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches a resolved principal for the TTL, unless an invalidation happened since
    /// `generation` was read.
    pub fn insert_principal(&self, key: CredentialHash, principal: Principal, generation: u64) {
        self.insert(
            key,
            Cached::Principal(principal),
            self.settings.ttl,
            generation,
        );
    }

    /// Caches a refusal for the negative TTL. Only [`AuthnError::Invalid`] and
    /// [`AuthnError::Expired`] are cached: the others say nothing lasting about the
    /// credential.
    pub fn insert_refusal(&self, key: CredentialHash, error: AuthnError, generation: u64) {
        if matches!(error, AuthnError::Invalid | AuthnError::Expired) {
            let ttl = self.settings.negative_ttl;
            self.insert(key, Cached::Refused(error), ttl, generation);
        }
    }

    fn insert(&self, key: CredentialHash, value: Cached, ttl: Duration, generation: u64) {
        if ttl.is_zero() || self.settings.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        make_room(&mut inner.principals, self.settings.max_entries, &key, now);
        inner.principals.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    /// The cached custom role `id`, if fresh.
    pub fn role(&self, id: &str) -> Option<Arc<CustomRole>> {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .roles
            .get(id)
            .filter(|entry| entry.expires > now)
            .map(|entry| Arc::clone(&entry.value))
    }

    /// Caches a custom role for the TTL, unless an invalidation happened since `generation`.
    pub fn insert_role(&self, role: Arc<CustomRole>, generation: u64) {
        if self.settings.ttl.is_zero() || self.settings.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let id = role.id().to_owned();
        make_room(&mut inner.roles, self.settings.max_entries, &id, now);
        inner.roles.insert(
            id,
            Entry {
                value: role,
                expires: now + self.settings.ttl,
            },
        );
    }

    /// Drops what `invalidation` makes stale, at once.
    pub fn invalidate(&self, invalidation: &Invalidation) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        let stale = |principal: &Principal| match invalidation {
            Invalidation::All => true,
            Invalidation::ApiToken(id) => {
                principal.kind() == PrincipalKind::ApiToken && principal.id() == id
            }
            Invalidation::User(id) => {
                principal.kind() == PrincipalKind::User && principal.id() == id
            }
            Invalidation::Organization(id) => principal.membership(id).is_some(),
            Invalidation::CustomRole(id) => principal
                .memberships()
                .iter()
                .any(|m| matches!(m.role(), Some(Role::Custom(role)) if role.id() == id)),
        };
        if matches!(invalidation, Invalidation::All) {
            inner.principals.clear();
            inner.roles.clear();
            return;
        }
        inner.principals.retain(|_, entry| match &entry.value {
            Cached::Principal(principal) => !stale(principal),
            // A refusal stays a refusal whatever changed in identity, until its short TTL.
            Cached::Refused(_) => true,
        });
        if let Invalidation::CustomRole(id) = invalidation {
            inner.roles.remove(id);
        }
    }

    /// Cached principals and refusals, fresh or not yet swept.
    pub fn len(&self) -> usize {
        self.lock().principals.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps `map` under `max` entries before `key` is inserted: expired entries go first, then
/// an arbitrary one. Arbitrary rather than least-recently-used keeps hits free of
/// bookkeeping; an evicted hot entry costs one identity call.
fn make_room<K, V>(map: &mut HashMap<K, Entry<V>>, max: usize, key: &K, now: Instant)
where
    K: std::hash::Hash + Eq + Clone,
{
    if map.len() < max || map.contains_key(key) {
        return;
    }
    map.retain(|_, entry| entry.expires > now);
    while map.len() >= max {
        let Some(victim) = map.keys().next().cloned() else {
            break;
        };
        map.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::{BuiltinRole, Membership};

    fn settings() -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            max_entries: 3,
        }
    }

    #[test]
    fn keys_are_hashes_not_text() {
        let key = cache_key("slp_secret");
        assert_eq!(key, cache_key("slp_secret"));
        assert_ne!(key, cache_key("slp_secreT"));
        assert!(!key.as_bytes().windows(4).any(|w| w == b"slp_"));
    }

    #[test]
    fn invalidations_drop_only_what_they_name() {
        let cache = PrincipalCache::new(CacheSettings {
            max_entries: 100,
            ..settings()
        });
        let role = Arc::new(CustomRole::builder("role-1").build().unwrap());
        let g = cache.generation();
        let token = Principal::api_token("tok", "org-a", BuiltinRole::Admin);
        let user = Principal::user(
            "user",
            [Membership::new("org-b", Role::Custom(Arc::clone(&role)))],
        );
        cache.insert_principal(cache_key("t"), token, g);
        cache.insert_principal(cache_key("u"), user, g);
        cache.insert_refusal(cache_key("bad"), AuthnError::Invalid, g);
        cache.insert_role(Arc::clone(&role), g);

        cache.invalidate(&Invalidation::ApiToken("other".into()));
        assert_eq!(cache.len(), 3);
        cache.invalidate(&Invalidation::Organization("org-a".into()));
        assert!(cache.get(&cache_key("t")).is_none());
        assert!(cache.get(&cache_key("u")).is_some());
        cache.invalidate(&Invalidation::CustomRole("role-1".into()));
        assert!(cache.get(&cache_key("u")).is_none());
        assert!(cache.role("role-1").is_none());
        assert!(matches!(
            cache.get(&cache_key("bad")),
            Some(Err(AuthnError::Invalid))
        ));
        cache.invalidate(&Invalidation::All);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_answer_older_than_an_invalidation_is_not_stored() {
        let cache = PrincipalCache::new(settings());
        let before = cache.generation();
        cache.invalidate(&Invalidation::ApiToken("tok".into()));
        cache.insert_principal(
            cache_key("t"),
            Principal::api_token("tok", "org", BuiltinRole::Viewer),
            before,
        );
        assert!(cache.get(&cache_key("t")).is_none());
    }

    #[test]
    fn size_is_bounded_and_ttl_honoured() {
        let cache = PrincipalCache::new(settings());
        let g = cache.generation();
        for i in 0..10 {
            cache.insert_principal(cache_key(&i.to_string()), Principal::service("s"), g);
        }
        assert_eq!(cache.len(), 3);

        let short = PrincipalCache::new(CacheSettings {
            ttl: Duration::from_millis(1),
            ..settings()
        });
        short.insert_principal(cache_key("x"), Principal::service("s"), short.generation());
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&cache_key("x")).is_none());
    }

    #[test]
    fn an_expired_credential_is_refused_from_the_cache() {
        let cache = PrincipalCache::new(settings());
        let expired = Principal::service("s").with_expire_time(SystemTime::UNIX_EPOCH);
        cache.insert_principal(cache_key("x"), expired, cache.generation());
        assert!(matches!(
            cache.get(&cache_key("x")),
            Some(Err(AuthnError::Expired))
        ));
        cache.insert_refusal(
            cache_key("y"),
            AuthnError::Unavailable("down".into()),
            cache.generation(),
        );
        assert!(cache.get(&cache_key("y")).is_none());
    }
}
