//! [`TestDatabase`]: a fresh database per test, on PostgreSQL or SQLite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend};

use crate::Error;
use crate::process::{
    User, Watchdog, find_on_path, free_port, is_executable, log_tail, running_as_root, server_dir,
    unprivileged_user,
};

/// The variable naming a PostgreSQL server for the tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. Its user must be allowed to create databases.
pub const DATABASE_URL_ENV: &str = "SLIPWAY_TEST_DATABASE_URL";

/// Set (to anything but `0`) to keep each test's PostgreSQL database after the test, for
/// looking at what it left behind; its URL is printed.
pub const KEEP_DATABASES_ENV: &str = "SLIPWAY_TEST_KEEP_DATABASES";

/// A database that belongs to one test and disappears with it.
///
/// On PostgreSQL every test gets its own database (`slipway_t_<uuid>`), so tests run in
/// parallel without seeing each other's rows and need no cleanup of their own; the
/// database is dropped (`WITH (FORCE)`, closing connections the test left open) when this
/// value is dropped, even if the test panicked. The server comes from
/// `SLIPWAY_TEST_DATABASE_URL`, or is a throwaway one started from the local `initdb` and
/// `pg_ctl` once per test process.
///
/// On SQLite it is a file in a temporary folder, removed on drop.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Postgres { admin_url: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
}

impl TestDatabase {
    /// A new, empty PostgreSQL database.
    pub async fn postgres() -> Result<Self, Error> {
        let admin_url = match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => tokio::task::spawn_blocking(|| shared_server().map(|s| s.admin_url.clone()))
                .await
                .map_err(|e| Error::Start {
                    server: "PostgreSQL",
                    detail: format!("start-up task failed: {e}"),
                })??,
        };
        let name = format!("slipway_t_{}", uuid::Uuid::now_v7().simple());
        admin_exec(&admin_url, &format!("CREATE DATABASE \"{name}\"")).await?;
        let url = with_database(&admin_url, &name);
        Ok(Self {
            url,
            kind: Kind::Postgres { admin_url, name },
        })
    }

    /// A new, empty SQLite database file (the embedded mode's backend).
    pub fn sqlite() -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("slipway-testkit-sqlite-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary folder", &e))?;
        let path = dir.path().join("test.db");
        // Created here so that any SQLite client opens it, not only ones that create
        // missing files.
        std::fs::File::create(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), &e))?;
        Ok(Self {
            url: format!("sqlite://{}", path.display()),
            kind: Kind::Sqlite { _dir: dir },
        })
    }

    /// The URL to connect to: `postgres://…/slipway_t_<uuid>` or `sqlite:///tmp/…/test.db`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> DbBackend {
        match self.kind {
            Kind::Postgres { .. } => DbBackend::Postgres,
            Kind::Sqlite { .. } => DbBackend::Sqlite,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, name } = &self.kind else {
            return;
        };
        if std::env::var(KEEP_DATABASES_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            eprintln!("slipway-testkit: keeping test database {}", self.url);
            return;
        }
        // Drop may run inside the test's runtime (where blocking on a future would panic)
        // or outside any runtime, so the DROP runs on a thread with a runtime of its own.
        let admin_url = admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("build a runtime to drop the test database", &e))?;
            runtime.block_on(admin_exec(&admin_url, &sql))
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                eprintln!("slipway-testkit: could not drop test database {name}: {err}")
            }
            Err(_) => eprintln!("slipway-testkit: dropping test database {name} panicked"),
        }
    }
}

/// Run one statement on the server's administrative database, on a connection of its
/// own. A pool is not kept across tests: each `#[tokio::test]` has its own runtime, and
/// connections opened on one runtime die with it.
async fn admin_exec(admin_url: &str, sql: &str) -> Result<(), Error> {
    let mut options = ConnectOptions::new(admin_url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(15))
        .acquire_timeout(Duration::from_secs(15))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| Error::Database {
            detail: format!("cannot connect to the PostgreSQL test server: {e}"),
        })?;
    let result = db.execute_unprepared(sql).await;
    let _ = db.close().await;
    result.map(|_| ()).map_err(|e| Error::Database {
        detail: format!("`{sql}` failed: {e}"),
    })
}

/// `url` with its database name replaced by `name`, query parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let after_userinfo = url[authority_start..]
        .rfind('@')
        .map_or(authority_start, |at| authority_start + at + 1);
    let tail = &url[after_userinfo..];
    let path_start = tail
        .find(['/', '?'])
        .map_or(url.len(), |i| after_userinfo + i);
    let query = url[path_start..]
        .find('?')
        .map_or("", |i| &url[path_start + i..]);
    format!("{}/{name}{query}", &url[..path_start])
}

