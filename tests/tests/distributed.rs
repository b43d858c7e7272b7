//! The README's quickstart against Slipway installed for real: every service its own
//! process on real PostgreSQL (a database each) and NATS JetStream, one public address
//! through nginx with `deploy/nginx/slipway.conf` (routing by gRPC service path), and a
//! `slipway-agent` on the process runtime that reaches the orchestrator through that same
//! address, as an agent in a cluster would.
//!
//! The first credentials come the way an operator gets them: `slipway-identity bootstrap`
//! prints the owner token, a control-plane `slps_` credential is shared by the services,
//! and the cluster is registered with `slipway cluster register`, whose agent token the
//! agent is started with. nginx comes from Debian (`scripts/install-nginx.sh` installs it
//! when it is missing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{check_quickstart, describe, free_port, profile_dir, repo_root, run, run_quickstart};
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_testkit::binary::ServiceProcess;
use slipway_testkit::{TestDatabase, TestNats};
use tokio::process::{Child, Command};

/// The GitHub webhook secret the orchestrator is configured with.
const GITHUB_SECRET: &str = "distributed-test-github-secret";

/// POSTs a GitHub `ping` delivery to `path` on `address` over HTTP/2 cleartext (the
/// proxy's local listener); its status and body.
async fn post_h2c(address: &str, path: &str, signature: Option<&str>, body: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "distributed-ping");
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = client
        .request(
            request
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_owned(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries with the tests (`make test`)",
        path.display()
    );
    path
}

