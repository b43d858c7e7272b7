//! Logs from a real workload, end to end: `slipway dev`'s local agent runs a process that
//! prints a numbered line five times a second and, once, a secret it was given as a
//! variable; `slipway logs -f` (LogService.TailLogs) sends stored lines then live ones, in
//! order with none missing, and the secret arrives masked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Dev, describe, run};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

const SECRET: &str = "s3cr3t-v4lue-9f2c";
/// How long the ticks may take to show up, and the follower to see its lines: bounds that
/// turn a hang into a failure with `slipway dev`'s log, not performance targets.
const PATIENCE: Duration = Duration::from_secs(60);

fn path() -> String {
    format!(
        "{}:{}",
        common::profile_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

async fn slipway(line: &str, config: &Path) -> String {
    let output = run(&format!("slipway {line}"), &path(), config).await;
    assert!(
        output.status.success(),
        "`slipway {line}`: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `tick-N` → N.
fn tick(message: &str) -> Option<u64> {
    message.trim().strip_prefix("tick-")?.parse().ok()
}

/// The highest tick among `slipway logs` table lines (`TIME talker | tick-N`).
fn highest_tick(table: &str) -> Option<u64> {
    table
        .lines()
        .filter_map(|line| line.rsplit("| ").next().and_then(tick))
        .max()
}

#[tokio::test]
async fn a_follower_gets_stored_then_live_lines_in_order_and_secrets_masked() {
    let scratch = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        &scratch.path().join("data"),
        scratch.path().join("slipway-dev.log"),
    )
    .await;
    let config = scratch.path().join("config.toml");
    let login = format!("login --address {} --token {}", dev.addr, dev.owner_token);
    let outcome = async move {
        slipway(&login, &config).await;
        let started = std::time::Instant::now();
        while !slipway("cluster list", &config).await.contains("local") {
            assert!(started.elapsed() < PATIENCE, "no local cluster");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for line in [
            "project create logs",
            "context set --project logs",
            "environment create dev",
            "context set --environment dev",
            &format!("variable set TALKER_PASSWORD={SECRET} --secret"),
            "service create talker --image busybox --tag latest -- sh -c \
             'echo \"connecting with $TALKER_PASSWORD\"; i=0; \
             while :; do echo tick-$i; i=$((i+1)); sleep 0.2; done'",
            "deploy",
        ] {
            slipway(line, &config).await;
        }

        // Some ticks are stored before the follower starts.
        let started = std::time::Instant::now();
        let stored_before = loop {
            let stored = slipway("logs --service talker --kind runtime --tail 10", &config).await;
            match highest_tick(&stored) {
                Some(highest) if highest >= 5 => break highest,
                _ => {}
            }
            assert!(started.elapsed() < PATIENCE, "no ticks stored: {stored}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };

        let mut follower = Command::new("slipway")
            .args([
                "-o",
                "json",
                "logs",
                "-f",
                "--service",
                "talker",
                "--kind",
                "runtime",
                "--tail",
                "3",
            ])
            .env("PATH", path())
            .env("SLIPWAY_CONFIG", &config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
        let mut seen: Vec<serde_json::Value> = Vec::new();
        tokio::time::timeout(PATIENCE, async {
            while seen.len() < 15 {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the follower ended");
                seen.push(serde_json::from_str(&line).unwrap());
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the follower saw only {seen:?}"));
        drop(follower);

        let ticks: Vec<u64> = seen
            .iter()
            .map(|l| tick(l["message"].as_str().unwrap_or_default()).unwrap_or(u64::MAX))
            .collect();
        // In order, none missing, none twice: stored lines run straight into live ones.
        assert!(
            ticks.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "ticks out of order or missing: {ticks:?}"
        );
        // Stored lines come first (the follower's first tick was stored before it
        // started), then live ones (fifteen lines at five a second reach past it).
        assert!(
            ticks[0] <= stored_before,
            "{ticks:?}: stored up to {stored_before}"
        );
        assert!(
            ticks[ticks.len() - 1] > stored_before + 3,
            "{ticks:?}: stored up to {stored_before}"
        );

        // The secret was masked before the line was stored.
        let all = slipway(
            "-o json logs --service talker --tail 10000 --grep connecting",
            &config,
        )
        .await;
        assert!(all.contains("connecting with ********"), "{all}");
        assert!(!all.contains(SECRET), "{all}");
    };
    let outcome = tokio::spawn(outcome).await;
    let log = dev.log();
    dev.terminate().await;
    if let Err(panic) = outcome {
        panic!("{panic}\n--- slipway dev ---\n{log}");
    }
}
