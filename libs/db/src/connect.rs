//! Opening a connection pool.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

use crate::Error;
use crate::url::{backend_for_url, redact_message, redact_url, sqlite_file, sqlite_is_memory};

/// Open a connection pool to `url`.
///
/// - `postgres://user:password@host:port/db` (or `postgresql://`): a pool of at most
///   `max_connections` connections.
/// - `sqlite://path/to/file.db` (relative) or `sqlite:///abs/path.db`: the file and its
///   folder are created when missing, because the embedded mode (`slipway dev`) starts
///   from nothing. `sqlite::memory:` is accepted for throwaway uses.
///
/// `max_connections` of 0 is taken as 1. `connect_timeout` bounds how long one attempt to get a connection may take, both now
/// and later when the pool hands one out, so a dead database surfaces as an error instead
/// of a hung request.
///
/// The first connection is opened before returning: a wrong URL or password fails at
/// start-up, where it is easy to diagnose, rather than on the first request.
pub async fn connect(
    url: &str,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<DatabaseConnection, Error> {
    let backend = backend_for_url(url)?;
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections.max(1))
        .connect_timeout(connect_timeout)
        .acquire_timeout(connect_timeout)
        // sqlx would log every statement at INFO; sea-orm already emits DEBUG tracing
        // events for statements, which is the level they belong at.
        .sqlx_logging(false);

    if backend == DbBackend::Sqlite {
        prepare_sqlite(url, &mut options)?;
    }

    tracing::debug!(url = %redact_url(url), max_connections, "connecting to database");
    Database::connect(options)
        .await
        .map_err(|err| Error::Connect {
            url: redact_url(url),
            detail: redact_message(&err.to_string(), url),
        })
}

/// SQLite-specific settings, applied before the pool opens its first connection.
fn prepare_sqlite(url: &str, options: &mut ConnectOptions) -> Result<(), Error> {
    if sqlite_is_memory(url) {
        // An in-memory database disappears when its last connection closes, so the pool
        // must never retire its connections; and one connection is all it can use anyway.
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        return Ok(());
    }
    if let Some(file) = sqlite_file(url)
        && let Some(parent) = file.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.display().to_string(),
            source,
        })?;
    }
    options.map_sqlx_sqlite_opts(|opts| {
        opts.create_if_missing(true)
            // WAL lets readers proceed while a writer commits: in the embedded mode every
            // service shares one file, and readers must not queue behind each other's writes.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only an OS crash
            // can lose the last commits, an accepted trade for a single-machine dev mode.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
    });
    Ok(())
}
