//! The build worker on real NATS JetStream with real git repositories: jobs in, results
//! and logs out, the way the orchestrator sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use slipway_build_runner::{BuildSettings, WorkerHandle, worker};
use slipway_config::NatsSettings;
use slipway_events::{ConsumerSpec, EventBusExt as _, StreamKind, subject};
use slipway_proto::build::v1 as build;
use slipway_proto::logs::v1 as logs;

mod common;

use common::{ENV, Harness, ORG, SERVICE, bus_of, git};

impl Harness {
    /// A runner with its own state directory `name` and its own connection.
    async fn runner(&self, name: &str, concurrency: usize) -> (WorkerHandle, PathBuf) {
        let state = self.dir.path().join(name);
        let mut settings = BuildSettings::under(&state);
        settings.concurrency = concurrency;
        let handle = worker::start(bus_of(&self.nats).await, settings);
        (handle, state.join("artifacts"))
    }

    async fn result(&mut self, within: Duration) -> build::BuildResult {
        self.results(1, within).await.into_values().next().unwrap()
    }

    /// Every log line published for `job_id` so far, in stream order.
    async fn logs(&self, job_id: &str) -> Vec<logs::LogLine> {
        let durable = format!("logs-{}", uuid::Uuid::now_v7().simple());
        let mut consumer = self
            .bus
            .consumer(
                ConsumerSpec::new(StreamKind::Logs, durable.clone())
                    .filter(subject::logs(ORG, ENV, SERVICE).unwrap())
                    .prefetch(64),
            )
            .await
            .unwrap();
        let mut lines = Vec::new();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await
        {
            let batch: logs::LogBatch = delivery.decode().unwrap();
            assert_eq!(batch.producer, "build-runner");
            assert_eq!(batch.organization_id, ORG);
            delivery.ack().await.unwrap();
            lines.extend(batch.lines.into_iter().filter(|l| l.instance == job_id));
        }
        drop(consumer);
        let _ = self.bus.delete_consumer(StreamKind::Logs, &durable).await;
        lines
    }
}

fn messages(lines: &[logs::LogLine]) -> Vec<String> {
    lines.iter().map(|l| l.message.clone()).collect()
}

/// A repository with an app under `app/` on branch `main`; returns its URL and the commit.
fn repository(dir: &Path) -> (String, String) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("app")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("app/main.sh"), "#!/bin/sh\necho hello\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (format!("file://{}", repo.display()), commit)
}

fn job(url: &str, command: &str) -> build::BuildJob {
    build::BuildJob {
        job_id: uuid::Uuid::now_v7().to_string(),
        organization_id: ORG.into(),
        project_id: "proj1".into(),
        environment_id: ENV.into(),
        service_id: SERVICE.into(),
        deployment_id: "dep1".into(),
        source: Some(build::GitSource {
            repository_url: url.into(),
            r#ref: "main".into(),
            root_path: "app".into(),
            ..Default::default()
        }),
        local_build_command: if command.is_empty() {
            Vec::new()
        } else {
            vec![command.into()]
        },
        create_time: Some(std::time::SystemTime::now().into()),
        ..Default::default()
    }
}

fn reason(result: &build::BuildResult) -> (build::BuildFailureReason, String) {
    let failure = result.failure.clone().expect("a failure");
    (
        build::BuildFailureReason::try_from(failure.reason).unwrap(),
        failure.message,
    )
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn builds_a_commit_then_reuses_it_from_the_cache() {
    let mut h = Harness::new().await;
    let (url, commit) = repository(h.dir.path());
    let (_runner, artifacts) = h.runner("r1", 2).await;

    let command =
        "mkdir -p out && echo built > out/result.txt && echo compiling && echo warning >&2";
    let first = job(&url, command);
    h.publish(&first).await;
    let result = h.result(LONG).await;
    assert_eq!(result.job_id, first.job_id);
    assert_eq!(
        result.outcome,
        build::BuildOutcome::Succeeded as i32,
        "{result:?}"
    );
    assert!(!result.cache_hit);
    assert_eq!(result.cache_key.len(), 64);
    let path = PathBuf::from(&result.local_artifact_path);
    assert!(path.is_absolute());
    assert!(path.starts_with(std::fs::canonicalize(&artifacts).unwrap()));
    assert!(path.ends_with("app"));
    assert_eq!(
        std::fs::read_to_string(path.join("out/result.txt")).unwrap(),
        "built\n"
    );
    assert!(path.join("main.sh").exists());
    assert_eq!(result.deployment_id, "dep1");
    assert!(result.timings.as_ref().unwrap().build.is_some());
    let lines = messages(&h.logs(&first.job_id).await);
    assert!(lines.iter().any(|l| l.contains(&commit)), "{lines:#?}");
    // file:// serves a commit by id: the shallow fetch worked, no fallback to a full one.
    assert!(
        !lines.iter().any(|l| l.contains("shallow fetch")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("step 1/1: running build command"))
    );
    assert!(lines.iter().any(|l| l == "compiling"));
    assert!(lines.iter().any(|l| l == "warning"));

    // The same commit and settings again, this time by commit id: a cache hit.
    let mut second = job(&url, command);
    second.source.as_mut().unwrap().commit_sha = commit.clone();
    h.publish(&second).await;
    let again = h.result(LONG).await;
    assert_eq!(
        again.outcome,
        build::BuildOutcome::Succeeded as i32,
        "{again:?}"
    );
    assert!(again.cache_hit);
    assert_eq!(again.cache_key, result.cache_key);
    assert_eq!(again.local_artifact_path, result.local_artifact_path);
    let lines = messages(&h.logs(&second.job_id).await);
    assert!(lines.iter().any(|l| l.contains("cache hit")), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("running build command")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l == "compiling"), "{lines:#?}");

    // Another build command is another key: built again.
    let third = job(&url, "");
    h.publish(&third).await;
    let other = h.result(LONG).await;
    assert_eq!(
        other.outcome,
        build::BuildOutcome::Succeeded as i32,
        "{other:?}"
    );
    assert!(!other.cache_hit);
    assert_ne!(other.cache_key, result.cache_key);
    assert!(
        !PathBuf::from(&other.local_artifact_path)
            .join("out")
            .exists()
    );
}

