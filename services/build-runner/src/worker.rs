//! The build worker: takes jobs from the `BUILDS` work queue and runs them.
//!
//! Every runner binds the same durable consumer ([`DURABLE`], filter
//! `slipway.build.jobs`), so the work queue hands each job to one runner. A runner only
//! asks for a job when one of its `[builds].concurrency` slots is free (the consumer pulls
//! one message at a time, and only when polled), so no job waits in a busy runner's buffer
//! while another runner is idle. While a job runs, its delivery is kept alive with
//! `in_progress()`; it is acknowledged only after its `BuildResult` is stored, so a runner
//! that dies mid-build leaves the job to be delivered again.
//!
//! Cancel: for the job's lifetime the runner follows `slipway.build.cancel.<job_id>` (core
//! NATS, as `BuildCancel` defines) and stops the build when a cancel arrives: the build's
//! processes are killed and the result says `BUILD_OUTCOME_CANCELED`. `CancelBuild` also
//! marks the job's `Build` record, so a job delivered again after its cancel (its runner
//! died) ends canceled at once. A job no runner has picked up yet has no record, so it
//! cannot be canceled through the API. Note that
//! the `BUILDS` stream captures `slipway.build.>`, so a cancel published through JetStream
//! is also stored there (unconsumed, until the stream's age limit); publishing it on core
//! NATS avoids that.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use slipway_events::{ConsumerSpec, Delivery, EventBus, EventBusExt, StreamKind, subject};
use slipway_proto::build::v1 as build;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument as _;

use crate::builder;
use crate::git::{self, GitError, Remote};
use crate::image::{self, ImageBuilder, ImageJob};
use crate::logs::{LogSink, LogWriter};
use crate::settings::{BuildSettings, BuilderChoice};
use crate::store::Store;

/// The durable consumer of build jobs, shared by every runner.
pub const DURABLE: &str = "build-runner-jobs";

/// How long a delivery may go without a heartbeat before the queue hands it to another
/// runner; heartbeats are sent every third of it.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The subject a job's cancel arrives on.
pub fn cancel_subject(job_id: &str) -> String {
    format!("slipway.build.cancel.{job_id}")
}

