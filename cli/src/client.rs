//! The gRPC client: one channel to Slipway's one public address (every service answers
//! there, behind `slipway dev` or the control plane's proxy), every call carrying
//! `authorization: Bearer <token>`.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use slipway_proto::{catalog::v1 as cpb, deploy::v1 as dpb, identity::v1 as ipb, logs::v1 as lpb};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::errors::UserError;

/// Adds the bearer token to every call (none before `slipway login`: the server then says
/// UNAUTHENTICATED, and the hint says to log in).
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Svc = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Client {
    channel: Channel,
    bearer: Bearer,
    pub address: String,
}

/// `host:port` becomes `http://host:port`; a URL is kept.
pub fn normalize_address(address: &str) -> String {
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    }
}

impl Client {
    pub fn new(address: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let address = normalize_address(address);
        let endpoint = Endpoint::from_shared(address.clone()).map_err(|_| {
            UserError::hinted(
                format!("{address} is not an address"),
                "use HOST:PORT or http://HOST:PORT, for example 127.0.0.1:7800",
            )
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        let bearer = match token {
            Some(token) => {
                let mut value: AsciiMetadataValue = format!("Bearer {}", token.trim())
                    .parse()
                    .context("the token has characters a header cannot carry")?;
                value.set_sensitive(true);
                Bearer(Some(value))
            }
            None => Bearer(None),
        };
        Ok(Self {
            channel,
            bearer,
            address,
        })
    }

    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    pub fn auth(&self) -> ipb::auth_service_client::AuthServiceClient<Svc> {
        ipb::auth_service_client::AuthServiceClient::new(self.svc())
    }
    pub fn organizations(
        &self,
    ) -> ipb::organization_service_client::OrganizationServiceClient<Svc> {
        ipb::organization_service_client::OrganizationServiceClient::new(self.svc())
    }
    pub fn members(&self) -> ipb::member_service_client::MemberServiceClient<Svc> {
        ipb::member_service_client::MemberServiceClient::new(self.svc())
    }
    pub fn invitations(&self) -> ipb::invitation_service_client::InvitationServiceClient<Svc> {
        ipb::invitation_service_client::InvitationServiceClient::new(self.svc())
    }
    pub fn tokens(&self) -> ipb::api_token_service_client::ApiTokenServiceClient<Svc> {
        ipb::api_token_service_client::ApiTokenServiceClient::new(self.svc())
    }
    pub fn projects(&self) -> cpb::project_service_client::ProjectServiceClient<Svc> {
        cpb::project_service_client::ProjectServiceClient::new(self.svc())
    }
    pub fn environments(&self) -> cpb::environment_service_client::EnvironmentServiceClient<Svc> {
        cpb::environment_service_client::EnvironmentServiceClient::new(self.svc())
    }
    pub fn services(&self) -> cpb::service_service_client::ServiceServiceClient<Svc> {
        cpb::service_service_client::ServiceServiceClient::new(self.svc())
    }
    pub fn clusters(&self) -> cpb::cluster_service_client::ClusterServiceClient<Svc> {
        cpb::cluster_service_client::ClusterServiceClient::new(self.svc())
    }
    pub fn variables(&self) -> cpb::variable_service_client::VariableServiceClient<Svc> {
        cpb::variable_service_client::VariableServiceClient::new(self.svc())
    }
    pub fn rules(&self) -> cpb::deployment_rule_service_client::DeploymentRuleServiceClient<Svc> {
        cpb::deployment_rule_service_client::DeploymentRuleServiceClient::new(self.svc())
    }
    pub fn deployments(&self) -> dpb::deployment_service_client::DeploymentServiceClient<Svc> {
        dpb::deployment_service_client::DeploymentServiceClient::new(self.svc())
    }
    pub fn logs(&self) -> lpb::log_service_client::LogServiceClient<Svc> {
        lpb::log_service_client::LogServiceClient::new(self.svc())
    }
}

/// Every item of a paged List: `page` is called with each page token (empty first) and
/// answers the items and the next token.
pub async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, tonic::Status>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (mut found, next) = page(token).await?;
        items.append(&mut found);
        if next.is_empty() {
            return Ok(items);
        }
        token = next;
    }
}