#[tokio::test]
async fn failures_say_why() {
    let mut h = Harness::new().await;
    let (url, _) = repository(h.dir.path());
    let (_runner, _) = h.runner("r1", 4).await;

    let missing_repo = job("file:///nonexistent/slipway/repo", "true");
    let mut missing_commit = job(&url, "true");
    missing_commit.source.as_mut().unwrap().commit_sha =
        "0123456789abcdef0123456789abcdef01234567".into();
    let mut missing_branch = job(&url, "true");
    missing_branch.source.as_mut().unwrap().r#ref = "no-such-branch".into();
    let failing = job(&url, "echo before; exit 3");
    let mut image = job(&url, "true");
    image.builder = build::BuilderKind::Buildah as i32;
    for job in [
        &missing_repo,
        &missing_commit,
        &missing_branch,
        &failing,
        &image,
    ] {
        h.publish(job).await;
    }
    let results = h.results(5, LONG).await;
    let of = |job: &build::BuildJob| results[&job.job_id].clone();

    let r = of(&missing_repo);
    assert_eq!(r.outcome, build::BuildOutcome::Failed as i32);
    let (why, message) = reason(&r);
    assert_eq!(
        why,
        build::BuildFailureReason::RepositoryNotFound,
        "{message}"
    );
    assert!(
        message.contains("file:///nonexistent/slipway/repo"),
        "{message}"
    );

    let (why, message) = reason(&of(&missing_commit));
    assert_eq!(why, build::BuildFailureReason::CommitNotFound, "{message}");
    assert!(message.contains("0123456789abcdef"), "{message}");

    let (why, message) = reason(&of(&missing_branch));
    assert_eq!(why, build::BuildFailureReason::CommitNotFound, "{message}");
    assert!(message.contains("no-such-branch"), "{message}");

    let r = of(&failing);
    let (why, message) = reason(&r);
    assert_eq!(why, build::BuildFailureReason::StepFailed, "{message}");
    assert_eq!(r.failure.as_ref().unwrap().step, 1);
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(r.local_artifact_path.is_empty());
    // The logs are kept: the output before the failure and the reason.
    let lines = messages(&h.logs(&failing.job_id).await);
    assert!(lines.iter().any(|l| l == "before"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("exited with code 3")),
        "{lines:#?}"
    );

    // An image build without a registry to push to is refused before anything runs.
    let (why, message) = reason(&of(&image));
    assert_eq!(why, build::BuildFailureReason::Internal, "{message}");
    assert!(
        message.contains("builder buildah needs a registry to push to"),
        "{message}"
    );
}

#[tokio::test]
async fn a_build_longer_than_its_timeout_is_stopped_and_a_cancel_stops_one() {
    let mut h = Harness::new().await;
    let (url, _) = repository(h.dir.path());
    let (_runner, _) = h.runner("r1", 2).await;

    let mut slow = job(&url, "echo started; sleep 30");
    slow.timeout = Some(prost_types::Duration {
        seconds: 2,
        nanos: 0,
    });
    let started = std::time::Instant::now();
    h.publish(&slow).await;
    let r = h.result(LONG).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.outcome, build::BuildOutcome::TimedOut as i32, "{r:?}");
    let (why, message) = reason(&r);
    assert_eq!(why, build::BuildFailureReason::Timeout);
    assert!(message.contains("timeout of 2 s"), "{message}");
    let lines = messages(&h.logs(&slow.job_id).await);
    assert!(lines.iter().any(|l| l == "started"), "{lines:#?}");

    let canceled = job(&url, "echo waiting; sleep 30");
    h.publish(&canceled).await;
    // Wait until the command runs, then cancel.
    let deadline = tokio::time::Instant::now() + LONG;
    while !messages(&h.logs(&canceled.job_id).await)
        .iter()
        .any(|l| l == "waiting")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build never started"
        );
    }
    let cancel = build::BuildCancel {
        job_id: canceled.job_id.clone(),
        reason: "deployment canceled".into(),
        request_time: Some(std::time::SystemTime::now().into()),
    };
    h.bus
        .publish_proto(
            &worker::cancel_subject(&canceled.job_id),
            &format!("{}.cancel", canceled.job_id),
            &cancel,
        )
        .await
        .unwrap();
    let r = h.result(Duration::from_secs(20)).await;
    assert_eq!(r.outcome, build::BuildOutcome::Canceled as i32, "{r:?}");
    let (why, message) = reason(&r);
    assert_eq!(why, build::BuildFailureReason::Canceled);
    assert!(message.contains("deployment canceled"), "{message}");
}