/// nginx on `port` in front of the services, with the shipped configuration: only the
/// upstream addresses, the listen port and the TLS listener (no certificate here) differ.
async fn start_nginx(dir: &Path, port: u16, upstreams: &[(&str, String)]) -> Child {
    let install = Command::new(repo_root().join("scripts/install-nginx.sh"))
        .output()
        .await
        .unwrap();
    assert!(install.status.success(), "{}", describe(&install));
    let shipped = std::fs::read_to_string(repo_root().join("deploy/nginx/slipway.conf")).unwrap();
    let mut conf = String::new();
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("listen 443") || trimmed.starts_with("ssl_") {
            continue;
        }
        let mut line = line.replace(
            "listen 8080 http2;",
            &format!("listen 127.0.0.1:{port} http2;"),
        );
        for (host, addr) in upstreams {
            line = line.replace(&format!("server {host};"), &format!("server {addr};"));
        }
        conf.push_str(&line);
        conf.push('\n');
    }
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("slipway.conf"), conf).unwrap();
    // As root, workers would run as `nobody`, who cannot write this test's private temp dir.
    let user = if std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
    {
        "user root;\n"
    } else {
        ""
    };
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "{user}pid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{}}\nhttp {{\n    \
             access_log off;\n    client_body_temp_path {d}/tmp;\n    include {d}/slipway.conf;\n}}\n"
        ),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|candidate| Path::new(candidate).is_file())
        .unwrap_or("nginx");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "nginx did not listen on {port}: {}",
        std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_works_against_the_services_run_separately_behind_nginx() {
    let scratch = tempfile::tempdir().unwrap();
    let nats = TestNats::start().await.unwrap();
    let credential = NewCredential::generate(CredentialKind::Service)
        .unwrap()
        .into_secret();
    let master_key: String = (0..32)
        .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
        .collect();
    let proxy_port = free_port();
    let public = format!("127.0.0.1:{proxy_port}");
    let public_url = format!("http://{public}");

    let mut databases = Vec::new();
    let platform_env = |database: &TestDatabase| {
        vec![
            (
                "SLIPWAY__DATABASE__URL".to_owned(),
                database.url().to_owned(),
            ),
            ("SLIPWAY__NATS__URL".to_owned(), nats.url().to_owned()),
            (
                "SLIPWAY__NATS__NAMESPACE".to_owned(),
                nats.namespace().to_owned(),
            ),
            (
                "SLIPWAY__AUTH__SERVICE_CREDENTIAL".to_owned(),
                credential.clone(),
            ),
        ]
    };
    let mut envs = Vec::new();
    for _ in 0..5 {
        let database = TestDatabase::postgres().await.unwrap();
        envs.push(platform_env(&database));
        databases.push(database);
    }
    let start = |name: &'static str, env: Vec<(String, String)>| async move {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServiceProcess::start(binary(name), &[], &pairs)
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    };

    // Identity first: the first organization and its token, then the service.
    let bootstrap = Command::new(binary("slipway-identity"))
        .args(["bootstrap", "--organization", "default"])
        .envs(envs[0].iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(bootstrap.status.success(), "{}", describe(&bootstrap));
    let printed = String::from_utf8_lossy(&bootstrap.stdout).into_owned();
    let token = printed
        .lines()
        .find_map(|line| line.strip_prefix("owner token (shown once): "))
        .expect("bootstrap prints the owner token")
        .trim()
        .to_owned();
    // `organization default created (<id>)`
    let organization_id = printed
        .lines()
        .find_map(|line| line.strip_prefix("organization default created ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("bootstrap names the organization")
        .to_owned();
    let identity = start("slipway-identity", envs[0].clone()).await;
    let identity_url = format!("http://{}", identity.addr());
    let with = |mut env: Vec<(String, String)>, extra: &[(&str, &str)]| {
        env.push((
            "SLIPWAY__AUTH__IDENTITY_URL".to_owned(),
            identity_url.clone(),
        ));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    };
    let catalog = start(
        "slipway-catalog",
        with(
            envs[1].clone(),
            &[
                ("SLIPWAY__SECRETS__MASTER_KEY", &master_key),
                ("SLIPWAY__CLUSTERS__ORCHESTRATOR_URL", &public_url),
            ],
        ),
    )
    .await;
    let catalog_url = format!("http://{}", catalog.addr());
    let webhooks = format!("127.0.0.1:{}", free_port());
    let orchestrator = start(
        "slipway-orchestrator",
        with(
            envs[2].clone(),
            &[
                ("SLIPWAY__CATALOG__URL", &catalog_url),
                ("SLIPWAY__PREVIEWS__LISTEN", &webhooks),
                ("SLIPWAY__PREVIEWS__GITHUB_SECRET", GITHUB_SECRET),
            ],
        ),
    )
    .await;
    let work = scratch.path().join("builds/work").display().to_string();
    let artifacts = scratch
        .path()
        .join("builds/artifacts")
        .display()
        .to_string();
    let build_runner = start(
        "slipway-build-runner",
        with(
            envs[3].clone(),
            &[
                ("SLIPWAY__BUILDS__WORK_DIR", &work),
                ("SLIPWAY__BUILDS__ARTIFACTS_DIR", &artifacts),
            ],
        ),
    )
    .await;
    let log_streaming = start("slipway-log-streaming", with(envs[4].clone(), &[])).await;
    let mut nginx = start_nginx(
        &scratch.path().join("nginx"),
        proxy_port,
        &[
            ("identity:7800", identity.addr().to_string()),
            ("catalog:7800", catalog.addr().to_string()),
            ("orchestrator:7800", orchestrator.addr().to_string()),
            ("orchestrator:7809", webhooks.clone()),
            ("build-runner:7800", build_runner.addr().to_string()),
            ("log-streaming:7800", log_streaming.addr().to_string()),
        ],
    )
    .await;

    // Pull-request webhooks reach the orchestrator through the same address: a signed
    // GitHub ping is answered, an unsigned one refused.
    let ping = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let signature =
        slipway_orchestrator::previews::signature::github_signature(GITHUB_SECRET, ping.as_bytes());
    let webhook_path = format!("/webhooks/github/{organization_id}");
    let (status, body) = post_h2c(&public, &webhook_path, Some(&signature), ping).await;
    assert_eq!((status, body.trim()), (200, "pong"));
    let (status, _) = post_h2c(&public, &webhook_path, None, ping).await;
    assert_eq!(status, 401);

    // The operator registers the cluster through the public address and starts its agent
    // with the token that prints.
    let path = format!(
        "{}:{}",
        profile_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let operator = scratch.path().join("operator.toml");
    let login = run(
        &format!("slipway login --address {public} --token {token}"),
        &path,
        &operator,
    )
    .await;
    assert!(login.status.success(), "{}", describe(&login));
    let registered = run("slipway -o json cluster register local", &path, &operator).await;
    assert!(registered.status.success(), "{}", describe(&registered));
    let registered: serde_json::Value = serde_json::from_slice(&registered.stdout).unwrap();
    let agent_token = registered["agent_token"].as_str().unwrap().to_owned();
    let cluster_id = registered["cluster"]["id"].as_str().unwrap().to_owned();
    let state = scratch.path().join("agent").display().to_string();
    let agent = start(
        "slipway-agent",
        vec![
            (
                "SLIPWAY__AGENT__ORCHESTRATOR_URL".into(),
                public_url.clone(),
            ),
            ("SLIPWAY__AGENT__TOKEN".into(), agent_token),
            ("SLIPWAY__AGENT__CLUSTER_ID".into(), cluster_id),
            ("SLIPWAY__AGENT__STATE_DIR".into(), state),
            ("SLIPWAY__AGENT__RUNTIME".into(), "process".into()),
        ],
    )
    .await;

    let outputs = run_quickstart(&public, &token, scratch.path()).await;
    let log =
        std::fs::read_to_string(scratch.path().join("nginx/logs/error.log")).unwrap_or_default();
    agent.terminate().await.unwrap();
    // SIGTERM: nginx's master stops its workers (SIGKILL would leave them running).
    if let Some(pid) = nginx.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), nginx.wait()).await;
    for service in [log_streaming, build_runner, orchestrator, catalog, identity] {
        service.terminate().await.unwrap();
    }
    drop(databases);
    match outputs {
        Ok(outputs) => check_quickstart(&outputs, &log),
        Err(failure) => panic!("{failure}\n--- nginx ---\n{log}"),
    }
}
