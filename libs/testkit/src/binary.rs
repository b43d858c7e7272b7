//! Starting a service binary the way scripts do, and stopping it the way an orchestrator
//! does (SIGTERM).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long a binary may take to print `listening on ADDR`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a binary could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("{binary} exited before it was ready ({status}); stderr:\n{stderr}")]
    ExitedEarly {
        binary: String,
        status: String,
        stderr: String,
    },
    #[error("{binary} did not print `listening on ADDR` within {START_TIMEOUT:?}")]
    NotReady { binary: String },
    #[error("cannot signal or wait for {binary}: {source}")]
    Wait {
        binary: String,
        source: std::io::Error,
    },
}

/// A running service binary; killed if dropped without [`ServiceProcess::terminate`].
pub struct ServiceProcess {
    binary: String,
    child: Child,
    addr: SocketAddr,
}

impl ServiceProcess {
    /// Runs `binary [args…] --listen 127.0.0.1:0` with `env` added to the environment and
    /// waits for its `listening on ADDR` line. `args` come first so a subcommand
    /// (`slipway dev`) can be named.
    pub async fn start(
        binary: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, BinaryError> {
        let binary = binary.as_ref();
        let name = binary.display().to_string();
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| BinaryError::Spawn {
            binary: name.clone(),
            source,
        })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(BinaryError::NotReady { binary: name });
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await;
        match ready {
            Ok(Some(addr)) => {
                // Keep draining stdout so the child never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Self {
                    binary: name,
                    child,
                    addr,
                })
            }
            Ok(None) => {
                let status = child
                    .wait()
                    .await
                    .map(|status| status.to_string())
                    .unwrap_or_else(|error| error.to_string());
                let stderr = read_stderr(&mut child).await;
                Err(BinaryError::ExitedEarly {
                    binary: name,
                    status,
                    stderr,
                })
            }
            Err(_) => Err(BinaryError::NotReady { binary: name }),
        }
    }

    /// Where the binary serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> Result<ExitStatus, BinaryError> {
        let wait_error = |source| BinaryError::Wait {
            binary: self.binary.clone(),
            source,
        };
        if let Some(pid) = self.child.id() {
            // `kill(1)` sends the signal without unsafe code in this crate.
            Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await
                .map_err(wait_error)?;
        }
        let binary = self.binary.clone();
        self.child
            .wait()
            .await
            .map_err(|source| BinaryError::Wait { binary, source })
    }
}

/// Runs `binary [args…]` to completion (for binaries expected to refuse to start) and
/// returns its exit status and stderr.
pub async fn run_to_exit(
    binary: impl AsRef<Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(ExitStatus, String), BinaryError> {
    let binary = binary.as_ref();
    let output = tokio::time::timeout(
        START_TIMEOUT,
        Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| BinaryError::NotReady {
        binary: binary.display().to_string(),
    })?
    .map_err(|source| BinaryError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

async fn read_stderr(child: &mut Child) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    stderr
}
