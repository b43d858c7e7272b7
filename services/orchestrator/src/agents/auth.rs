//! Who is at the other end of a `Connect` stream: the agent token, checked by catalog, and
//! the `Hello` the agent opens with.
//!
//! Agent tokens (`slpa_…`) are issued and stored by catalog, per cluster; identity knows
//! nothing of them, so this service reads the bearer itself instead of sitting behind the
//! user-token `AuthenticateLayer`. A token of any other kind (user, API, service) is
//! refused before catalog is asked.

use std::time::Duration;

use slipway_auth::credential::{Credential, CredentialKind};
use slipway_proto::agent::v1 as pb;
use slipway_proto::catalog::v1 as catalog_pb;
use slipway_proto::{ApiError, AuthFailure, FieldViolation};
use tokio_stream::StreamExt as _;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status, Streaming};

use crate::catalog::CatalogClient;

/// The cluster an agent token belongs to, as catalog answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    pub cluster_id: String,
    pub organization_id: String,
}

/// Most command ids a `Hello` may list per field, as the contract bounds them.
const MAX_RESUME_IDS: usize = 1000;

/// Longest `Hello.agent_version` accepted (what catalog stores).
const MAX_VERSION_CHARS: usize = 64;

/// The agent token in `authorization: Bearer slpa_…`, shape and checksum verified.
pub fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get("authorization")
        .ok_or(ApiError::Unauthenticated(AuthFailure::TokenMissing))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated(AuthFailure::TokenInvalid))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthenticated(AuthFailure::TokenMissing))?;
    // User, API and service credentials have other prefixes: refused here, without a
    // round trip, and without telling which kind was sent.
    Credential::parse_as(CredentialKind::Agent, token)
        .map_err(|_| ApiError::Unauthenticated(AuthFailure::TokenInvalid))?;
    Ok(token)
}

/// Asks catalog whose `token` is. Catalog's refusal of the token itself becomes
/// `UNAUTHENTICATED`; any other failure is ours or catalog's, not the agent's, and answers
/// `UNAVAILABLE` so the agent retries with backoff.
pub async fn authenticate(catalog: &CatalogClient, token: &str) -> Result<AgentIdentity, Status> {
    let answer = catalog
        .authenticate_agent(catalog_pb::AuthenticateClusterAgentRequest {
            agent_token: token.to_owned(),
        })
        .await;
    match answer {
        Ok(found) => Ok(AgentIdentity {
            cluster_id: found.cluster_id,
            organization_id: found.organization_id,
        }),
        Err(error) if error.0.code() == Code::Unauthenticated => {
            Err(ApiError::Unauthenticated(AuthFailure::TokenInvalid).into())
        }
        Err(error) => {
            // PERMISSION_DENIED here means our own service credential is not accepted:
            // an installation fault worth an error in the log, but never the agent's.
            tracing::error!(code = ?error.0.code(), message = error.0.message(),
                "catalog could not authenticate an agent");
            Err(Status::unavailable(
                "agents cannot be authenticated right now: retry later",
            ))
        }
    }
}

/// The first message of the stream, which must be a `Hello` and arrive within `timeout`.
pub async fn read_hello(
    inbound: &mut Streaming<pb::ConnectRequest>,
    timeout: Duration,
) -> Result<pb::Hello, Status> {
    let first = tokio::time::timeout(timeout, inbound.next())
        .await
        .map_err(|_| {
            Status::invalid_argument(format!(
                "no hello within {} s: send hello as the first message",
                timeout.as_secs_f64()
            ))
        })?;
    match first {
        Some(Ok(pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(hello)),
        })) => Ok(hello),
        Some(Ok(_)) => Err(ApiError::invalid_field(
            "message",
            "the first message of the stream must be hello",
        )
        .into()),
        Some(Err(status)) => Err(status),
        None => Err(Status::cancelled("the stream closed before hello")),
    }
}

/// `INVALID_ARGUMENT` for a malformed `Hello`, then `PERMISSION_DENIED` when it names a
/// cluster other than the token's.
pub fn check_hello(hello: &pb::Hello, identity: &AgentIdentity) -> Result<(), Status> {
    let mut violations = Vec::new();
    let mut bad = |field: &str, description: &str| {
        violations.push(FieldViolation::new(
            format!("hello.{field}"),
            description.to_owned(),
        ));
    };
    if hello.cluster_id.is_empty() {
        bad("cluster_id", "is required");
    }
    if hello.agent_version.is_empty() {
        bad("agent_version", "is required");
    } else if hello.agent_version.chars().count() > MAX_VERSION_CHARS {
        bad("agent_version", "is longer than 64 characters");
    }
    if pb::RuntimeKind::try_from(hello.runtime)
        .map_or(true, |kind| kind == pb::RuntimeKind::Unspecified)
    {
        bad("runtime", "must be kubernetes or process");
    }
    if hello.agent_instance_id.is_empty() {
        bad("agent_instance_id", "is required");
    }
    if hello.applied_command_ids.len() > MAX_RESUME_IDS {
        bad("applied_command_ids", "lists more than 1000 ids");
    }
    if hello.running_command_ids.len() > MAX_RESUME_IDS {
        bad("running_command_ids", "lists more than 1000 ids");
    }
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument(violations).into());
    }
    if hello.cluster_id != identity.cluster_id {
        return Err(Status::permission_denied(
            "hello.cluster_id is not the cluster of the agent token",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn only_agent_tokens_pass_the_bearer_check() {
        let agent = slipway_auth::NewCredential::generate(CredentialKind::Agent).unwrap();
        let header = format!("Bearer {}", agent.expose_secret());
        assert_eq!(bearer(&metadata(&header)).unwrap(), agent.expose_secret());
        for kind in [CredentialKind::ApiToken, CredentialKind::Service] {
            let other = slipway_auth::NewCredential::generate(kind).unwrap();
            let header = format!("Bearer {}", other.expose_secret());
            let status = bearer(&metadata(&header)).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
        }
        assert_eq!(
            bearer(&MetadataMap::new()).unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            bearer(&metadata("Basic abc")).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn hello_is_checked_field_by_field_then_against_the_token() {
        let identity = AgentIdentity {
            cluster_id: "c1".into(),
            organization_id: "o1".into(),
        };
        let good = pb::Hello {
            cluster_id: "c1".into(),
            agent_version: "1.0.0".into(),
            runtime: pb::RuntimeKind::Process.into(),
            agent_instance_id: "i".into(),
            ..Default::default()
        };
        assert!(check_hello(&good, &identity).is_ok());
        let other = pb::Hello {
            cluster_id: "c2".into(),
            ..good.clone()
        };
        assert_eq!(
            check_hello(&other, &identity).unwrap_err().code(),
            Code::PermissionDenied
        );
        let empty = pb::Hello::default();
        let status = check_hello(&empty, &identity).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("hello.cluster_id"), "{status:?}");
    }
}
