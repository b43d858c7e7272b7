//! An in-process sandbox: any set of Slipway services, each on its own port 0 listener in
//! this test's runtime, with a connected channel per service.
//!
//! The sandbox does not know the service crates (that would make every service's tests
//! depend on every other service); a test passes each service's `serve` function:
//!
//! ```ignore
//! let mut sandbox = Sandbox::new();
//! sandbox.start("catalog", |listener, shutdown| slipway_catalog::serve(settings, listener, shutdown)).await?;
//! let projects = ProjectServiceClient::new(sandbox.channel("catalog").unwrap());
//! ```
//!
//! Services run as standalone ones do, so every service but identity needs
//! `[auth].identity_url` pointing at the identity started here (`sandbox.addr("identity")`)
//! and the `[auth].service_credential` identity was given; `tests/tests/sandbox.rs` shows
//! the wiring. To share identity's in-process resolver instead, build the services' mounts
//! with `slipway_identity::Identity::shared` and `slipway_service::Platform::shared`, as
//! `slipway dev` does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// What a service's `serve` receives as its shutdown future.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a sandbox service failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot bind a port for {service}: {source}")]
    Bind {
        service: String,
        source: std::io::Error,
    },
    #[error("{service} stopped with an error: {message}")]
    Service { service: String, message: String },
}

struct Running {
    name: String,
    addr: SocketAddr,
    channel: Channel,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// Services started in this process. Dropping it aborts them; [`Sandbox::shutdown`] stops
/// them gracefully and reports the first error.
#[derive(Default)]
pub struct Sandbox {
    services: Vec<Running>,
}

impl Sandbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds 127.0.0.1:0 and runs `serve(listener, shutdown)` in a task under `name`.
    pub async fn start<F, Fut, E>(
        &mut self,
        name: &str,
        serve: F,
    ) -> Result<SocketAddr, SandboxError>
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let bind_error = |source| SandboxError::Bind {
            service: name.to_owned(),
            source,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async {
            let _ = stopped.await;
        });
        let served = serve(listener, shutdown);
        let task = tokio::spawn(async move { served.await.map_err(|error| error.to_string()) });
        self.services.push(Running {
            name: name.to_owned(),
            addr,
            channel: crate::grpc::channel(addr),
            stop,
            task,
        });
        Ok(addr)
    }

    /// A channel to the service started as `name`.
    pub fn channel(&self, name: &str) -> Option<Channel> {
        self.find(name).map(|running| running.channel.clone())
    }

    /// The address of the service started as `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.find(name).map(|running| running.addr)
    }

    fn find(&self, name: &str) -> Option<&Running> {
        self.services.iter().find(|running| running.name == name)
    }

    /// Signals every service to stop and waits for each; the first failure is returned.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        let mut first_error = None;
        for running in std::mem::take(&mut self.services) {
            let _ = running.stop.send(());
            let outcome = match running.task.await {
                Ok(result) => result,
                Err(join_error) => Err(join_error.to_string()),
            };
            if let (Err(message), None) = (outcome, &first_error) {
                first_error = Some(SandboxError::Service {
                    service: running.name,
                    message,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for running in &self.services {
            running.task.abort();
        }
    }
}
