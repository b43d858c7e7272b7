//! Builds as the orchestrator asks for them: `BuildJob`s published on the `BUILDS` work
//! queue of a real NATS JetStream (`slipway_testkit::TestNats`: the server at
//! `SLIPWAY_TEST_NATS_URL`, else a throwaway `nats-server`), one build-runner worker on a
//! runtime of its own, and the time from publishing a job to receiving its `BuildResult`.
//!
//! - `examples/hello` with the `local` builder, from a local git repository: a cold build
//!   (a new cache key every time, so fetch, checkout, the build command — byte-compiling
//!   the app — and storing the artifact) and a cached one (the same key again: the commit
//!   resolved, the artifact reused);
//! - dispatch overhead: a job the runner answers without building anything (it names no
//!   repository, so the runner refuses it at validation), publish → result, p50/p99,
//!   beside the floor of a raw JetStream publish → consume → ack round trip on the same
//!   server, measured in the same run. The dispatch path crosses the queue twice (the job
//!   to the runner, the result back), the floor once.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_build_runner::{BuildSettings, worker};
use slipway_config::NatsSettings;
use slipway_events::{ConsumerSpec, EventBus, EventBusExt as _, StreamKind, subject};
use slipway_proto::build::v1 as build;
use slipway_testkit::TestNats;

use crate::echo::{self, Measure};
use crate::report::Figure;

/// Cold and cached builds measured (each the median of these).
const BUILDS: usize = 10;
/// Dispatch round trips before the measured ones.
const WARM_UP: usize = 50;
/// At most this many measured round trips per path.
const ROUND_TRIPS: usize = 5_000;
/// Longest one job may take before the scenario fails.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// The subject of the floor: captured by the `BUILDS` stream, consumed by no runner.
const FLOOR_SUBJECT: &str = "slipway.build.bench-floor";

