//! Small gRPC probes tests use against any Slipway server: reflection, health, and a call
//! of any method with an empty request.

use std::net::SocketAddr;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha as reflection_v1alpha;

/// A channel to `addr` that connects on first use, so it can be made before the server
/// accepts.
pub fn channel(addr: SocketAddr) -> Channel {
    // A SocketAddr always forms a valid URI.
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.connect_lazy())
        .unwrap_or_else(|_| unreachable!("socket addresses are valid URIs"))
}

/// The services a server lists through reflection v1, sorted.
pub async fn reflection_services(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let mut names = Vec::new();
    while let Some(response) = responses.message().await? {
        if let Some(MessageResponse::ListServicesResponse(list)) = response.message_response {
            names.extend(list.service.into_iter().map(|service| service.name));
        }
    }
    names.sort();
    Ok(names)
}

/// The services a server lists through reflection v1alpha (what older grpcurl speaks).
pub async fn reflection_services_v1alpha(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    use reflection_v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use reflection_v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut client =
        reflection_v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = reflection_v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let mut names = Vec::new();
    while let Some(response) = responses.message().await? {
        if let Some(AlphaResponse::ListServicesResponse(list)) = response.message_response {
            names.extend(list.service.into_iter().map(|service| service.name));
        }
    }
    names.sort();
    Ok(names)
}

/// The health status a server reports for `service` (`""` is the whole server).
pub async fn health(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}

/// Calls `path` (`/package.Service/Method`) with an empty request and returns the status
/// the server answered with (`Ok` answers become a status with code OK). An empty message
/// is a valid encoding of every proto3 request.
pub async fn call_with_empty_request(channel: Channel, path: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(error) = grpc.ready().await {
        return tonic::Status::unavailable(error.to_string());
    }
    let Ok(path) = http::uri::PathAndQuery::try_from(path) else {
        return tonic::Status::invalid_argument(format!("bad method path {path}"));
    };
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}
