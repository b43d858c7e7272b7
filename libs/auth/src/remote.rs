//! The [`PrincipalResolver`] of every service other than identity: ask identity's
//! `AuthService.Authenticate`, cache the answer briefly, and forget it the moment identity
//! announces a change.
//!
//! Why this shape (DESIGN.md, "Who talks to whom"): identity is the one place credentials
//! and roles live, but calling it on every request would put it on every request's path.
//! So each service caches principals for a short TTL ([`CacheSettings`]) and follows
//! `slipway.events.identity.>` ([`follow_identity_events`], shared with
//! [`CachingResolver`](crate::CachingResolver)) to drop entries
//! at once when a token is revoked or a role changes. The TTL bounds the damage of a lost
//! event; the events make revocation take effect within a second rather than a TTL.
//!
//! Authenticate names custom roles only by id, so their grants are fetched with
//! `RoleService.GetRole` under this service's own `slps_` credential and cached by id too.
//!
//! Identity being unreachable is [`AuthnError::Unavailable`] (answered UNAVAILABLE, so
//! clients retry), never UNAUTHENTICATED, which would tell them to log in again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message as _;
use slipway_events::{EventBus, EventsError, Subscription};
use slipway_proto::events::v1 as events_pb;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::auth_service_client::AuthServiceClient;
use slipway_proto::identity::v1::role_service_client::RoleServiceClient;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::authn::{AuthnError, PrincipalResolver};
use crate::cache::{CacheSettings, Invalidation, PrincipalCache};
use crate::caching::resolve_cached;
use crate::convert::{self, ConvertError};
use crate::rbac::{CustomRole, Principal};

/// The subject filter of identity's change events.
pub const IDENTITY_EVENTS: &str = "slipway.events.identity.>";

/// How a [`RemoteResolver`] caches and calls identity.
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    /// TTLs and size bound of the cache.
    pub cache: CacheSettings,
    /// Deadline of each call to identity; past it the credential is
    /// [`AuthnError::Unavailable`], so a hung identity does not hang every service.
    pub call_timeout: Duration,
    /// This service's `slps_` credential, sent to `RoleService.GetRole` to read the grants
    /// of custom roles. Without it, principals holding a custom role resolve to
    /// [`AuthnError::Unavailable`] (a configuration error, logged), never to fewer rights.
    pub service_credential: Option<String>,
    /// Pause before following identity events again after the subscription ended.
    pub resubscribe_delay: Duration,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            cache: CacheSettings::default(),
            call_timeout: Duration::from_secs(2),
            service_credential: None,
            resubscribe_delay: Duration::from_secs(1),
        }
    }
}

/// Resolves bearer credentials through identity, with a cache kept fresh by identity events.
#[derive(Clone)]
pub struct RemoteResolver {
    auth: AuthServiceClient<Channel>,
    roles: RoleServiceClient<Channel>,
    cache: Arc<PrincipalCache>,
    settings: Arc<RemoteSettings>,
}

impl std::fmt::Debug for RemoteResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteResolver")
            .field("cache", &self.cache)
            .field("call_timeout", &self.settings.call_timeout)
            .field(
                "service_credential",
                &self.settings.service_credential.is_some(),
            )
            .finish_non_exhaustive()
    }
}

impl RemoteResolver {
    /// A resolver asking identity over `channel` (typically a lazily connecting channel, so
    /// a service can start before identity does).
    pub fn new(channel: Channel, settings: RemoteSettings) -> Self {
        Self {
            auth: AuthServiceClient::new(channel.clone()),
            roles: RoleServiceClient::new(channel),
            cache: Arc::new(PrincipalCache::new(settings.cache)),
            settings: Arc::new(settings),
        }
    }

    /// The cache, shared with the event follower; exposed for metrics and tests.
    pub fn cache(&self) -> &Arc<PrincipalCache> {
        &self.cache
    }

    /// Follows identity's change events into this resolver's cache; see
    /// [`follow_identity_events`]. Abort the returned handle to stop.
    pub async fn follow_identity_events(
        &self,
        bus: Arc<dyn EventBus>,
    ) -> Result<tokio::task::JoinHandle<()>, EventsError> {
        follow_identity_events(
            bus,
            Arc::clone(&self.cache),
            self.settings.resubscribe_delay,
        )
        .await
    }

