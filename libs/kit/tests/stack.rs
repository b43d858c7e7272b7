#![allow(
    clippy::unwrap_used,
    reason = "a panic is how a test helper reports the unexpected"
)]

//! The kit's tower stack and lifecycle, seen from a real gRPC client over loopback.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use slipway_config::ServerSettings;
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::grpc;
use tokio::sync::oneshot;

/// A gRPC service whose every method sleeps for the duration named by the method
/// (`/test.v1.SleepService/Ms250` sleeps 250 ms) and then answers OK.
#[derive(Clone)]
struct SleepService;

impl tonic::server::NamedService for SleepService {
    const NAME: &'static str = "test.v1.SleepService";
}

impl tower::Service<http::Request<tonic::body::Body>> for SleepService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let millis: u64 = request
            .uri()
            .path()
            .rsplit("/Ms")
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(Sleep(millis), request).await)
        })
    }
}

/// The handler behind [`SleepService`]: tonic's own server machinery frames the answer.
struct Sleep(u64);

impl tonic::server::UnaryService<()> for Sleep {
    type Response = ();
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<()>, tonic::Status>> + Send>>;

    fn call(&mut self, _request: tonic::Request<()>) -> Self::Future {
        let millis = self.0;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok(tonic::Response::new(()))
        })
    }
}

struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), slipway_kit::KitError>>,
}

async fn start(settings: ServerSettings) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = GrpcServer::new(settings, Metrics::new("kit-test").unwrap())
        .add_service(SleepService)
        .own_package("slipway.catalog.v1", "the catalog is elsewhere");
    let served = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, served }
}

