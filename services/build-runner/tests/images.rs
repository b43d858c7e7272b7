//! Image builds on real tools: buildah (with runc, vfs storage and the runner's own
//! containers.conf) building from a local git repository, pushing to Debian's
//! `docker-registry` on loopback, and the manifest pulled back over HTTP. The tools are
//! installed by `scripts/install-build-tools.sh` when missing; the base image is made
//! here from a static busybox, so nothing is pulled from the network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use slipway_build_runner::buildah::Buildah;
use slipway_build_runner::{BuildSettings, WorkerHandle, worker};
use slipway_events::{ConsumerSpec, StreamKind, subject};
use slipway_proto::build::v1 as build;
use slipway_proto::logs::v1 as logs;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod common;

use common::{ENV, Harness, ORG, SERVICE, bus_of, git};

const USER: &str = "pusher";
const PASSWORD: &str = "s3cret-pass";
/// bcrypt (cost 4) of [`PASSWORD`], the only hash `docker-registry`'s htpasswd accepts.
const HTPASSWD: &str = "pusher:$2b$04$Na2TfVomBA93cKiNuBIcS.gln.ac/bI3OylshcywP7AeJ5EA6ixOu\n";
const BASE_IMAGE: &str = "localhost/slipway-test-base:1";
const LONG: Duration = Duration::from_secs(50);

fn install_tools() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-build-tools.sh");
    let status = Command::new(script).status().unwrap();
    assert!(status.success(), "scripts/install-build-tools.sh failed");
}

/// Debian's `docker-registry` on a free loopback port, with htpasswd authentication;
/// stopped when dropped.
struct TestRegistry {
    port: u16,
    _process: tokio::process::Child,
}

