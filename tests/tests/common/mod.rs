//! What the end-to-end tests that drive binaries share: where the workspace's binaries
//! are, and `slipway dev` started on its own data directory.
#![allow(dead_code, reason = "each test file uses its own part")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

/// How long `slipway dev` may take to print `listening on ADDR`: a bound that turns a hang
/// into a failure with `slipway dev`'s log (before nextest's own limit ends the test
/// without it), not a performance target.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// The repository root: this package is its `tests/` directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The target profile directory this test runs from: cargo puts test executables in
/// `<target>/<profile>/deps/` and the workspace's binaries in `<target>/<profile>/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable is in <target>/<profile>/deps")
        .to_path_buf()
}

/// The `slipway` binary. Cargo hands `CARGO_BIN_EXE_slipway` only to the cli package's own
/// tests, so it is found where cargo builds it, beside this test's `deps/` directory.
/// `make test` (`cargo nextest run --workspace`) builds it; running this package alone
/// needs the cli package too, e.g. `cargo nextest run -p slipway -p slipway-e2e`.
pub fn slipway_binary() -> PathBuf {
    let binary = profile_dir().join(format!("slipway{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: build it with the tests (`make test`, or \
         `cargo nextest run -p slipway -p slipway-e2e`)",
        binary.display()
    );
    binary
}

/// Output of a finished process, for a failure message.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `slipway dev` on its own data directory; its stderr goes to `log` for failure messages.
pub struct Dev {
    child: Child,
    pub addr: String,
    pub owner_token: String,
    log: PathBuf,
}

impl Dev {
    pub async fn start(data_dir: &Path, log: PathBuf) -> Self {
        let mut child = Command::new(slipway_binary())
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut owner_token = None;
        let started = tokio::time::timeout(START_PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(token) = line.strip_prefix("owner token (shown once): ") {
                    owner_token = Some(token.trim().to_owned());
                }
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Some(addr.trim().to_owned());
                }
            }
            None
        })
        .await;
        let addr = match started {
            Ok(Some(addr)) => addr,
            Ok(None) => panic!(
                "slipway dev exited before listening:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            Err(_) => panic!("slipway dev did not print `listening on ADDR` in {START_PATIENCE:?}"),
        };
        // Keep reading, so slipway dev never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let owner_token =
            owner_token.expect("the first start of a data directory prints its owner token");
        Self {
            child,
            addr,
            owner_token,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it as a terminal would (SIGTERM), so its local agent stops its processes.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// How long any one quickstart line may take (a deploy includes a build): a bound that
/// turns a hang into a failure with `slipway dev`'s log, not a performance target.
pub const LINE_PATIENCE: Duration = Duration::from_secs(120);

/// The quickstart's shell lines, as the README shows them.
pub fn quickstart_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart:")
        .expect("README.md has a quickstart block");
    let end = readme[start..]
        .find("<!-- /quickstart -->")
        .expect("the quickstart block is closed")
        + start;
    readme[start..end]
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with("```") && !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs one line through `sh` in the repository root, as a user's shell would.
pub async fn run(line: &str, path: &str, config: &Path) -> std::process::Output {
    tokio::time::timeout(
        LINE_PATIENCE,
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(repo_root())
            .env("PATH", path)
            .env("SLIPWAY_CONFIG", config)
            .env_remove("SLIPWAY_ADDRESS")
            .env_remove("SLIPWAY_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("`{line}` did not finish in {LINE_PATIENCE:?}"))
    .unwrap()
}

/// Runs the README's quickstart lines against `addr` with `token`, as
/// `tests/tests/quickstart.rs` describes: only the address, token, app port, scratch copy
/// and build line differ from the README. Returns each line run with its output, or the
/// first failing line's description.
pub async fn run_quickstart(
    addr: &str,
    token: &str,
    scratch: &Path,
) -> Result<Vec<(String, Output)>, String> {
    let config = scratch.join("config.toml");
    let hello = scratch.join("hello");
    let app_port = free_port().to_string();
    let path = format!(
        "{}:{}",
        profile_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for line in quickstart_lines() {
        if line.starts_with("cargo build") {
            continue;
        }
        let line = line
            .replace("127.0.0.1:7800", addr)
            .replace("slp_…", token)
            .replace("8080", &app_port)
            .replace("/tmp/hello", &hello.display().to_string());
        // The installation registers its cluster just after it starts serving; a person
        // typing is slower than that, a test is not.
        if line.starts_with("slipway environment create") {
            let mut tries = 0;
            loop {
                let clusters = run("slipway cluster list", &path, &config).await;
                if String::from_utf8_lossy(&clusters.stdout).contains("local") {
                    break;
                }
                tries += 1;
                if tries >= 100 {
                    return Err(format!("no local cluster: {}", describe(&clusters)));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let output = run(&line, &path, &config).await;
        if !output.status.success() {
            return Err(format!(
                "quickstart line `{line}` failed: {}",
                describe(&output)
            ));
        }
        outputs.push((line, output));
    }
    Ok(outputs)
}

/// What the quickstart must show: the app answers over HTTP, `status` names it, and its
/// request lines come back through `slipway logs`. `log` is the servers' log, for failures.
pub fn check_quickstart(outputs: &[(String, Output)], log: &str) {
    let stdout_of = |prefix: &str| {
        outputs
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .map(|(_, output)| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_else(|| panic!("no `{prefix}` line in the quickstart"))
    };
    assert!(
        outputs
            .iter()
            .any(|(line, _)| line.starts_with("slipway deploy")),
        "the quickstart deploys"
    );
    let reply = stdout_of("curl");
    assert_eq!(reply.trim(), "hello from slipway", "--- servers ---\n{log}");
    let status = stdout_of("slipway status");
    assert!(status.contains("hello"), "{status}");
    // The app logs each request it serves (the readiness probe's and curl's) on stdout.
    let logs = stdout_of("slipway logs");
    assert!(
        logs.contains("\"GET / HTTP/1.1\" 200"),
        "no request line in `slipway logs`:\n{logs}\n--- servers ---\n{log}"
    );
}