#[tokio::test]
async fn build_output_arrives_line_by_line_in_order() {
    let mut h = Harness::new().await;
    let (url, _) = repository(h.dir.path());
    let (_runner, _) = h.runner("r1", 1).await;

    let numbered = job(
        &url,
        "i=1; while [ $i -le 1500 ]; do echo line-$i; i=$((i+1)); done",
    );
    h.publish(&numbered).await;
    let r = h.result(LONG).await;
    assert_eq!(r.outcome, build::BuildOutcome::Succeeded as i32, "{r:?}");
    let lines = h.logs(&numbered.job_id).await;
    let output: Vec<&logs::LogLine> = lines
        .iter()
        .filter(|l| l.message.starts_with("line-"))
        .collect();
    let expected: Vec<String> = (1..=1500).map(|i| format!("line-{i}")).collect();
    assert_eq!(
        output.iter().map(|l| l.message.clone()).collect::<Vec<_>>(),
        expected
    );
    for line in &output {
        assert_eq!(line.kind, logs::LogKind::Build as i32);
        assert_eq!(line.stream, logs::LogStream::Stdout as i32);
        assert_eq!(line.deployment_id, "dep1");
        assert_eq!(line.service_id, SERVICE);
        assert_eq!(line.environment_id, ENV);
        assert_eq!(line.project_id, "proj1");
        assert_eq!(line.sequence, 0);
    }
    // The runner's own messages frame the output.
    let first = lines.first().unwrap();
    assert!(first.message.starts_with("resolving main"), "{first:?}");
    assert!(lines.last().unwrap().message.starts_with("build succeeded"));
}

#[tokio::test]
async fn two_runners_on_one_queue_build_each_job_exactly_once() {
    let mut h = Harness::new().await;
    let (url, _) = repository(h.dir.path());
    let (_a, artifacts_a) = h.runner("a", 2).await;
    let (_b, artifacts_b) = h.runner("b", 2).await;
    let counter = h.dir.path().join("built.log");

    let mut jobs = Vec::new();
    for n in 0..20 {
        // Distinct cache keys, so every job really builds.
        let mut job = job(&url, "sleep 0.2; echo \"$JOB_N\" >> \"$COUNTER\"");
        job.build_args.insert("JOB_N".into(), n.to_string());
        job.build_args
            .insert("COUNTER".into(), counter.display().to_string());
        h.publish(&job).await;
        // A repeated publish of the same job id is dropped by the queue.
        h.publish(&job).await;
        jobs.push(job);
    }
    let results = h.results(20, Duration::from_secs(120)).await;
    for job in &jobs {
        let r = &results[&job.job_id];
        assert_eq!(r.outcome, build::BuildOutcome::Succeeded as i32, "{r:?}");
        assert!(!r.cache_hit);
    }
    let mut built: Vec<u32> = std::fs::read_to_string(&counter)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    built.sort_unstable();
    assert_eq!(built, (0..20).collect::<Vec<_>>());
    let count = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    let (a, b) = (count(&artifacts_a), count(&artifacts_b));
    assert_eq!(a + b, 20);
    assert!(a > 0 && b > 0, "one runner did all the work: {a} and {b}");
    // Nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), h.results.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_embedded_bus_of_slipway_dev_runs_builds_too() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = repository(dir.path());
    let bus = slipway_events::in_memory(&NatsSettings::default())
        .await
        .unwrap();
    let mut results = bus
        .consumer(
            ConsumerSpec::new(StreamKind::Builds, "test-results").filter(subject::BUILD_RESULTS),
        )
        .await
        .unwrap();
    let _runner = worker::start(
        Arc::clone(&bus),
        BuildSettings::under(dir.path().join("builds")),
    );
    let first = job(&url, "echo hi > made.txt");
    bus.publish_proto(subject::BUILD_JOBS, &first.job_id, &first)
        .await
        .unwrap();
    let delivery = tokio::time::timeout(LONG, results.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let r: build::BuildResult = delivery.decode().unwrap();
    delivery.ack().await.unwrap();
    assert_eq!(r.outcome, build::BuildOutcome::Succeeded as i32, "{r:?}");
    assert!(
        PathBuf::from(&r.local_artifact_path)
            .join("made.txt")
            .exists()
    );
}