impl TestRegistry {
    async fn start(dir: &Path) -> Self {
        let dir = dir.join("registry");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: slipway-test\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let process = tokio::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let registry = Self {
            port,
            _process: process,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((status, _, _)) = registry.get("/v2/", true).await
                && status == 200
            {
                return registry;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the registry did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn target(&self, repository: &str, tag: &str) -> build::RegistryTarget {
        build::RegistryTarget {
            url: format!("http://127.0.0.1:{}", self.port),
            repository: repository.into(),
            tag: tag.into(),
            credentials: Some(build::RegistryCredentials {
                username: USER.into(),
                password: PASSWORD.into(),
            }),
        }
    }

    /// A plain HTTP/1.1 GET, independent of the runner's own client.
    async fn get(
        &self,
        path: &str,
        authenticated: bool,
    ) -> std::io::Result<(u16, HashMap<String, String>, Vec<u8>)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let auth = if authenticated {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            )
        } else {
            String::new()
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no http header end"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let body = raw[split + 4..].to_vec();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect();
        Ok((status, headers, body))
    }
}

impl Harness {
    /// The harness, with buildah, runc, the registry and busybox installed first.
    async fn with_tools() -> Self {
        install_tools();
        Self::new().await
    }

    /// The runner's settings, with the base image already in its buildah storage.
    async fn settings(&self) -> BuildSettings {
        let settings = BuildSettings::under(self.dir.path().join("runner"));
        let buildah = Buildah::new(&settings);
        buildah.prepare().await.unwrap();
        let rootfs = self.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "echo", "cat", "ls", "mkdir", "sleep", "test", "true", "false",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let run = |args: &[&str]| {
            let buildah = buildah.clone();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            async move {
                let output = buildah.command().args(&args).output().await.unwrap();
                assert!(output.status.success(), "buildah {args:?}: {output:?}");
                String::from_utf8(output.stdout).unwrap().trim().to_owned()
            }
        };
        let container = run(&["from", "scratch"]).await;
        run(&["copy", &container, &rootfs.display().to_string(), "/"]).await;
        run(&["config", "--env", "PATH=/bin", &container]).await;
        run(&["commit", "-q", &container, BASE_IMAGE]).await;
        run(&["rm", &container]).await;
        settings
    }

    fn runner(&self, settings: BuildSettings) -> impl std::future::Future<Output = WorkerHandle> {
        let nats = &self.nats;
        async move { worker::start(bus_of(nats).await, settings) }
    }

    async fn result(&mut self) -> build::BuildResult {
        self.results(1, LONG).await.into_values().next().unwrap()
    }

    async fn logs(&self, job_id: &str) -> Vec<String> {
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
            delivery.ack().await.unwrap();
            lines.extend(
                batch
                    .lines
                    .into_iter()
                    .filter(|l| l.instance == job_id)
                    .map(|l| l.message),
            );
        }
        drop(consumer);
        let _ = self.bus.delete_consumer(StreamKind::Logs, &durable).await;
        lines
    }
}

/// A repository holding `examples/hello` with a Dockerfile on the local base image, plus
/// `broken/` (a failing step) and `empty/` (no Dockerfile); returns its URL and commit.
fn repository(dir: &Path) -> (String, String) {
    let repo = dir.join("repo");
    let hello = repo.join("hello");
    std::fs::create_dir_all(&hello).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    for entry in std::fs::read_dir(&example).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), hello.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        hello.join("Dockerfile"),
        format!(
            "FROM {BASE_IMAGE}\nARG GREETING=none\nRUN mkdir -p /app && echo \"greeting is $GREETING\" > /app/greeting && cat /app/greeting\nCOPY app.py /app/app.py\nCMD [\"cat\", \"/app/greeting\"]\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("broken")).unwrap();
    std::fs::write(
        repo.join("broken/Dockerfile"),
        format!(
            "FROM {BASE_IMAGE}\nRUN echo fine\nRUN echo about to fail && exit 3\nRUN echo never\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("slow")).unwrap();
    std::fs::write(
        repo.join("slow/Dockerfile"),
        format!("FROM {BASE_IMAGE}\nRUN echo sleeping && sleep 30\n"),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("empty")).unwrap();
    std::fs::write(repo.join("empty/README"), "no dockerfile here\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (format!("file://{}", repo.display()), commit)
}

fn job(url: &str, root: &str, registry: build::RegistryTarget) -> build::BuildJob {
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
            root_path: root.into(),
            ..Default::default()
        }),
        builder: build::BuilderKind::Buildah as i32,
        build_args: [("GREETING".to_owned(), "hi-from-a-build-arg".to_owned())].into(),
        registry: Some(registry),
        create_time: Some(std::time::SystemTime::now().into()),
        ..Default::default()
    }
}

fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn failure(result: &build::BuildResult) -> (build::BuildFailureReason, u32, String) {
    let failure = result.failure.clone().expect("a failure");
    (
        build::BuildFailureReason::try_from(failure.reason).unwrap(),
        failure.step,
        failure.message,
    )
}

#[tokio::test]
async fn buildah_builds_pushes_and_the_second_build_is_a_cache_hit() {
    let mut h = Harness::with_tools().await;
    let registry = TestRegistry::start(h.dir.path()).await;
    let (url, commit) = repository(h.dir.path());
    let settings = h.settings().await;
    let _runner = h.runner(settings).await;

    let first = job(&url, "hello", registry.target("acme/hello", ""));
    h.publish(&first).await;
    let result = h.result().await;
    assert_eq!(
        result.outcome,
        build::BuildOutcome::Succeeded as i32,
        "{result:?}"
    );
    assert!(!result.cache_hit);
    assert_eq!(
        result.image_reference,
        format!("127.0.0.1:{}/acme/hello:{commit}", registry.port)
    );
    assert!(result.local_artifact_path.is_empty());
    let timings = result.timings.unwrap();
    assert!(timings.fetch.is_some() && timings.build.is_some() && timings.push.is_some());

    // The manifest, pulled back by tag: its bytes hash to the digest the result reports.
    let (status, headers, manifest) = registry
        .get(&format!("/v2/acme/hello/manifests/{commit}"), true)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(sha256(&manifest), result.image_digest);
    assert_eq!(headers["docker-content-digest"], result.image_digest);
    // Without credentials the registry refuses: the push used the job's.
    let (status, _, _) = registry
        .get(&format!("/v2/acme/hello/manifests/{commit}"), false)
        .await
        .unwrap();
    assert_eq!(status, 401);
    // The image is the Dockerfile's: the local base's layer and one layer of the build's
    // steps (no intermediate layers are kept), and the build argument reached the RUN step.
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        BASE_IMAGE
    );
    let lines = h.logs(&first.job_id).await;
    assert!(
        lines.iter().any(|l| l == "greeting is hi-from-a-build-arg"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("STEP 3/5: RUN")),
        "{lines:#?}"
    );
    // No credential reaches the logs.
    assert!(!lines.iter().any(|l| l.contains(PASSWORD)));

    // The same commit and settings again, under another tag: no build step, the cached
    // image tagged, the same digest.
    let second = job(&url, "hello", registry.target("acme/hello", "v2"));
    h.publish(&second).await;
    let again = h.result().await;
    assert_eq!(
        again.outcome,
        build::BuildOutcome::Succeeded as i32,
        "{again:?}"
    );
    assert!(again.cache_hit);
    assert_eq!(again.cache_key, result.cache_key);
    assert_eq!(again.image_digest, result.image_digest);
    assert!(again.image_reference.ends_with("/acme/hello:v2"));
    assert!(again.timings.unwrap().build.is_none());
    let lines = h.logs(&second.job_id).await;
    assert!(
        lines.iter().any(|l| l.starts_with("cache hit")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("STEP")), "{lines:#?}");
    let (status, _, tagged) = registry
        .get("/v2/acme/hello/manifests/v2", true)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(sha256(&tagged), result.image_digest);

