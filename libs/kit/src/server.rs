//! [`GrpcServer`]: builder and lifecycle of one gRPC server process.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use slipway_config::ServerSettings;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;

use crate::layers;
use crate::planned::add_planned_service;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot use the listen address: {0}")]
    Listener(#[source] std::io::Error),
}

/// A gRPC server under construction. See the crate docs for the lifecycle.
pub struct GrpcServer {
    settings: ServerSettings,
    metrics: Metrics,
    routes: RoutesBuilder,
    /// Services added with [`GrpcServer::add_service`]: their health is reported SERVING
    /// and reflection lists them.
    served: Vec<String>,
    /// Services of owned packages not built yet, with the sentence they answer.
    planned: Vec<(String, String)>,
}

impl GrpcServer {
    pub fn new(settings: ServerSettings, metrics: Metrics) -> Self {
        Self {
            settings,
            metrics,
            routes: RoutesBuilder::default(),
            served: Vec::new(),
            planned: Vec::new(),
        }
    }

    /// Serves an implemented gRPC service.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Error = Infallible,
                Response = http::Response<tonic::body::Body>,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.served.push(S::NAME.to_owned());
        self.routes.add_service(service);
        self
    }

    /// Declares that this server owns the API package `package` (e.g.
    /// `slipway.catalog.v1`): each of its services not added with
    /// [`GrpcServer::add_service`] (before or after this call) answers every method with
    /// `UNIMPLEMENTED` and `sentence`, which says what is missing.
    pub fn own_package(mut self, package: &str, sentence: &str) -> Self {
        for service in slipway_proto::services_in_package(package) {
            self.planned.push((service, sentence.to_owned()));
        }
        self
    }

    /// The services reflection lists, in order: implemented and planned ones, then health
    /// and reflection themselves.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.served.clone();
        for (name, _) in &self.planned {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names.push("grpc.health.v1.Health".to_owned());
        names.push("grpc.reflection.v1.ServerReflection".to_owned());
        names.push("grpc.reflection.v1alpha.ServerReflection".to_owned());
        names
    }

    /// Serves on `listener` until `shutdown` completes, then turns health NOT_SERVING,
    /// stops accepting, and waits up to `server.shutdown_grace` for calls in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), KitError> {
        let local_addr = listener.local_addr().map_err(KitError::Listener)?;
        let names = self.service_names();
        let grace = self.settings.shutdown_grace;

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(slipway_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            for name in &names {
                builder = builder.with_service_name(name.clone());
            }
            builder
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let mut routes: Routes = routes.routes();
        for (service, sentence) in &self.planned {
            if !self.served.contains(service) {
                add_planned_service(routes.axum_router_mut(), service, sentence);
            }
        }

        // The empty name is the whole server, what a plain `grpc_health_probe` asks about.
        health_reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        for name in &self.served {
            health_reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }

        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        if !self.settings.metrics_listen.is_empty() {
            let metrics_listener = tokio::net::TcpListener::bind(&self.settings.metrics_listen)
                .await
                .map_err(KitError::Listener)?;
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let stopped = async {
                    let _ = metrics_stopped.await;
                };
                if let Err(error) =
                    slipway_telemetry::metrics::serve_metrics(metrics, metrics_listener, stopped)
                        .await
                {
                    tracing::warn!(%error, "the metrics endpoint stopped");
                }
            });
        }
        let server = tonic::transport::Server::builder()
            // gRPC-Web and plain HTTP/1.1 callers (browsers) are served on the same port.
            .accept_http1(true)
            .layer(layers::stack(&self.settings, self.metrics))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // Replies go out at once: without TCP_NODELAY a response spanning several
                // segments waits on the client's delayed ACK (tens of ms on a list page).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    // A dropped sender also means stop: the owner is gone.
                    let _ = stopped.await;
                },
            );
        let mut server = tokio::spawn(server);
        println!("listening on {local_addr}");
        tracing::info!(%local_addr, services = ?names, "serving");

        tokio::select! {
            result = &mut server => return flatten(result),
            () = shutdown => {}
        }

        // Load balancers and probes see NOT_SERVING first and stop sending new calls,
        // while the calls already here are allowed to finish.
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in &self.served {
            health_reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = stop_accepting.send(());
        let _ = stop_metrics.send(());
        match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => flatten(result),
            Err(_) => {
                tracing::warn!(
                    grace_ms = duration_ms(grace),
                    "calls still open after the shutdown grace period; closing them"
                );
                server.abort();
                Ok(())
            }
        }
    }
}

fn flatten(
    result: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), KitError> {
    match result {
        Ok(inner) => inner.map_err(KitError::from),
        // The server task only ends by returning; a join error means it was aborted above
        // or panicked, and a panic has already been reported by the runtime.
        Err(_) => Ok(()),
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