#[tokio::test]
async fn a_slow_handler_answers_deadline_exceeded() {
    let server = start(ServerSettings {
        request_timeout: Duration::from_millis(100),
        ..ServerSettings::default()
    })
    .await;
    let channel = grpc::channel(server.addr);
    let status =
        grpc::call_with_empty_request(channel.clone(), "/test.v1.SleepService/Ms2000").await;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let status = grpc::call_with_empty_request(channel, "/test.v1.SleepService/Ms0").await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_with_unavailable() {
    let server = start(ServerSettings {
        concurrency_limit: 1,
        ..ServerSettings::default()
    })
    .await;
    let channel = grpc::channel(server.addr);
    // Connect first so the slow call is in the handler before the second is sent.
    assert_eq!(
        grpc::call_with_empty_request(channel.clone(), "/test.v1.SleepService/Ms0")
            .await
            .code(),
        tonic::Code::Ok
    );
    // With one permit, whichever call arrives first is served and the other is shed. The
    // slow call is given a head start; on a loaded machine it may still lose the race (and
    // be the one shed), so the scenario is retried with a longer head start.
    let mut observed = Vec::new();
    for attempt in 1..=5u64 {
        let slow = tokio::spawn(grpc::call_with_empty_request(
            channel.clone(),
            "/test.v1.SleepService/Ms1500",
        ));
        tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
        let probe =
            grpc::call_with_empty_request(channel.clone(), "/test.v1.SleepService/Ms0").await;
        let slow = slow.await.unwrap();
        if probe.code() == tonic::Code::Unavailable && slow.code() == tonic::Code::Ok {
            observed.clear();
            break;
        }
        observed.push((probe.code(), slow.code()));
    }
    assert!(
        observed.is_empty(),
        "no attempt had the slow call served and the probe shed: {observed:?}"
    );
    // The permit is back once the slow call is done.
    let again = grpc::call_with_empty_request(channel, "/test.v1.SleepService/Ms0").await;
    assert_eq!(again.code(), tonic::Code::Ok, "{again:?}");
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let server = start(ServerSettings::default()).await;
    let channel = grpc::channel(server.addr);
    let first = grpc::call_with_empty_request(
        channel.clone(),
        "/slipway.catalog.v1.ProjectService/GetProject",
    )
    .await;
    let second =
        grpc::call_with_empty_request(channel, "/slipway.catalog.v1.ProjectService/GetProject")
            .await;
    assert_eq!(first.code(), tonic::Code::Unimplemented);
    assert!(
        first
            .message()
            .starts_with("slipway.catalog.v1.ProjectService/GetProject is not built yet: the catalog is elsewhere"),
        "{first:?}"
    );
    let id = |status: &tonic::Status| {
        status
            .metadata()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (first_id, second_id) = (id(&first), id(&second));
    assert!(first_id.is_some(), "{first:?}");
    assert_ne!(first_id, second_id);
}

#[tokio::test]
async fn unknown_services_answer_unimplemented() {
    let server = start(ServerSettings::default()).await;
    let status =
        grpc::call_with_empty_request(grpc::channel(server.addr), "/nobody.v1.Nothing/Do").await;
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn shutdown_lets_calls_in_flight_finish() {
    let server = start(ServerSettings::default()).await;
    let channel = grpc::channel(server.addr);
    assert_eq!(
        grpc::health(channel.clone(), "").await.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let in_flight = tokio::spawn(grpc::call_with_empty_request(
        channel,
        "/test.v1.SleepService/Ms1000",
    ));
    // The connection is already up (the health call above), so the call is on its way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap().code(), tonic::Code::Ok);
    server.served.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_calls_after_the_grace_period() {
    let server = start(ServerSettings {
        shutdown_grace: Duration::from_millis(200),
        request_timeout: Duration::from_secs(60),
        ..ServerSettings::default()
    })
    .await;
    let channel = grpc::channel(server.addr);
    let warm = grpc::call_with_empty_request(channel.clone(), "/test.v1.SleepService/Ms0").await;
    assert_eq!(warm.code(), tonic::Code::Ok);
    let _stuck = tokio::spawn(grpc::call_with_empty_request(
        channel,
        "/test.v1.SleepService/Ms30000",
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    server.stop.send(()).unwrap();
    server.served.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "serve returned after {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn grpc_web_over_http1_is_answered() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let server = start(ServerSettings::default()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // An empty message in a gRPC-Web frame: flag 0, length 0.
    let request = "POST /slipway.catalog.v1.ProjectService/GetProject HTTP/1.1\r\n\
                   Host: localhost\r\n\
                   Content-Type: application/grpc-web+proto\r\n\
                   X-Grpc-Web: 1\r\n\
                   Content-Length: 5\r\n\
                   Connection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&[0, 0, 0, 0, 0]).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(
        response.contains("content-type: application/grpc-web+proto"),
        "{response}"
    );
    assert!(response.contains("grpc-status: 12"), "{response}");
}

#[tokio::test]
async fn metrics_endpoint_counts_calls_by_method_and_code() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // Reserve a free port for the metrics endpoint, then let the server bind it.
    let metrics_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let server = start(ServerSettings {
        metrics_listen: metrics_addr.to_string(),
        ..ServerSettings::default()
    })
    .await;
    let channel = grpc::channel(server.addr);
    let ok = grpc::call_with_empty_request(channel.clone(), "/test.v1.SleepService/Ms0").await;
    assert_eq!(ok.code(), tonic::Code::Ok);
    let planned =
        grpc::call_with_empty_request(channel, "/slipway.catalog.v1.ProjectService/GetProject")
            .await;
    assert_eq!(planned.code(), tonic::Code::Unimplemented);

    let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = Vec::new();
    stream.read_to_end(&mut page).await.unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(
            "slipway_grpc_requests_total{code=\"0\",method=\"/test.v1.SleepService/Ms0\",service=\"kit-test\"} 1"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "slipway_grpc_requests_total{code=\"12\",method=\"/slipway.catalog.v1.ProjectService/GetProject\",service=\"kit-test\"} 1"
        ),
        "{page}"
    );
    assert!(
        page.contains("slipway_grpc_request_duration_seconds_bucket"),
        "{page}"
    );
}