/// Run by the watchdog once the test process is gone: stop the server (`$1` is `pg_ctl`,
/// `$2` the data folder) without a checkpoint, since nothing in it is kept, then remove
/// its folder (`$3`).
const CLEANUP: &str = r#"
"$1" -D "$2" stop -m immediate -w >/dev/null 2>&1
rm -rf "$3"
"#;

/// The throwaway server shared by every test of this process.
#[derive(Debug)]
struct Server {
    admin_url: String,
    _watchdog: Watchdog,
}

/// Start the throwaway server on first use. A failure is remembered, so every test of the
/// process reports the same cause instead of each retrying a slow, doomed start.
fn shared_server() -> Result<&'static Server, Error> {
    static SERVER: OnceLock<Result<Server, Error>> = OnceLock::new();
    SERVER
        .get_or_init(start_server)
        .as_ref()
        .map_err(Clone::clone)
}

/// Where the PostgreSQL server binaries live: next to `pg_ctl` on `PATH` (following a
/// symlink such as `/usr/local/bin/pg_ctl`), else the newest `/usr/lib/postgresql/*/bin`,
/// where Debian puts them without adding them to `PATH`.
fn find_bin_dir() -> Result<PathBuf, Error> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| is_executable(&dir.join(b)))
    };
    if let Some(pg_ctl) = find_on_path("pg_ctl")
        && let Ok(real) = std::fs::canonicalize(&pg_ctl)
        && let Some(dir) = real.parent()
        && complete(dir)
    {
        return Ok(dir.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::MissingBinary {
            binary: "PostgreSQL server binaries (initdb, pg_ctl, postgres)",
            searched: "PATH and /usr/lib/postgresql/*/bin".into(),
            package: "postgresql",
            env_var: DATABASE_URL_ENV,
        })
}

fn start_server() -> Result<Server, Error> {
    let bin = find_bin_dir()?;
    // initdb and postgres refuse to run as root.
    let user = if running_as_root() {
        Some(unprivileged_user().ok_or_else(|| {
            Error::Start {
                server: "PostgreSQL",
                detail: "running as root, and PostgreSQL refuses root; no `postgres` or `nobody` \
                     account found to run it as (apt-get install postgresql creates `postgres`)"
                    .into(),
            }
        })?)
    } else {
        None
    };
    let dir = server_dir("slipway-testkit-pg-", user)?;
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let pg_ctl = bin.join("pg_ctl");

    // The watchdog exists before the server does, so there is no moment at which a dying
    // test process would leave a running server behind.
    let watchdog = Watchdog::spawn(
        CLEANUP,
        &[pg_ctl.as_os_str(), data.as_os_str(), dir.as_os_str()],
        user,
    )?;

    let mut initdb = Command::new(bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(&mut initdb, &dir, user, "initdb")?;

    let mut last_failure = String::new();
    for _attempt in 0..5 {
        let port = free_port()?;
        // A throwaway cluster trades durability for speed, listens on loopback only, and
        // opens no Unix socket (its folder may be longer than a socket path may be).
        let settings = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300"
        );
        let mut start = Command::new(&pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &settings, "start"]);
        match run(&mut start, &dir, user, "pg_ctl start") {
            Ok(()) => {
                tracing::info!(port, dir = %dir.display(), "started throwaway PostgreSQL");
                return Ok(Server {
                    admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    _watchdog: watchdog,
                });
            }
            // Most likely the port was taken between choosing and binding it: try another.
            Err(err) => last_failure = format!("{err}\n{}", log_tail(&log, 20)),
        }
    }
    Err(Error::Start {
        server: "PostgreSQL",
        detail: last_failure,
    })
}

/// Run a PostgreSQL tool to completion, as `user` when given.
fn run(command: &mut Command, dir: &Path, user: Option<User>, what: &str) -> Result<(), Error> {
    command.current_dir(dir).env("LC_ALL", "C");
    if let Some(user) = user {
        user.apply(command);
    }
    let output = command.output().map_err(|e| Error::Start {
        server: "PostgreSQL",
        detail: format!("cannot run {what}: {e}"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Start {
        server: "PostgreSQL",
        detail: format!(
            "{what} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p/w@h:1/db?sslmode=disable", "x"),
            "postgres://u:p/w@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(
            with_database("postgresql://h?application_name=t", "x"),
            "postgresql://h/x?application_name=t"
        );
    }

    #[test]
    fn sqlite_database_is_a_file_removed_on_drop() -> Result<(), Error> {
        let db = TestDatabase::sqlite()?;
        assert_eq!(db.backend(), DbBackend::Sqlite);
        let path = PathBuf::from(db.url().trim_start_matches("sqlite://"));
        assert!(path.is_file(), "{}", path.display());
        drop(db);
        assert!(!path.exists());
        Ok(())
    }
}