/// Keeps the worker running; dropping it stops the worker and every build in progress
/// (their processes are killed).
#[derive(Debug)]
pub struct WorkerHandle {
    task: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Lets the worker run for the rest of the process, without a handle.
    pub fn detach(mut self) {
        self.task.take();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the worker on `bus` with `settings`, keeping no `Build` records. Must be called
/// inside a Tokio runtime.
pub fn start(bus: Arc<dyn EventBus>, settings: BuildSettings) -> WorkerHandle {
    start_with_store(bus, settings, None)
}

/// Starts the worker on `bus` with `settings`, recording every job as a `Build` in
/// `store` as it starts, moves through its phases and ends. Must be called inside a Tokio
/// runtime.
pub fn start_with_store(
    bus: Arc<dyn EventBus>,
    settings: BuildSettings,
    store: Option<Store>,
) -> WorkerHandle {
    let task = tokio::spawn(run(bus, settings, store));
    WorkerHandle { task: Some(task) }
}

/// What every job of one worker shares.
pub(crate) struct Context {
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) settings: BuildSettings,
    /// Where `Build` records are kept; `None` for a worker started without a database.
    pub(crate) store: Option<Store>,
    /// Jobs running in this runner, so a redelivery of one of them is not built twice.
    running: Mutex<HashSet<String>>,
}

impl Context {
    /// Records that `job` reached `status` (a phase of a running build). A record that
    /// cannot be written is logged, never a reason to fail the build.
    pub(crate) async fn phase(&self, job: &build::BuildJob, status: build::BuildStatus) {
        if let Some(store) = &self.store
            && let Err(error) = store.set_status(&job.job_id, status).await
        {
            tracing::warn!(%error, job_id = %job.job_id, "build status not recorded");
        }
    }
}

async fn run(bus: Arc<dyn EventBus>, mut settings: BuildSettings, store: Option<Store>) {
    for dir in [&mut settings.work_dir, &mut settings.artifacts_dir] {
        if let Err(error) = std::fs::create_dir_all(&*dir) {
            tracing::error!(%error, dir = %dir.display(), "cannot create a build directory; builds will fail");
        }
        // Artifact paths are reported to agents: make them absolute.
        if let Ok(absolute) = std::fs::canonicalize(&*dir) {
            *dir = absolute;
        }
    }
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let context = Arc::new(Context {
        bus,
        settings,
        store,
        running: Mutex::new(HashSet::new()),
    });
    // Builds in progress live in this set: aborting the worker drops them (and kills
    // their processes).
    let mut builds = JoinSet::new();
    loop {
        let spec = ConsumerSpec::new(StreamKind::Builds, DURABLE)
            .filter(subject::BUILD_JOBS)
            .ack_wait(ACK_WAIT)
            .prefetch(1);
        let mut consumer = match context.bus.consumer(spec).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot consume build jobs; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(
            concurrency = context.settings.concurrency,
            "build-runner takes jobs"
        );
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            while builds.try_join_next().is_some() {}
            match consumer.next().await {
                None => break,
                Some(Err(error)) => {
                    tracing::debug!(%error, "build job delivery failed");
                }
                Some(Ok(delivery)) => {
                    let context = Arc::clone(&context);
                    builds.spawn(async move {
                        handle(context, delivery).await;
                        drop(slot);
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one delivery to its end: build, publish the result, acknowledge.
async fn handle(context: Arc<Context>, delivery: Delivery) {
    let job: build::BuildJob = match delivery.decode() {
        Ok(job) => job,
        Err(error) => {
            tracing::warn!(%error, "undecodable build job dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    let fresh = context
        .running
        .lock()
        .map(|mut running| running.insert(job.job_id.clone()))
        .unwrap_or(true);
    if !fresh {
        // A redelivery of a job this runner is building: the running one settles it.
        tracing::debug!(job_id = %job.job_id, "build job already running here");
        return;
    }
    let span = tracing::info_span!("build", job_id = %job.job_id, service_id = %job.service_id);
    delivery.set_parent_of(&span);
    let delivery = Arc::new(delivery);
    let heartbeat = {
        let delivery = Arc::clone(&delivery);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ACK_WAIT / 3).await;
                if let Err(error) = delivery.in_progress().await {
                    tracing::debug!(%error, "build job heartbeat failed");
                }
            }
        })
    };
    let result = execute(&context, &job).instrument(span).await;
    let published = publish_result(context.bus.as_ref(), &result).await;
    heartbeat.abort();
    if published {
        if let Err(error) = delivery.ack().await {
            tracing::warn!(%error, job_id = %job.job_id, "build job not acknowledged; it may be delivered again (its result is deduplicated)");
        }
    } else {
        let _ = delivery.nack(Some(Duration::from_secs(5))).await;
    }
    if let Ok(mut running) = context.running.lock() {
        running.remove(&job.job_id);
    }
}

/// Publishes `result`, retrying for about a minute: the orchestrator waits for it.
async fn publish_result(bus: &dyn EventBus, result: &build::BuildResult) -> bool {
    let id = format!("{}.result", result.job_id);
    for attempt in 1..=20u64 {
        match bus.publish_proto(subject::BUILD_RESULTS, &id, result).await {
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(%error, attempt, job_id = %result.job_id, "build result not published; retrying");
                tokio::time::sleep(Duration::from_millis(250 * attempt.min(12))).await;
            }
        }
    }
    false
}

/// Why a build did not succeed, as the result will say.
pub(crate) struct Failure {
    pub(crate) outcome: build::BuildOutcome,
    pub(crate) reason: build::BuildFailureReason,
    pub(crate) step: u32,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn failed(reason: build::BuildFailureReason, message: impl Into<String>) -> Self {
        Self {
            outcome: build::BuildOutcome::Failed,
            reason,
            step: 0,
            message: message.into(),
        }
    }
}

impl From<GitError> for Failure {
    fn from(error: GitError) -> Self {
        let reason = match error {
            GitError::RepositoryNotFound { .. } => build::BuildFailureReason::RepositoryNotFound,
            GitError::RefNotFound { .. } | GitError::CommitNotFound { .. } => {
                build::BuildFailureReason::CommitNotFound
            }
            GitError::Git { .. } => build::BuildFailureReason::Internal,
        };
        Self::failed(reason, error.to_string())
    }
}

/// What a build made.
pub(crate) enum Artifact {
    /// The local builder's directory.
    Directory(PathBuf),
    /// An image pushed to the job's registry.
    Image { reference: String, digest: String },
}

/// A finished artifact.
pub(crate) struct Success {
    pub(crate) artifact: Artifact,
    pub(crate) cache_hit: bool,
}

/// What a build has reached so far, kept outside its future so a timeout or a cancel
/// (which drop the future) still reports the timings and cache key.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) cache_key: String,
    pub(crate) builder: build::BuilderKind,
    pub(crate) fetch: Option<Duration>,
    pub(crate) build: Option<Duration>,
    pub(crate) push: Option<Duration>,
}

/// Runs one job to a result, enforcing its timeout and honouring its cancel.
async fn execute(context: &Context, job: &build::BuildJob) -> build::BuildResult {
    let started = Instant::now();
    let start_time = SystemTime::now();
    let sink = LogSink::start(Arc::clone(&context.bus), job);
    let log = sink.writer();
    let progress = Mutex::new(Progress::default());
    let timeout = job_timeout(&context.settings, job);
    let scratch = context.settings.work_dir.join(scratch_name(&job.job_id));

    let mut cancel = if is_token(&job.job_id) {
        match context.bus.subscribe(&cancel_subject(&job.job_id)).await {
            Ok(subscription) => Some(subscription),
            Err(error) => {
                tracing::warn!(%error, "cannot follow this build's cancel subject");
                None
            }
        }
    } else {
        None
    };
    let canceled = async {
        match cancel.as_mut() {
            Some(subscription) => loop {
                match subscription.next().await {
                    Some(message) => {
                        let reason = message
                            .decode::<build::BuildCancel>()
                            .map(|c| c.reason)
                            .unwrap_or_default();
                        break reason;
                    }
                    None => std::future::pending::<()>().await,
                }
            },
            None => std::future::pending().await,
        }
    };

    // Recorded after the cancel subscription is in place: a cancel requested before this
    // point is in the record, one requested after arrives on the subscription.
    let canceled_early = match &context.store {
        Some(store) => match store
            .start(&record_of(job, start_time, context.settings.builder))
            .await
        {
            Ok(stored) if stored.cancel_requested => Some(stored.cancel_reason),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "build not recorded; building anyway");
                None
            }
        },
        None => None,
    };
    let canceled = async move {
        match canceled_early {
            Some(reason) => reason,
            None => canceled.await,
        }
    };

    let outcome = tokio::select! {
        outcome = build(context, job, &log, &progress, &scratch) => outcome,
        () = tokio::time::sleep(timeout) => Err(Failure {
            outcome: build::BuildOutcome::TimedOut,
            reason: build::BuildFailureReason::Timeout,
            step: 0,
            message: format!("the build ran longer than its timeout of {} s", timeout.as_secs()),
        }),
        reason = canceled => Err(Failure {
            outcome: build::BuildOutcome::Canceled,
            reason: build::BuildFailureReason::Canceled,
            step: 0,
            message: if reason.trim().is_empty() {
                "the build was canceled".to_owned()
            } else {
                format!("the build was canceled: {}", reason.chars().take(256).collect::<String>())
            },
        }),
    };
    drop(cancel);
    image::reap(&context.settings.buildah_runtime, &scratch).await;
    if let Err(error) = tokio::fs::remove_dir_all(&scratch).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, dir = %scratch.display(), "cannot remove a build's work directory");
    }

