//! `slipway dev` as a newcomer runs it: one process, one port, every public API, data kept
//! in the data directory across restarts.
// Helpers outside `#[test]` functions panic too: that is how a test reports the unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

const ALL_PACKAGES: &[&str] = &[
    "slipway.identity.v1",
    "slipway.catalog.v1",
    "slipway.deploy.v1",
    "slipway.agent.v1",
    "slipway.build.v1",
    "slipway.logs.v1",
];

#[tokio::test]
async fn dev_serves_every_api_on_one_port_and_restarts_on_its_data() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir_arg = data_dir.path().to_str().unwrap();
    let binary = env!("CARGO_BIN_EXE_slipway");
    for _start in 0..2 {
        let process = slipway_testkit::binary::ServiceProcess::start(
            binary,
            &["dev", "--data-dir", data_dir_arg],
            &[],
        )
        .await
        .unwrap();
        let built: Vec<&str> = [
            slipway_identity::BUILT,
            slipway_catalog::BUILT,
            slipway_orchestrator::BUILT,
            slipway_build_runner::BUILT,
            slipway_log_streaming::BUILT,
        ]
        .concat();
        let not_built: Vec<String> = slipway_testkit::surface::slipway_services(ALL_PACKAGES)
            .into_iter()
            .filter(|service| !built.contains(&service.as_str()))
            .collect();
        let not_built: Vec<&str> = not_built.iter().map(String::as_str).collect();
        slipway_testkit::surface::check_surface(
            slipway_testkit::grpc::channel(process.addr()),
            ALL_PACKAGES,
            &not_built,
        )
        .await
        .unwrap();
        assert!(data_dir.path().join("slipway.db").exists());
        let exit = process.terminate().await.unwrap();
        assert!(exit.success(), "{exit}");
    }
}

/// `slipway dev` started by hand (not through `ServiceProcess`), so the test sees every line
/// it prints, before `listening on ADDR` too.
struct Dev {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Dev {
    async fn start(data_dir: &std::path::Path) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                stdout.lock().unwrap().push(line.clone());
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.trim().parse().unwrap();
                }
            }
            panic!("slipway dev exited before listening");
        })
        .await
        .expect("slipway dev did not print `listening on ADDR`");
        let collected = std::sync::Arc::clone(&stdout);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr,
            stdout,
        }
    }

    /// The owner token printed on the first start, if this start printed one.
    fn owner_token(&self) -> Option<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| line.strip_prefix("owner token (shown once): "))
            .map(str::to_owned)
    }

    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .expect("slipway dev did not stop")
            .unwrap()
    }
}

/// `message` with `token` as its bearer credential.
fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The `local` cluster of `organization_id` once catalog shows it CONNECTED with a
/// heartbeat at or after `since`; panics after a few seconds.
async fn wait_local_connected(
    addr: std::net::SocketAddr,
    token: &str,
    organization_id: &str,
    since: std::time::SystemTime,
) -> slipway_proto::catalog::v1::Cluster {
    use slipway_proto::catalog::v1 as cpb;
    let mut clusters = cpb::cluster_service_client::ClusterServiceClient::new(
        slipway_testkit::grpc::channel(addr),
    );
    let since = since.duration_since(std::time::UNIX_EPOCH).unwrap();
    let since = (since.as_secs() as i64, since.subsec_nanos() as i32);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let listed = clusters
            .list_clusters(authorized(
                token,
                cpb::ListClustersRequest {
                    organization_id: organization_id.to_owned(),
                    page_size: 10,
                    page_token: String::new(),
                    ..cpb::ListClustersRequest::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.clusters.len(), 1, "{listed:?}");
        let local = &listed.clusters[0];
        assert_eq!(local.name, "local");
        assert_eq!(local.kind(), cpb::ClusterKind::SelfManaged);
        let fetched = clusters
            .get_cluster(authorized(
                token,
                cpb::GetClusterRequest {
                    id: local.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .cluster
            .unwrap();
        let connection = fetched.connection.clone().unwrap_or_default();
        let fresh = connection
            .last_heartbeat_time
            .as_ref()
            .is_some_and(|heartbeat| (heartbeat.seconds, heartbeat.nanos) >= since);
        if connection.state() == cpb::ClusterConnectionState::Connected && fresh {
            return fetched;
        }
        last = Some(connection);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the local cluster did not connect: {last:?}");
}

#[tokio::test]
async fn dev_runs_a_local_agent_that_connects_and_reconnects_after_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let agent_file = data_dir.path().join("agent.json");

    let since = std::time::SystemTime::now();
    let first = Dev::start(data_dir.path()).await;
    let token = first
        .owner_token()
        .expect("the first start prints the owner token");
    assert!(token.starts_with("slp_"), "{token}");
    // agent.json is written once the cluster is registered, right after the server answers.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent_file.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no agent.json");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&agent_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&agent_file).unwrap()).unwrap();
    let organization_id = saved["organization_id"].as_str().unwrap().to_owned();
    assert!(
        saved["agent_token"].as_str().unwrap().starts_with("slpa_"),
        "an agent token"
    );
    let cluster = wait_local_connected(first.addr, &token, &organization_id, since).await;
    assert_eq!(cluster.id, saved["cluster_id"].as_str().unwrap());
    let exit = first.terminate().await;
    assert!(exit.success(), "{exit}");

    let since = std::time::SystemTime::now();
    let second = Dev::start(data_dir.path()).await;
    let again = wait_local_connected(second.addr, &token, &organization_id, since).await;
    assert_eq!(again.id, cluster.id);
    assert_eq!(second.owner_token(), None, "the token is shown once");
    let exit = second.terminate().await;
    assert!(exit.success(), "{exit}");
}