pub async fn run(measure: &Measure) -> anyhow::Result<Vec<Figure>> {
    let nats = TestNats::start().await?;
    let settings = NatsSettings {
        url: nats.url().to_owned(),
        namespace: nats.namespace().to_owned(),
        ..NatsSettings::default()
    };
    let bus = slipway_events::connect(&settings).await?;
    let dir = std::env::temp_dir().join(format!("slipway-bench-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let outcome = async {
        let url = hello_repository(&dir)?;
        let runtime = echo::server_runtime("build-runner")?;
        let worker_bus = slipway_events::connect(&settings).await?;
        let builds = BuildSettings::under(dir.join("runner"));
        let worker = runtime
            .spawn(async move { worker::start(worker_bus, builds) })
            .await?;
        let figures = measure_builds(measure, Arc::clone(&bus), &url).await;
        drop(worker);
        runtime.shutdown_background();
        figures
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// `examples/hello` in a fresh git repository with one commit on `main`; its URL.
fn hello_repository(dir: &Path) -> anyhow::Result<String> {
    let repo = dir.join("hello");
    std::fs::create_dir_all(&repo)?;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    for entry in std::fs::read_dir(&example)? {
        let entry = entry?;
        std::fs::copy(entry.path(), repo.join(entry.file_name()))?;
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["commit", "-q", "-m", "hello"],
    ] {
        let status = Command::new("git")
            .current_dir(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .status()?;
        anyhow::ensure!(status.success(), "git {args:?} failed");
    }
    Ok(format!("file://{}", repo.display()))
}

fn job(url: &str, round: Option<usize>) -> build::BuildJob {
    build::BuildJob {
        job_id: uuid::Uuid::now_v7().to_string(),
        organization_id: "bench".into(),
        project_id: "bench".into(),
        environment_id: "bench".into(),
        service_id: "hello".into(),
        deployment_id: "bench".into(),
        source: Some(build::GitSource {
            repository_url: url.into(),
            r#ref: "main".into(),
            ..Default::default()
        }),
        builder: build::BuilderKind::Local as i32,
        local_build_command: vec!["python3 -m compileall -q . || true".into()],
        cache: round.map(|round| build::CacheKeyInputs {
            extra: [("bench_round".to_owned(), round.to_string())].into(),
            skip_lookup: false,
        }),
        create_time: Some(std::time::SystemTime::now().into()),
        ..Default::default()
    }
}

/// Publishes `job` and waits for its result; the round trip.
async fn round_trip(
    bus: &dyn EventBus,
    results: &mut slipway_events::Consumer,
    job: &build::BuildJob,
) -> anyhow::Result<(Duration, build::BuildResult)> {
    let started = Instant::now();
    bus.publish_proto(subject::BUILD_JOBS, &job.job_id, job)
        .await?;
    loop {
        let delivery = tokio::time::timeout(JOB_TIMEOUT, results.next())
            .await
            .map_err(|_| anyhow::anyhow!("no build result within {JOB_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the results consumer ended"))??;
        let result: build::BuildResult = delivery.decode()?;
        delivery.ack().await?;
        if result.job_id == job.job_id {
            return Ok((started.elapsed(), result));
        }
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)].as_secs_f64() * 1e6
}

async fn measure_builds(
    measure: &Measure,
    bus: Arc<dyn EventBus>,
    url: &str,
) -> anyhow::Result<Vec<Figure>> {
    let mut results = bus
        .consumer(
            ConsumerSpec::new(StreamKind::Builds, "bench-results")
                .filter(subject::BUILD_RESULTS)
                .prefetch(1),
        )
        .await?;
    let succeeded = |result: &build::BuildResult| -> anyhow::Result<()> {
        anyhow::ensure!(
            result.outcome == build::BuildOutcome::Succeeded as i32,
            "a bench build failed: {:?}",
            result.failure
        );
        Ok(())
    };

    // Cold: a new cache key each time. Cached: the first key again.
    let mut cold = Vec::new();
    for round in 0..BUILDS {
        let (took, result) = round_trip(bus.as_ref(), &mut results, &job(url, Some(round))).await?;
        succeeded(&result)?;
        anyhow::ensure!(!result.cache_hit, "a cold build was a cache hit");
        cold.push(took);
    }
    let mut cached = Vec::new();
    for _ in 0..BUILDS {
        let (took, result) = round_trip(bus.as_ref(), &mut results, &job(url, Some(0))).await?;
        succeeded(&result)?;
        anyhow::ensure!(result.cache_hit, "a repeated build was not a cache hit");
        cached.push(took);
    }

    // Dispatch: jobs refused at validation, one after the other.
    let budget = measure.duration.mul_f64(measure.rounds.max(1) as f64 / 2.0);
    let noop = || build::BuildJob {
        source: None,
        ..job(url, None)
    };
    for _ in 0..WARM_UP {
        round_trip(bus.as_ref(), &mut results, &noop()).await?;
    }
    let mut dispatch = Vec::new();
    let started = Instant::now();
    while dispatch.len() < ROUND_TRIPS && started.elapsed() < budget {
        let (took, result) = round_trip(bus.as_ref(), &mut results, &noop()).await?;
        anyhow::ensure!(
            result.outcome == build::BuildOutcome::Failed as i32,
            "a no-op job was built"
        );
        dispatch.push(took);
    }

    // Floor: publish → consume → ack on the same stream, one message in flight.
    let mut floor_consumer = bus
        .consumer(
            ConsumerSpec::new(StreamKind::Builds, "bench-floor")
                .filter(FLOOR_SUBJECT)
                .prefetch(1),
        )
        .await?;
    let payload = build::BuildResult::default();
    let mut floor = Vec::new();
    let mut sent = 0usize;
    let started = Instant::now();
    while floor.len() < ROUND_TRIPS + WARM_UP && started.elapsed() < budget {
        let id = format!("floor-{sent}-{}", uuid::Uuid::now_v7().simple());
        sent += 1;
        let began = Instant::now();
        bus.publish_proto(FLOOR_SUBJECT, &id, &payload).await?;
        let delivery = tokio::time::timeout(JOB_TIMEOUT, floor_consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("the floor message did not arrive"))?
            .ok_or_else(|| anyhow::anyhow!("the floor consumer ended"))??;
        delivery.ack().await?;
        floor.push(began.elapsed());
    }
    let floor: Vec<Duration> = floor.into_iter().skip(WARM_UP).collect();

    let mut floor = floor;
    let floor_scenario = "jetstream publish→consume (floor)";
    let floor_figures = [
        Figure::new(
            floor_scenario,
            "latency_p50",
            percentile(&mut floor, 0.5),
            "us",
        ),
        Figure::new(
            floor_scenario,
            "latency_p99",
            percentile(&mut floor, 0.99),
            "us",
        ),
    ];
    let scenario = "build dispatch no-op job→result";
    let figures = vec![
        Figure::new(
            "build local cold (examples/hello)",
            "latency_p50",
            percentile(&mut cold, 0.5) / 1e3,
            "ms",
        ),
        Figure::new(
            "build local cached (examples/hello)",
            "latency_p50",
            percentile(&mut cached, 0.5) / 1e3,
            "ms",
        ),
        floor_figures[0].clone(),
        floor_figures[1].clone(),
        Figure::new(scenario, "jobs", dispatch.len() as f64, "n"),
        Figure::new(
            scenario,
            "latency_p50",
            percentile(&mut dispatch, 0.5),
            "us",
        )
        .against(&floor_figures[0]),
        Figure::new(
            scenario,
            "latency_p99",
            percentile(&mut dispatch, 0.99),
            "us",
        )
        .against(&floor_figures[1]),
    ];
    for figure in &figures {
        figure.print();
    }
    if measure.verbose {
        eprintln!(
            "build: cold {cold:?}\nbuild: cached {cached:?}",
            cold = cold,
            cached = cached
        );
    }
    Ok(figures)
}
