//! What the build-runner's integration tests share: a NATS namespace on the real JetStream
//! with a bus and a consumer of build results (the orchestrator's view of the BUILDS
//! queue), a scratch directory, and git. Each test file adds its own `impl Harness`.
#![allow(dead_code, reason = "each test file uses its own part")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use slipway_config::NatsSettings;
use slipway_events::{ConsumerSpec, EventBus, EventBusExt as _, StreamKind, subject};
use slipway_proto::build::v1 as build;
use slipway_testkit::TestNats;

pub const ORG: &str = "org1";
pub const ENV: &str = "env1";
pub const SERVICE: &str = "svc1";

/// One NATS namespace, a bus, the build results, and a scratch directory.
pub struct Harness {
    pub nats: TestNats,
    pub bus: Arc<dyn EventBus>,
    pub results: slipway_events::Consumer,
    pub dir: tempfile::TempDir,
}

/// A bus of its own on `nats`' namespace: what a separate runner process would have.
pub async fn bus_of(nats: &TestNats) -> Arc<dyn EventBus> {
    slipway_events::connect(&NatsSettings {
        url: nats.url().to_owned(),
        namespace: nats.namespace().to_owned(),
        ..NatsSettings::default()
    })
    .await
    .unwrap()
}

impl Harness {
    pub async fn new() -> Self {
        let nats = TestNats::start().await.unwrap();
        let bus = bus_of(&nats).await;
        let results = bus
            .consumer(
                ConsumerSpec::new(StreamKind::Builds, "test-results")
                    .filter(subject::BUILD_RESULTS)
                    .prefetch(32),
            )
            .await
            .unwrap();
        Self {
            nats,
            bus,
            results,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Puts `job` on the BUILDS queue, as the orchestrator does.
    pub async fn publish(&self, job: &build::BuildJob) {
        self.bus
            .publish_proto(subject::BUILD_JOBS, &job.job_id, job)
            .await
            .unwrap();
    }

    /// The next `n` results, by job id; fails the test after `within`.
    pub async fn results(
        &mut self,
        n: usize,
        within: Duration,
    ) -> HashMap<String, build::BuildResult> {
        let mut out = HashMap::new();
        let deadline = tokio::time::Instant::now() + within;
        while out.len() < n {
            let delivery = tokio::time::timeout_at(deadline, self.results.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} results arrived", out.len()))
                .unwrap()
                .unwrap();
            let result: build::BuildResult = delivery.decode().unwrap();
            delivery.ack().await.unwrap();
            assert!(
                out.insert(result.job_id.clone(), result).is_none(),
                "a job got two results"
            );
        }
        out
    }
}

/// Runs git in `dir` with a fixed identity; its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