    let progress = progress.into_inner().unwrap_or_default();
    let builder_ran = progress.builder;
    let total = started.elapsed();
    let queued = job
        .create_time
        .and_then(|t| SystemTime::try_from(t).ok())
        .and_then(|created| start_time.duration_since(created).ok());
    let mut result = build::BuildResult {
        job_id: job.job_id.clone(),
        organization_id: job.organization_id.clone(),
        environment_id: job.environment_id.clone(),
        service_id: job.service_id.clone(),
        deployment_id: job.deployment_id.clone(),
        cache_key: progress.cache_key,
        timings: Some(build::BuildTimings {
            queued: queued.and_then(|d| d.try_into().ok()),
            fetch: progress.fetch.and_then(|d| d.try_into().ok()),
            build: progress.build.and_then(|d| d.try_into().ok()),
            push: progress.push.and_then(|d| d.try_into().ok()),
            total: total.try_into().ok(),
        }),
        start_time: Some(start_time.into()),
        end_time: Some(SystemTime::now().into()),
        ..Default::default()
    };
    match outcome {
        Ok(success) => {
            match success.artifact {
                Artifact::Directory(path) => {
                    log.info(&format!(
                        "build succeeded in {} ms: artifact {}",
                        total.as_millis(),
                        path.display()
                    ));
                    result.local_artifact_path = path.display().to_string();
                }
                Artifact::Image { reference, digest } => {
                    log.info(&format!(
                        "build succeeded in {} ms: image {reference} ({digest})",
                        total.as_millis(),
                    ));
                    result.image_reference = reference;
                    result.image_digest = digest;
                }
            }
            result.outcome = build::BuildOutcome::Succeeded as i32;
            result.cache_hit = success.cache_hit;
        }
        Err(failure) => {
            log.error(&format!("build failed: {}", failure.message));
            result.outcome = failure.outcome as i32;
            result.failure = Some(build::BuildFailure {
                reason: failure.reason as i32,
                step: failure.step,
                message: failure.message.chars().take(1024).collect(),
            });
        }
    }
    tracing::info!(
        outcome = ?build::BuildOutcome::try_from(result.outcome).unwrap_or_default(),
        cache_hit = result.cache_hit,
        ms = total.as_millis() as u64,
        "build ended"
    );
    drop(log);
    sink.finish().await;
    if let Some(store) = &context.store {
        let mut record = record_of(job, start_time, context.settings.builder);
        finish_record(&mut record, &result, builder_ran);
        if let Err(error) = store.save(&record).await {
            tracing::warn!(%error, "build end not recorded");
        }
    }
    result
}

