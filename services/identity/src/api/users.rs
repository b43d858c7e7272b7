//! `slipway.identity.v1.UserService`: who am I.

use slipway_auth::principal;
use slipway_auth::rbac::{Principal, PrincipalKind};
use slipway_proto::ApiError;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::user_service_server::UserService;
use tonic::{Request, Response, Status};

use super::Context;
use crate::convert;
use crate::store::StoreError;

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Users {
    ctx: Context,
}

impl Users {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    /// The caller as `Authenticate` would describe it, read from the store now.
    async fn current(&self, principal: &Principal) -> Result<pb::GetCurrentUserResponse, ApiError> {
        // The record vanished between authentication and now: the credential is gone.
        let gone = |error: StoreError| match error {
            StoreError::NotFound(_) => {
                ApiError::Unauthenticated(slipway_proto::AuthFailure::TokenInvalid)
            }
            other => other.into(),
        };
        match principal.kind() {
            PrincipalKind::ApiToken => {
                let token = self
                    .ctx
                    .store
                    .get_api_token(principal.id())
                    .await
                    .map_err(gone)?;
                let organization = self
                    .ctx
                    .store
                    .get_organization(&token.organization_id)
                    .await
                    .map_err(gone)?;
                Ok(pb::GetCurrentUserResponse {
                    principal: Some(convert::token_principal(&token, &organization)),
                    user: None,
                })
            }
            PrincipalKind::User => {
                let user = self
                    .ctx
                    .store
                    .get_user(principal.id())
                    .await
                    .map_err(gone)?;
                let memberships = self.ctx.store.memberships_of_user(&user.id).await?;
                Ok(pb::GetCurrentUserResponse {
                    principal: Some(convert::user_principal(
                        &user,
                        &memberships,
                        principal.expire_time(),
                    )),
                    user: Some(convert::user_to_proto(&user)),
                })
            }
            PrincipalKind::Agent | PrincipalKind::Service => Ok(pb::GetCurrentUserResponse {
                principal: Some(pb::Principal {
                    kind: match principal.kind() {
                        PrincipalKind::Agent => pb::PrincipalKind::Agent,
                        _ => pb::PrincipalKind::Service,
                    }
                    .into(),
                    id: principal.id().to_owned(),
                    display_name: principal.display_name().to_owned(),
                    memberships: Vec::new(),
                    expire_time: None,
                }),
                user: None,
            }),
        }
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let principal = principal(&request)?.clone();
        Ok(Response::new(self.current(&principal).await?))
    }
}
