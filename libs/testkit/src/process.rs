//! Local server processes for tests: finding binaries, free ports, dropping root, and a
//! watchdog that cleans up when the test process is gone.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::Error;

/// A Unix account to run a server as.
#[derive(Debug, Clone, Copy)]
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl User {
    /// Make `command` run as this user.
    pub(crate) fn apply(self, command: &mut Command) {
        // std clears the supplementary groups when a root process switches uid, so the
        // child keeps none of root's privileges.
        command.uid(self.uid).gid(self.gid);
    }
}

/// Whether this process runs as root.
///
/// `/proc/self` is owned by the effective uid; reading it avoids `libc::geteuid`, which
/// would need `unsafe`. Without `/proc` we assume not root and let the server's own
/// check say so.
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The account a server that refuses root (PostgreSQL does) runs as when the tests run as
/// root: `postgres` (created by Debian's `postgresql` package), else `nobody`.
pub(crate) fn unprivileged_user() -> Option<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    ["postgres", "nobody"].iter().find_map(|wanted| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            if name != *wanted {
                return None;
            }
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(User { uid, gid })
        })
    })
}

/// An executable file named `name` on `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before the server binds it, so another process can take it in
/// between; callers retry with a new port when the server fails to start.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error::io("bind 127.0.0.1:0", &e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read the bound port", &e))?
        .port();
    Ok(port)
}

/// A private temporary folder that outlives this handle (the watchdog removes it), owned
/// by `owner` when given so a server running as that user can write into it.
pub(crate) fn server_dir(prefix: &str, owner: Option<User>) -> Result<PathBuf, Error> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| Error::io("create a temporary folder", &e))?
        .keep();
    if let Some(user) = owner {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io(format!("chown {}", dir.display()), &e))?;
    }
    Ok(dir)
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) if e.kind() == ErrorKind::NotFound => String::from("(no log written)"),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A `sh` process that runs a cleanup script once this test process is gone.
///
/// Statics are never dropped, and a test process may also be killed or interrupted, so no
/// Rust destructor can be relied on to stop a server shared by the whole process. Instead
/// the watchdog reads its stdin, a pipe whose only writer is this process: the kernel
/// closes that pipe however the process ends, the read returns end-of-file, and the
/// cleanup runs. It ignores SIGINT/SIGTERM/SIGHUP so that Ctrl-C, which reaches the whole
/// process group, does not kill it before it has cleaned up.
///
/// Keep the value alive (in a static) for as long as the server should run.
#[derive(Debug)]
pub(crate) struct Watchdog {
    _child: Child,
    _pipe: ChildStdin,
}

impl Watchdog {
    /// Start a watchdog that will run `cleanup` (a `sh` snippet that sees `args` as `$1`,
    /// `$2`, …) as `user` when given.
    pub(crate) fn spawn(cleanup: &str, args: &[&OsStr], user: Option<User>) -> Result<Self, Error> {
        let script = format!("trap '' INT TERM HUP\nwhile read -r line; do :; done\n{cleanup}\n");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg("slipway-testkit-watchdog")
            .args(args)
            .current_dir("/")
            .stdin(Stdio::piped())
            // Not the test's stdout/stderr: a harness waiting for those pipes to close
            // would otherwise wait for the watchdog too.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = user {
            user.apply(&mut command);
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::io("start the cleanup watchdog (sh)", &e))?;
        let pipe = child.stdin.take().ok_or_else(|| Error::Io {
            context: "start the cleanup watchdog (sh)".into(),
            detail: "no stdin pipe".into(),
        })?;
        Ok(Self {
            _child: child,
            _pipe: pipe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("definitely-not-a-real-binary-name").is_none());
    }

    #[test]
    fn free_port_is_nonzero() -> Result<(), Error> {
        assert_ne!(free_port()?, 0);
        Ok(())
    }

    #[test]
    fn watchdog_runs_cleanup_when_the_pipe_closes() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", &e))?;
        let marker = dir.path().join("cleaned");
        let watchdog = Watchdog::spawn("touch \"$1\"", &[marker.as_os_str()], None)?;
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!marker.exists(), "cleanup ran while the owner was alive");
        drop(watchdog);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !marker.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(marker.exists(), "cleanup did not run after the pipe closed");
        Ok(())
    }
}