    async fn ask_identity(&self, bearer: &str) -> Result<Principal, AuthnError> {
        let mut request = tonic::Request::new(pb::AuthenticateRequest {
            credential: bearer.to_owned(),
        });
        request.set_timeout(self.settings.call_timeout);
        let response = self
            .auth
            .clone()
            .authenticate(request)
            .await
            .map_err(|status| status_to_error(&status))?;
        let wire = response
            .into_inner()
            .principal
            .ok_or_else(|| unusable(&ConvertError::MissingPrincipal))?;
        let mut roles: Vec<Arc<CustomRole>> = Vec::new();
        for id in convert::custom_role_ids(&wire) {
            roles.push(self.custom_role(&id).await?);
        }
        convert::principal_from_proto(&wire, |id| {
            roles.iter().find(|role| role.id() == id).cloned()
        })
        .map_err(|error| unusable(&error))
    }

    async fn custom_role(&self, id: &str) -> Result<Arc<CustomRole>, AuthnError> {
        if let Some(role) = self.cache.role(id) {
            return Ok(role);
        }
        let Some(credential) = self.settings.service_credential.as_deref() else {
            tracing::error!(
                role_id = id,
                "a principal holds a custom role, but no service credential is configured to read it"
            );
            return Err(AuthnError::Unavailable(
                "custom roles cannot be read: no service credential configured".into(),
            ));
        };
        let generation = self.cache.generation();
        let mut request = tonic::Request::new(pb::GetRoleRequest { id: id.to_owned() });
        request.set_timeout(self.settings.call_timeout);
        let value = format!("Bearer {credential}")
            .parse()
            .map_err(|_| AuthnError::Unavailable("the service credential is malformed".into()))?;
        request.metadata_mut().insert("authorization", value);
        let role = self
            .roles
            .clone()
            .get_role(request)
            .await
            .map_err(|status| {
                // The role vanished or this service's own credential was refused: either
                // way nothing lasting is known about the caller's credential.
                AuthnError::Unavailable(format!(
                    "identity: reading custom role {id}: {}",
                    status.code()
                ))
            })?
            .into_inner()
            .role
            .ok_or_else(|| unusable(&ConvertError::UnknownCustomRole(id.to_owned())))?;
        let role = Arc::new(convert::custom_role_from_proto(&role).map_err(|e| unusable(&e))?);
        self.cache.insert_role(Arc::clone(&role), generation);
        Ok(role)
    }
}

#[async_trait]
impl PrincipalResolver for RemoteResolver {
    async fn resolve(&self, bearer: &str) -> Result<Principal, AuthnError> {
        resolve_cached(&self.cache, bearer, || self.ask_identity(bearer)).await
    }
}

/// An answer from identity that this build cannot use: version skew or a bug, not a bad
/// credential, so the client is told to retry rather than to log in again.
fn unusable(error: &ConvertError) -> AuthnError {
    tracing::error!(%error, "identity answered Authenticate with an unusable principal");
    AuthnError::Unavailable("identity answered with an unusable principal".into())
}

/// The authentication error an Authenticate failure stands for. Only UNAUTHENTICATED
/// speaks about the credential; every other code is identity failing to answer.
pub fn status_to_error(status: &tonic::Status) -> AuthnError {
    if status.code() != tonic::Code::Unauthenticated {
        return AuthnError::Unavailable(format!("identity: {}", status.code()));
    }
    let details = status.get_error_details();
    match details.error_info().map(|info| info.reason.as_str()) {
        Some("TOKEN_EXPIRED") => AuthnError::Expired,
        Some("TOKEN_MISSING") => AuthnError::Missing,
        _ => AuthnError::Invalid,
    }
}

/// What an identity event makes stale. Types this build does not know drop everything:
/// a new kind of change could affect any principal.
pub fn invalidations_for(event: &events_pb::Event) -> Vec<Invalidation> {
    use events_pb::event::Payload;
    let Some(payload) = &event.payload else {
        return vec![Invalidation::All];
    };
    match payload {
        Payload::ApiTokenRevoked(revoked) => {
            vec![Invalidation::ApiToken(revoked.api_token_id.clone())]
        }
        Payload::MemberAdded(added) => vec![Invalidation::User(added.user_id.clone())],
        Payload::MemberRoleChanged(changed) => vec![Invalidation::User(changed.user_id.clone())],
        // The event asks to drop the user's tokens in this organization too, and API
        // token principals do not say who created them: drop the organization's entries.
        Payload::MemberRemoved(removed) => vec![
            Invalidation::User(removed.user_id.clone()),
            Invalidation::Organization(event.organization_id.clone()),
        ],
        Payload::RoleUpdated(role) => vec![Invalidation::CustomRole(role.role_id.clone())],
        Payload::RoleDeleted(role) => vec![Invalidation::CustomRole(role.role_id.clone())],
        Payload::OrganizationDeleted(_) => {
            vec![Invalidation::Organization(event.organization_id.clone())]
        }
        // The creator became the new organization's owner: its memberships changed.
        Payload::OrganizationCreated(_) => match &event.actor {
            Some(actor) if !actor.id.is_empty() => vec![Invalidation::User(actor.id.clone())],
            _ => vec![Invalidation::All],
        },
        // Nothing a principal carries (names are not used for decisions).
        Payload::OrganizationUpdated(_) | Payload::ApiTokenCreated(_) => Vec::new(),
        // Another domain's event on an identity subject: not ours to interpret.
        _ => vec![Invalidation::All],
    }
}

