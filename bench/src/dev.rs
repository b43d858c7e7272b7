//! `slipway dev` as a newcomer meets it: the release-built `slipway` binary beside this
//! one (`make bench` builds both), started on a fresh data directory.
//!
//! - startup: spawn → `listening on ADDR` on a fresh data directory (migrations, the
//!   default organization, the owner token) and again on the same directory after a
//!   SIGTERM (the restart path), beside the floor of spawning the same binary for
//!   `slipway --version` until it exits. Target: ready under 2 s;
//! - memory: `slipway dev`'s resident set (VmRSS) idle, and after the README quickstart has
//!   deployed `examples/hello` through the CLI and the app answered over HTTP — the
//!   process alone, and with the app it runs. Target: under 150 MB with the app deployed.
//!
//! Each startup is the median of [`STARTS`] runs; memory is read once per state.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use crate::report::Figure;

/// Fresh-directory starts (and restarts) measured; the median is reported.
const STARTS: usize = 5;
/// Longest a start or a CLI command may take before the scenario fails.
const PATIENCE: Duration = Duration::from_secs(120);
/// The targets.
const READY_TARGET: Duration = Duration::from_secs(2);
const RESIDENT_TARGET_MB: f64 = 150.0;

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let binary = slipway_binary()?;
    let scratch = std::env::temp_dir().join(format!("slipway-bench-dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let outcome = measure(&binary, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let figures = outcome?;
    for figure in &figures {
        figure.print();
    }
    let ready = figures
        .iter()
        .find(|f| f.scenario == FRESH && f.metric == "ready_p50")
        .map_or(f64::MAX, |f| f.value);
    let resident = figures
        .iter()
        .find(|f| f.scenario == DEPLOYED && f.metric == "resident")
        .map_or(f64::MAX, |f| f.value);
    println!(
        "{:<34} target: ready < {} ms: {ready:.0} ms, {}; resident < {RESIDENT_TARGET_MB} MB \
         with the app deployed: {resident:.1} MB, {}",
        "slipway dev",
        READY_TARGET.as_millis(),
        met(ready < READY_TARGET.as_secs_f64() * 1e3),
        met(resident < RESIDENT_TARGET_MB),
    );
    Ok(figures)
}

const FRESH: &str = "slipway dev start (fresh dir)";
const RESTART: &str = "slipway dev restart (same dir)";
const FLOOR: &str = "slipway --version (floor)";
const DEPLOYED: &str = "slipway dev, hello deployed";

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

/// `slipway` beside this executable: `make bench` builds both in the release profile.
fn slipway_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .map(|dir| dir.join(format!("slipway{}", std::env::consts::EXE_SUFFIX)))
        .filter(|binary| binary.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no slipway binary beside {}: `make bench` builds it (cargo build --release -p slipway)",
                exe.display()
            )
        })?;
    Ok(binary)
}

async fn measure(binary: &Path, scratch: &Path) -> anyhow::Result<Vec<Figure>> {
    // Floor: the same binary, loaded and run to exit.
    let mut floor = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let status = Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "slipway --version failed");
        floor.push(started.elapsed());
    }

    let mut fresh = Vec::new();
    let mut restart = Vec::new();
    for round in 0..STARTS {
        let data_dir = scratch.join(format!("data-{round}"));
        let (dev, took) = Dev::start(binary, &data_dir, scratch).await?;
        fresh.push(took);
        dev.terminate().await?;
        let (dev, took) = Dev::start(binary, &data_dir, scratch).await?;
        restart.push(took);
        dev.terminate().await?;
    }

    // Memory: idle, then with the quickstart's app deployed.
    let data_dir = scratch.join("data-app");
    let (mut dev, _) = Dev::start(binary, &data_dir, scratch).await?;
    let pid = dev.pid()?;
    let outcome = async {
        let idle = resident_kib(pid)?;
        deploy_hello(binary, &dev, scratch).await?;
        let deployed = resident_kib(pid)?;
        let with_app = deployed
            + descendants(pid)?
                .iter()
                .map(|&child| resident_kib(child).unwrap_or(0))
                .sum::<u64>();
        anyhow::Ok((idle, deployed, with_app))
    }
    .await;
    dev.kill().await;
    let (idle, deployed, with_app) = outcome?;

    let ms = |samples: &mut Vec<Duration>| {
        samples.sort_unstable();
        samples[samples.len() / 2].as_secs_f64() * 1e3
    };
    let floor = Figure::new(FLOOR, "ready_p50", ms(&mut floor), "ms");
    let mb = |kib: u64| kib as f64 / 1024.0;
    Ok(vec![
        floor.clone(),
        Figure::new(FRESH, "ready_p50", ms(&mut fresh), "ms").against(&floor),
        Figure::new(RESTART, "ready_p50", ms(&mut restart), "ms").against(&floor),
        Figure::new("slipway dev, idle", "resident", mb(idle), "MB"),
        Figure::new(DEPLOYED, "resident", mb(deployed), "MB"),
        Figure::new("slipway dev + hello app", "resident", mb(with_app), "MB"),
    ])
}

