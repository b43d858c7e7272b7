//! Health checks of a local process: an HTTP GET (a minimal HTTP/1.1 request written by
//! hand over a `TcpStream`, so the agent needs no HTTP client for it), a TCP connect, or a
//! command that must exit 0.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::spec::{CheckSpec, ProbeSpec};

/// Runs one check of `probe` within its timeout; `map_port` turns a declared port into the
/// port this instance actually listens on. `Err` says why it failed, for messages.
pub(super) async fn check(
    probe: &ProbeSpec,
    map_port: impl Fn(u16) -> u16,
    working_dir: &Path,
    env: &[(String, String)],
) -> Result<(), String> {
    let attempt = async {
        match &probe.check {
            CheckSpec::Http { path, port } => http_get(map_port(*port), path).await,
            CheckSpec::Tcp { port } => TcpStream::connect(("127.0.0.1", map_port(*port)))
                .await
                .map(drop)
                .map_err(|e| format!("tcp port {}: {e}", map_port(*port))),
            CheckSpec::Exec { argv } => exec(argv, working_dir, env).await,
        }
    };
    match tokio::time::timeout(probe.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", probe.timeout)),
    }
}

/// Sends `GET path` to 127.0.0.1:`port` and accepts a 200-399 status line.
async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("http get :{port}{path}: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(fail)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slipway-agent\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(fail)?;
    // The status line is all we need: `HTTP/1.1 200 OK`.
    let mut head = Vec::with_capacity(64);
    let mut byte = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut byte).await.map_err(fail)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("http get :{port}{path}: not an http answer"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("http get :{port}{path}: status {status}"))
    }
}

async fn exec(argv: &[String], working_dir: &Path, env: &[(String, String)]) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("exec probe without a command")?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .current_dir(working_dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exec {program}: {status}"))
    }
}

/// Time until the next check: quick polls until the probe first passes (a local process
/// is usually up in well under a second, and waiting the proto's default 10 s period would
/// make every rollout slow), the probe's period afterwards.
pub(super) fn next_delay(probe: &ProbeSpec, passed_once: bool, poll: Duration) -> Duration {
    if passed_once {
        probe.period
    } else {
        probe.period.min(poll)
    }
}