/// Subscribes to identity's change events and spawns the task that applies them to `cache`,
/// the one follower of every cached resolver ([`RemoteResolver`] in other services,
/// [`CachingResolver`](crate::CachingResolver) in identity, for changes made by its other
/// replicas). The subscription exists when this returns, so every event published
/// afterwards is seen. If the subscription ends (the bus closed), the task drops the whole
/// cache, since events may have been missed, and subscribes again after `resubscribe_delay`.
/// Abort the returned handle to stop it.
pub async fn follow_identity_events(
    bus: Arc<dyn EventBus>,
    cache: Arc<PrincipalCache>,
    resubscribe_delay: Duration,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    let subscription = bus.subscribe(IDENTITY_EVENTS).await?;
    Ok(tokio::spawn(follow(
        bus,
        subscription,
        cache,
        resubscribe_delay,
    )))
}

async fn follow(
    bus: Arc<dyn EventBus>,
    mut subscription: Subscription,
    cache: Arc<PrincipalCache>,
    delay: Duration,
) {
    loop {
        while let Some(message) = subscription.next().await {
            let invalidations = match events_pb::Event::decode(message.payload.as_ref()) {
                Ok(event) => invalidations_for(&event),
                Err(error) => {
                    tracing::warn!(%error, subject = %message.subject, "undecodable identity event; dropping the authentication cache");
                    vec![Invalidation::All]
                }
            };
            for invalidation in &invalidations {
                cache.invalidate(invalidation);
            }
        }
        // Events may have been missed while the subscription was gone.
        cache.invalidate(&Invalidation::All);
        loop {
            tokio::time::sleep(delay).await;
            match bus.subscribe(IDENTITY_EVENTS).await {
                Ok(again) => {
                    subscription = again;
                    cache.invalidate(&Invalidation::All);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot follow identity events; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_proto::{ApiError, AuthFailure};

    #[test]
    fn statuses_map_to_authentication_errors() {
        let expired: tonic::Status = ApiError::Unauthenticated(AuthFailure::TokenExpired).into();
        assert!(matches!(status_to_error(&expired), AuthnError::Expired));
        let invalid: tonic::Status = ApiError::Unauthenticated(AuthFailure::TokenInvalid).into();
        assert!(matches!(status_to_error(&invalid), AuthnError::Invalid));
        let bare = tonic::Status::unauthenticated("no");
        assert!(matches!(status_to_error(&bare), AuthnError::Invalid));
        for down in [
            tonic::Status::unavailable("down"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::internal("bug"),
        ] {
            assert!(matches!(status_to_error(&down), AuthnError::Unavailable(_)));
        }
    }

    #[test]
    fn events_name_what_they_make_stale() {
        use events_pb::event::Payload;
        let event = |payload: Option<Payload>| events_pb::Event {
            organization_id: "org-a".into(),
            payload,
            ..Default::default()
        };
        let revoked = event(Some(Payload::ApiTokenRevoked(events_pb::ApiTokenRevoked {
            api_token_id: "tok".into(),
        })));
        assert_eq!(
            invalidations_for(&revoked),
            vec![Invalidation::ApiToken("tok".into())]
        );
        let deleted = event(Some(Payload::OrganizationDeleted(
            events_pb::OrganizationDeleted::default(),
        )));
        assert_eq!(
            invalidations_for(&deleted),
            vec![Invalidation::Organization("org-a".into())]
        );
        let role = event(Some(Payload::RoleUpdated(events_pb::RoleUpdated {
            role_id: "r".into(),
            name: String::new(),
        })));
        assert_eq!(
            invalidations_for(&role),
            vec![Invalidation::CustomRole("r".into())]
        );
        let removed = event(Some(Payload::MemberRemoved(events_pb::MemberRemoved {
            user_id: "u".into(),
        })));
        assert_eq!(
            invalidations_for(&removed),
            vec![
                Invalidation::User("u".into()),
                Invalidation::Organization("org-a".into())
            ]
        );
        assert_eq!(invalidations_for(&event(None)), vec![Invalidation::All]);
    }
}