/// A running `slipway dev`.
struct Dev {
    child: Child,
    addr: String,
    owner_token: Option<String>,
}

impl Dev {
    /// Starts it on `data_dir`; returns it and the time to `listening on ADDR`.
    async fn start(
        binary: &Path,
        data_dir: &Path,
        scratch: &Path,
    ) -> anyhow::Result<(Self, Duration)> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(scratch.join("dev.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("slipway dev has no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut owner_token = None;
        let addr = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(token) = line.strip_prefix("owner token (shown once): ") {
                    owner_token = Some(token.trim().to_owned());
                }
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return anyhow::Ok(addr.trim().to_owned());
                }
            }
            anyhow::bail!(
                "slipway dev exited before listening: {}",
                std::fs::read_to_string(scratch.join("dev.log")).unwrap_or_default()
            )
        })
        .await
        .map_err(|_| anyhow::anyhow!("slipway dev did not listen within {PATIENCE:?}"))??;
        let took = started.elapsed();
        // Keep reading, so slipway dev never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((
            Self {
                child,
                addr,
                owner_token,
            },
            took,
        ))
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow::anyhow!("slipway dev has exited"))
    }

    /// SIGTERM, as a terminal's Ctrl-C would, and wait for it to exit.
    async fn terminate(mut self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("slipway dev did not stop on SIGTERM"))??;
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }
}

/// The README quickstart's steps through the CLI: a project, an environment, `examples/hello`
/// from a local git repository on a free port, deployed, and answering over HTTP.
async fn deploy_hello(binary: &Path, dev: &Dev, scratch: &Path) -> anyhow::Result<()> {
    let token = dev
        .owner_token
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("the first start printed no owner token"))?;
    let repo = scratch.join("hello");
    std::fs::create_dir_all(&repo)?;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    for entry in std::fs::read_dir(&example)? {
        let entry = entry?;
        std::fs::copy(entry.path(), repo.join(entry.file_name()))?;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(&repo)
            .args([
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@example.com",
            ])
            .args(args)
            .status()
    };
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["commit", "-qm", "hello"],
    ] {
        anyhow::ensure!(git(args)?.success(), "git {args:?} failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = scratch.join("config.toml");
    let cli = |args: Vec<String>| {
        let config = config.clone();
        async move {
            let output = tokio::time::timeout(
                PATIENCE,
                Command::new(binary)
                    .args(&args)
                    .env("SLIPWAY_CONFIG", &config)
                    .env_remove("SLIPWAY_ADDRESS")
                    .env_remove("SLIPWAY_TOKEN")
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .map_err(|_| anyhow::anyhow!("`slipway {}` did not finish", args.join(" ")))??;
            anyhow::ensure!(
                output.status.success(),
                "`slipway {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            anyhow::Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
    };
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    cli(words(&format!(
        "login --address {} --token {token}",
        dev.addr
    )))
    .await?;
    // The installation registers its local cluster just after it starts serving.
    let started = Instant::now();
    while !cli(words("cluster list")).await?.contains("local") {
        anyhow::ensure!(started.elapsed() < PATIENCE, "no local cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in [
        "project create hello-world",
        "context set --project hello-world",
        "environment create dev",
        "context set --environment dev",
    ] {
        cli(words(line)).await?;
    }
    let mut create = words("service create hello --git-url");
    create.push(repo.display().to_string());
    create.extend(words(&format!(
        "--branch main --port {port} --http-probe / -- python3 app.py"
    )));
    cli(create).await?;
    cli(words("deploy")).await?;
    let reply = http_get(port)?;
    anyhow::ensure!(
        reply.contains("hello from slipway"),
        "the deployed app answered {reply:?}"
    );
    Ok(())
}

/// One plain HTTP/1.0 GET of `/` on loopback; the whole response.
fn http_get(port: u16) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A process's resident set in KiB, from `/proc/PID/status`.
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// Every process below `pid`, from `/proc/PID/task/*/children`.
fn descendants(pid: u32) -> anyhow::Result<Vec<u32>> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks {
            let children =
                std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    Ok(found)
}