/// The `Build` record of `job` as a runner starts it (with `default`, the builder it runs
/// with when the job names none).
fn record_of(
    job: &build::BuildJob,
    start_time: SystemTime,
    default: BuilderChoice,
) -> build::Build {
    let builder = choose_builder(default, job).kind();
    let mut source = job.source.clone().unwrap_or_default();
    source.repository_url = git::redact(&source.repository_url);
    build::Build {
        id: job.job_id.clone(),
        organization_id: job.organization_id.clone(),
        project_id: job.project_id.clone(),
        environment_id: job.environment_id.clone(),
        service_id: job.service_id.clone(),
        deployment_id: job.deployment_id.clone(),
        status: build::BuildStatus::Queued as i32,
        source: Some(source),
        dockerfile_path: job.dockerfile_path.clone(),
        builder: builder as i32,
        create_time: job.create_time.or(Some(start_time.into())),
        start_time: Some(start_time.into()),
        ..Default::default()
    }
}

/// Copies the outcome of `result` into the record.
fn finish_record(
    record: &mut build::Build,
    result: &build::BuildResult,
    builder: build::BuilderKind,
) {
    record.status = match build::BuildOutcome::try_from(result.outcome).unwrap_or_default() {
        build::BuildOutcome::Succeeded => build::BuildStatus::Succeeded,
        build::BuildOutcome::Canceled => build::BuildStatus::Canceled,
        build::BuildOutcome::TimedOut => build::BuildStatus::TimedOut,
        build::BuildOutcome::Failed | build::BuildOutcome::Unspecified => {
            build::BuildStatus::Failed
        }
    } as i32;
    if builder != build::BuilderKind::Unspecified {
        record.builder = builder as i32;
    }
    record.image_reference = result.image_reference.clone();
    record.image_digest = result.image_digest.clone();
    record.local_artifact_path = result.local_artifact_path.clone();
    record.cache_hit = result.cache_hit;
    record.cache_key = result.cache_key.clone();
    record.failure = result.failure.clone();
    record.timings = result.timings;
    record.end_time = result.end_time;
}

/// The job's timeout: its own, or the runner's default, never above the runner's cap.
fn job_timeout(settings: &BuildSettings, job: &build::BuildJob) -> Duration {
    job.timeout
        .and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or_else(|| settings.timeout())
        .min(settings.max_timeout())
}

/// Whether `id` can be one subject token (the cancel subject's last one).
pub(crate) fn is_token(id: &str) -> bool {
    !id.is_empty()
        && !id
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
}

/// A directory name for the job's scratch space that no job id can escape from.
fn scratch_name(job_id: &str) -> String {
    let safe: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    format!("{safe}-{}", uuid::Uuid::now_v7().simple())
}