    // Another build argument is another key: built again.
    let mut third = job(&url, "hello", registry.target("acme/hello", "v3"));
    third.build_args.insert("GREETING".into(), "other".into());
    h.publish(&third).await;
    let other = h.result().await;
    assert_eq!(
        other.outcome,
        build::BuildOutcome::Succeeded as i32,
        "{other:?}"
    );
    assert!(!other.cache_hit);
    assert_ne!(other.image_digest, result.image_digest);
}

#[tokio::test]
async fn image_build_failures_say_why_and_keep_the_logs() {
    let mut h = Harness::with_tools().await;
    let registry = TestRegistry::start(h.dir.path()).await;
    let (url, _) = repository(h.dir.path());
    let mut settings = h.settings().await;
    settings.concurrency = 4;
    settings.buildctl = "/nonexistent/slipway/buildctl".into();
    let _runner = h.runner(settings).await;

    let no_dockerfile = job(&url, "empty", registry.target("acme/empty", ""));
    let failing = job(&url, "broken", registry.target("acme/broken", ""));
    let mut wrong_password = job(&url, "hello", registry.target("acme/hello", ""));
    wrong_password
        .registry
        .as_mut()
        .unwrap()
        .credentials
        .as_mut()
        .unwrap()
        .password = "wrong".into();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unreachable = job(&url, "hello", registry.target("acme/hello", ""));
    unreachable.registry.as_mut().unwrap().url = format!("http://127.0.0.1:{closed_port}");
    let mut buildkit = job(&url, "hello", registry.target("acme/hello", ""));
    buildkit.builder = build::BuilderKind::Buildkit as i32;
    let mut slow = job(&url, "slow", registry.target("acme/slow", ""));
    slow.timeout = Some(prost_types::Duration {
        seconds: 4,
        nanos: 0,
    });
    let jobs = [
        &no_dockerfile,
        &failing,
        &wrong_password,
        &unreachable,
        &buildkit,
        &slow,
    ];
    for job in jobs {
        h.publish(job).await;
    }
    let results = h.results(jobs.len(), LONG).await;
    let of = |job: &build::BuildJob| results[&job.job_id].clone();

    let (why, _, message) = failure(&of(&no_dockerfile));
    assert_eq!(
        why,
        build::BuildFailureReason::DockerfileMissing,
        "{message}"
    );
    assert!(message.contains("empty/Dockerfile"), "{message}");

    let r = of(&failing);
    assert_eq!(r.outcome, build::BuildOutcome::Failed as i32);
    let (why, step, message) = failure(&r);
    assert_eq!(why, build::BuildFailureReason::StepFailed, "{message}");
    assert_eq!(step, 3, "{message}");
    assert!(
        message.starts_with("step 3/4 \"RUN echo about to fail && exit 3\" failed"),
        "{message}"
    );
    assert!(r.image_digest.is_empty());
    let lines = h.logs(&failing.job_id).await;
    assert!(lines.iter().any(|l| l == "about to fail"), "{lines:#?}");
    assert!(!lines.iter().any(|l| l == "never"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("build failed: step 3/4")),
        "{lines:#?}"
    );

    let (why, _, message) = failure(&of(&wrong_password));
    assert_eq!(why, build::BuildFailureReason::RegistryError, "{message}");
    assert!(message.contains("refused the login"), "{message}");
    assert!(!message.contains("wrong"), "{message}");

    let (why, _, message) = failure(&of(&unreachable));
    assert_eq!(why, build::BuildFailureReason::RegistryError, "{message}");
    assert!(message.contains("cannot be reached"), "{message}");

    let (why, _, message) = failure(&of(&buildkit));
    assert_eq!(why, build::BuildFailureReason::Internal, "{message}");
    assert!(
        message.contains("builder buildkit needs buildctl, which is not installed"),
        "{message}"
    );

    let r = of(&slow);
    assert_eq!(r.outcome, build::BuildOutcome::TimedOut as i32, "{r:?}");
    // The RUN step's container was stopped with the build.
    let listing = Command::new("runc")
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !listing.contains(&h.dir.path().display().to_string()),
        "{listing}"
    );
    let lines = h.logs(&slow.job_id).await;
    assert!(lines.iter().any(|l| l == "sleeping"), "{lines:#?}");
}
