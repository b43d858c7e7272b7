//! [`TestNats`]: a NATS JetStream server for tests, and a namespace per test.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::{Watchdog, find_on_path, free_port, log_tail, server_dir};

/// The variable naming a NATS server (with JetStream) for the tests, e.g.
/// `nats://127.0.0.1:4222`.
pub const NATS_URL_ENV: &str = "SLIPWAY_TEST_NATS_URL";

/// A NATS JetStream server to test against, and a namespace of this test's own.
///
/// The server is `SLIPWAY_TEST_NATS_URL`, or a throwaway `nats-server -js` started once
/// per test process. Tests share it, so each one puts [`namespace`](Self::namespace)
/// into its stream names and subject prefixes: parallel tests then never consume each
/// other's messages. Dropping it deletes the streams of its namespace: the services under
/// test create the four platform streams with production-sized limits, and JetStream
/// reserves those limits, so leftovers would soon exhaust the server's storage.
#[derive(Debug)]
pub struct TestNats {
    url: String,
    namespace: String,
}

impl TestNats {
    /// The server (starting it on first use) and a fresh namespace.
    pub async fn start() -> Result<Self, Error> {
        let url = match std::env::var(NATS_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => tokio::task::spawn_blocking(|| shared_server().map(|s| s.url.clone()))
                .await
                .map_err(|e| Error::Start {
                    server: "NATS",
                    detail: format!("start-up task failed: {e}"),
                })??,
        };
        purge_stale_streams_once(&url).await;
        Ok(Self {
            url,
            namespace: new_namespace(),
        })
    }

    /// The server URL, `nats://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's namespace: `t` and 32 lowercase hex digits, valid in stream names,
    /// consumer names and subject tokens alike.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let url = self.url.clone();
        let prefix = format!("{}_", self.namespace.to_uppercase());
        // Drop may run inside the test's runtime, so the clean-up gets a runtime of its own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(delete_streams(&url, |name, _| name.starts_with(&prefix)));
            Ok::<(), std::io::Error>(())
        })
        .join();
        if !matches!(outcome, Ok(Ok(()))) {
            eprintln!(
                "slipway-testkit: could not delete the streams of {}",
                self.namespace
            );
        }
    }
}

/// Streams of test namespaces older than this are leftovers of killed test runs.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Once per test process, deletes test-namespace streams (`T` + 32 hex digits + `_…`)
/// created more than [`STALE_AFTER`] ago: no test runs that long, so their owner died.
async fn purge_stale_streams_once(url: &str) {
    static PURGED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    PURGED
        .get_or_init(|| async {
            let now = std::time::SystemTime::now();
            delete_streams(url, |name, created| {
                let is_test_stream = name.len() > 34
                    && name.starts_with('T')
                    && name.as_bytes()[33] == b'_'
                    && name[1..33].bytes().all(|b| b.is_ascii_hexdigit());
                let age = now.duration_since(created).unwrap_or_default();
                is_test_stream && age > STALE_AFTER
            })
            .await;
        })
        .await;
}

/// Deletes the streams for which `doomed(name, created)` holds. Best effort: a test
/// server that cannot be reached here will fail the test elsewhere, with a better message.
async fn delete_streams(url: &str, doomed: impl Fn(&str, std::time::SystemTime) -> bool) {
    use futures::StreamExt as _;
    let Ok(client) = async_nats::connect(url).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(client);
    let names: Vec<String> = jetstream
        .stream_names()
        .filter_map(|name| async move { name.ok() })
        .collect()
        .await;
    for name in names {
        let Ok(stream) = jetstream.get_stream(&name).await else {
            continue;
        };
        let created: std::time::SystemTime = stream.cached_info().created.into();
        if doomed(&name, created) {
            let _ = jetstream.delete_stream(&name).await;
        }
    }
}

fn new_namespace() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

#[derive(Debug)]
struct Server {
    url: String,
    // Kept so the process is not reaped early; the watchdog stops it.
    _child: Mutex<Child>,
    _watchdog: Watchdog,
}

/// Run by the watchdog once the test process is gone: stop the server (`$1` is its pid
/// file), then remove its folder (`$2`).
const CLEANUP: &str = r#"
if [ -f "$1" ]; then
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null
  # Wait up to 5 s for it to exit; a zombie has exited (its new parent may reap it late).
  i=0
  while [ -d "/proc/$pid" ] && ! grep -q zombie "/proc/$pid/status" 2>/dev/null && [ "$i" -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -9 "$pid" 2>/dev/null
fi
rm -rf "$2"
"#;

fn shared_server() -> Result<&'static Server, Error> {
    static SERVER: OnceLock<Result<Server, Error>> = OnceLock::new();
    SERVER
        .get_or_init(start_server)
        .as_ref()
        .map_err(Clone::clone)
}

fn start_server() -> Result<Server, Error> {
    let binary = find_on_path("nats-server")
        .or_else(|| {
            ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
                .iter()
                .map(Path::new)
                .find(|p| crate::process::is_executable(p))
                .map(Path::to_path_buf)
        })
        .ok_or_else(|| Error::MissingBinary {
            binary: "nats-server",
            searched: "PATH, /usr/sbin, /usr/local/bin".into(),
            package: "nats-server",
            env_var: NATS_URL_ENV,
        })?;
    let dir = server_dir("slipway-testkit-nats-", None)?;
    let pid_file = dir.join("nats.pid");
    let log = dir.join("nats.log");
    let watchdog = Watchdog::spawn(CLEANUP, &[pid_file.as_os_str(), dir.as_os_str()], None)?;

    let mut last_failure = String::new();
    for _attempt in 0..5 {
        let port = free_port()?;
        let mut child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Start {
                server: "NATS",
                detail: format!("cannot run {}: {e}", binary.display()),
            })?;
        std::fs::write(&pid_file, child.id().to_string())
            .map_err(|e| Error::io(format!("write {}", pid_file.display()), &e))?;

        match wait_ready(&mut child, port) {
            Ok(()) => {
                tracing::info!(port, dir = %dir.display(), "started throwaway NATS");
                return Ok(Server {
                    url: format!("nats://127.0.0.1:{port}"),
                    _child: Mutex::new(child),
                    _watchdog: watchdog,
                });
            }
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                last_failure = format!("{reason}\n{}", log_tail(&log, 20));
            }
        }
    }
    Err(Error::Start {
        server: "NATS",
        detail: last_failure,
    })
}

/// Wait until the server greets clients with JetStream enabled, or give up.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nats-server exited with {status}"));
        }
        match greeting(&addr) {
            Ok(info) if info.contains("\"jetstream\":true") => return Ok(()),
            Ok(_) => return Err("nats-server answered without JetStream".into()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("nats-server did not answer on port {port}: {e}")),
        }
    }
}

/// The `INFO {…}` line a NATS server sends first to every client.
pub(crate) fn greeting(addr: &SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.starts_with("INFO ") {
        Ok(line)
    } else {
        Err(std::io::Error::other(format!(
            "unexpected greeting: {line:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_unique_lowercase_alnum() {
        let a = new_namespace();
        let b = new_namespace();
        assert_ne!(a, b);
        for ns in [&a, &b] {
            assert!(
                ns.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{ns}"
            );
            assert!(ns.starts_with('t'));
        }
    }
}