/// Whether `path` is a relative path inside the checkout (no `..`, not absolute).
fn is_inside(path: &str) -> bool {
    !path.starts_with('/') && !path.split(['/', '\\']).any(|part| part == "..")
}

/// The builder a job runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    Local,
    Image(ImageBuilder),
}

impl Chosen {
    fn kind(self) -> build::BuilderKind {
        match self {
            Self::Local => build::BuilderKind::Local,
            Self::Image(ImageBuilder::Buildah) => build::BuilderKind::Buildah,
            Self::Image(ImageBuilder::Buildkit) => build::BuilderKind::Buildkit,
        }
    }
}

/// The job's builder: its own, or the runner's default when it names none.
fn choose_builder(default: BuilderChoice, job: &build::BuildJob) -> Chosen {
    let requested = build::BuilderKind::try_from(job.builder).unwrap_or_default();
    match requested {
        build::BuilderKind::Local => Chosen::Local,
        build::BuilderKind::Buildah => Chosen::Image(ImageBuilder::Buildah),
        build::BuilderKind::Buildkit => Chosen::Image(ImageBuilder::Buildkit),
        build::BuilderKind::Unspecified => match default {
            BuilderChoice::Local => Chosen::Local,
            BuilderChoice::Buildah => Chosen::Image(ImageBuilder::Buildah),
            BuilderChoice::Buildkit => Chosen::Image(ImageBuilder::Buildkit),
        },
    }
}

/// Validation, the commit, the cache key, then the chosen builder.
async fn build(
    context: &Context,
    job: &build::BuildJob,
    log: &LogWriter,
    progress: &Mutex<Progress>,
    scratch: &Path,
) -> Result<Success, Failure> {
    let source = job.source.clone().unwrap_or_default();
    let invalid = |message: &str| {
        Failure::failed(
            build::BuildFailureReason::Internal,
            format!("the build job is invalid: {message}"),
        )
    };
    if source.repository_url.trim().is_empty() {
        return Err(invalid("it has no repository url"));
    }
    if !is_inside(&source.root_path) {
        return Err(invalid("its root path must be relative, without '..'"));
    }
    if !is_inside(&job.dockerfile_path) {
        return Err(invalid(
            "its dockerfile path must be relative, without '..'",
        ));
    }
    if !source.commit_sha.is_empty() && !git::is_commit_id(&source.commit_sha) {
        return Err(invalid("its commit is not a full commit id"));
    }
    let chosen = choose_builder(context.settings.builder, job);
    if let Ok(mut progress) = progress.lock() {
        progress.builder = chosen.kind();
    }
    let image = match chosen {
        Chosen::Local => None,
        Chosen::Image(builder) => Some((builder, image::check(context, job, builder).await?)),
    };
    context.phase(job, build::BuildStatus::Fetching).await;

    let remote = Remote::new(
        &source.repository_url,
        job.git_credentials.as_ref(),
        scratch,
    )?;
    let fetch_started = Instant::now();
    let commit = if source.commit_sha.is_empty() {
        let reference = if source.r#ref.is_empty() {
            "the default branch"
        } else {
            source.r#ref.as_str()
        };
        log.info(&format!(
            "resolving {reference} of {}",
            remote.display_url()
        ));
        let commit = remote.resolve(&source.r#ref, None).await?;
        log.info(&format!("{reference} is at commit {commit}"));
        commit
    } else {
        remote.resolve("", Some(&source.commit_sha)).await?
    };
    let family = if image.is_some() { "image" } else { "local" };
    let key = builder::cache_key(job, &commit, family);
    if let Ok(mut progress) = progress.lock() {
        progress.cache_key = key.clone();
    }
    match image {
        Some((builder, (registry, tag))) => {
            image::build(ImageJob {
                context,
                job,
                log,
                progress,
                scratch,
                remote: &remote,
                commit: &commit,
                key: &key,
                registry,
                tag,
                builder,
            })
            .await
        }
        None => {
            local(
                context,
                job,
                log,
                progress,
                scratch,
                &remote,
                &commit,
                &key,
                fetch_started,
            )
            .await
        }
    }
}

