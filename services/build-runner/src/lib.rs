#![forbid(unsafe_code)]
//! `slipway-build-runner`: Builds from a git commit to an image: consumes the BUILDS work queue, reports results.
//!
//! The build worker ([`worker`]) takes `slipway.build.v1.BuildJob`s from the `BUILDS` work
//! queue (several runners share it; each job runs once), fetches the commit with the git
//! CLI, builds it with one of three builders, streams the output to the `LOGS` stream and
//! publishes one `BuildResult` per job:
//!
//! - `local`: runs the service's build command in the checkout and keeps the directory as
//!   the artifact, cached by repository, commit and build settings;
//! - `buildah` ([`buildah`], [`image`]): an OCI image from the Dockerfile, with the
//!   runner's own containers.conf and vfs storage, pushed to the job's registry;
//! - `buildkit` ([`image`]): the same through `buildctl` and a `buildkitd`.
//!
//! Image builds are cached in the target repository itself ([`image::cache_tag`]): a job
//! whose cache key is already there is tagged and reported without building
//! ([`registry`] speaks the OCI distribution API for that).
//!
//! The worker records every job as a `Build` ([`store`]) as it starts, moves through its
//! phases and ends; `BuildService` ([`api`]) reads and cancels them.

pub mod api;
pub mod buildah;
pub mod builder;
pub mod git;
pub mod image;
pub mod logs;
pub mod registry;
pub mod settings;
pub mod store;
pub mod worker;

use std::future::Future;
use std::sync::{Arc, Mutex};

use slipway_kit::GrpcServer;
use slipway_service::{Platform, ServiceError};
use tokio::net::TcpListener;

pub use settings::{BuildSettings, BuilderChoice, Settings};
pub use worker::WorkerHandle;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-build-runner";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.build.v1"];

/// The gRPC services of [`PACKAGES`] built so far; the others answer `UNIMPLEMENTED`.
pub const BUILT: &[&str] = &["slipway.build.v1.BuildService"];

/// What the RPCs of [`PACKAGES`] not built yet answer, after the method name.
pub const NOT_BUILT_YET: &str = "this part of the build api is not built yet";

/// Adds this service to `server` and starts its build worker with the default `[builds]`
/// settings (state under the system's temporary directory), for the rest of the process.
/// Callers that own a data directory or stop the worker use [`mount_with`].
pub fn mount(server: GrpcServer, platform: &Platform) -> GrpcServer {
    let (server, worker) = mount_with(server, platform, BuildSettings::default());
    worker.detach();
    server
}

/// Adds `BuildService` to `server` and starts its build worker with `builds`, recording
/// builds in the platform's database (which must have [`store::Migrator`]'s migrations);
/// the worker runs as long as the returned handle lives. Must be called inside a Tokio
/// runtime.
pub fn mount_with(
    server: GrpcServer,
    platform: &Platform,
    builds: BuildSettings,
) -> (GrpcServer, WorkerHandle) {
    let store = store::Store::new(platform.db.clone());
    let worker = worker::start_with_store(Arc::clone(&platform.bus), builds, Some(store.clone()));
    let server = api::mount(
        server,
        Arc::clone(&platform.auth),
        store,
        Arc::clone(&platform.bus),
    );
    (
        server.own_package("slipway.build.v1", NOT_BUILT_YET),
        worker,
    )
}

/// Runs the service on `listener` until `shutdown` completes; the build worker stops with
/// it (builds in progress are killed and their jobs delivered again to another runner).
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let slot = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&slot);
    let builds = settings.builds.clone();
    let served = slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings.service,
        listener,
        shutdown,
        |server, platform| {
            let (server, worker) = mount_with(server, &platform, builds);
            if let Ok(mut slot) = keep.lock() {
                *slot = Some(worker);
            }
            server
        },
    )
    .await;
    if let Ok(mut slot) = slot.lock() {
        slot.take();
    }
    served
}