/// The local builder: cache lookup in the artifacts directory, checkout, build command.
#[allow(clippy::too_many_arguments)]
async fn local(
    context: &Context,
    job: &build::BuildJob,
    log: &LogWriter,
    progress: &Mutex<Progress>,
    scratch: &Path,
    remote: &Remote,
    commit: &str,
    key: &str,
    fetch_started: Instant,
) -> Result<Success, Failure> {
    let source = job.source.clone().unwrap_or_default();
    let artifact = context.settings.artifacts_dir.join(key);
    let artifact_path = artifact.join(&source.root_path);
    let skip_lookup = job.cache.as_ref().is_some_and(|c| c.skip_lookup);
    if !skip_lookup && tokio::fs::try_exists(&artifact).await.unwrap_or(false) {
        log.info(&format!(
            "cache hit: commit {commit} was already built with these settings (cache key {key}); reusing {}",
            artifact_path.display()
        ));
        return Ok(Success {
            artifact: Artifact::Directory(artifact_path),
            cache_hit: true,
        });
    }

    log.info(&format!(
        "fetching commit {commit} of {}",
        remote.display_url()
    ));
    let checkout = scratch.join("checkout");
    remote.fetch(&checkout, commit, log).await?;
    let fetched = fetch_started.elapsed();
    if let Ok(mut progress) = progress.lock() {
        progress.fetch = Some(fetched);
    }
    log.info(&format!(
        "fetched commit {commit} in {} ms",
        fetched.as_millis()
    ));

    let root = checkout.join(&source.root_path);
    if !tokio::fs::metadata(&root).await.is_ok_and(|m| m.is_dir()) {
        return Err(Failure {
            step: 1,
            ..Failure::failed(
                build::BuildFailureReason::StepFailed,
                format!(
                    "root path {:?} is not a directory in commit {commit}",
                    source.root_path
                ),
            )
        });
    }
    context.phase(job, build::BuildStatus::Building).await;
    let build_started = Instant::now();
    if job.local_build_command.is_empty() {
        log.info("no build command: the checkout is the artifact");
    } else {
        log.info(&format!(
            "step 1/1: running build command {:?}",
            job.local_build_command.join(" ")
        ));
        let env: HashMap<String, String> = job.build_args.clone();
        builder::run_command(&job.local_build_command, &root, &env, log)
            .await
            .map_err(|error| Failure {
                step: 1,
                ..Failure::failed(build::BuildFailureReason::StepFailed, error.to_string())
            })?;
        let took = build_started.elapsed();
        if let Ok(mut progress) = progress.lock() {
            progress.build = Some(took);
        }
        log.info(&format!(
            "build command succeeded in {} ms",
            took.as_millis()
        ));
    }

    if skip_lookup && tokio::fs::try_exists(&artifact).await.unwrap_or(false) {
        // Asked to rebuild: the new artifact replaces the one stored under the key.
        let aside = context
            .settings
            .artifacts_dir
            .join(format!(".replaced-{}", uuid::Uuid::now_v7().simple()));
        if tokio::fs::rename(&artifact, &aside).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&aside).await;
        }
    }
    match builder::promote(&checkout, &artifact).await {
        Ok(true) => {}
        Ok(false) => {
            log.info("another build of the same cache key finished first; using its artifact")
        }
        Err(error) => {
            return Err(Failure::failed(
                build::BuildFailureReason::Internal,
                format!("cannot store the artifact: {error}"),
            ));
        }
    }
    Ok(Success {
        artifact: Artifact::Directory(artifact_path),
        cache_hit: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_default_and_are_capped() {
        let settings = BuildSettings {
            timeout_secs: 60,
            max_timeout_secs: 120,
            ..BuildSettings::default()
        };
        let mut job = build::BuildJob::default();
        assert_eq!(job_timeout(&settings, &job), Duration::from_secs(60));
        job.timeout = Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        });
        assert_eq!(job_timeout(&settings, &job), Duration::from_secs(5));
        job.timeout = Some(prost_types::Duration {
            seconds: 500,
            nanos: 0,
        });
        assert_eq!(job_timeout(&settings, &job), Duration::from_secs(120));
    }

    #[test]
    fn root_paths_stay_inside() {
        assert!(is_inside(""));
        assert!(is_inside("apps/api"));
        assert!(!is_inside("/etc"));
        assert!(!is_inside("a/../../b"));
    }
}
