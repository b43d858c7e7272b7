#![forbid(unsafe_code)]
//! Real PostgreSQL and NATS JetStream for Slipway's tests.
//!
//! Slipway tests its storage and messaging against the real servers, never mocks of them
//! (`DESIGN.md`, "Testing"). This crate hands each test what it needs:
//!
//! - [`TestDatabase::postgres`]: a fresh PostgreSQL database of the test's own, dropped
//!   when the value is dropped; [`TestDatabase::sqlite`] for the embedded mode's backend.
//! - [`TestNats`]: a NATS JetStream server URL and a namespace unique to the test.
//!
//! Servers come from `SLIPWAY_TEST_DATABASE_URL` and `SLIPWAY_TEST_NATS_URL` when set
//! (`scripts/test-services.sh` sets them for `make test` and CI, so all test processes
//! share one server of each). Otherwise the first test of a process that needs one starts
//! a throwaway server from local binaries (`initdb`/`pg_ctl`, `nats-server`) in a temporary
//! folder on a free port; a watchdog stops it and removes its folder when the process
//! ends, however it ends. A missing binary is reported with the Debian package to install.
//!
//! ```no_run
//! # async fn t() -> Result<(), slipway_testkit::Error> {
//! let db = slipway_testkit::TestDatabase::postgres().await?;
//! let nats = slipway_testkit::TestNats::start().await?;
//! println!("{} {} {}", db.url(), nats.url(), nats.namespace());
//! # Ok(()) }
//! ```

pub mod binary;
pub mod grpc;
mod nats;
mod postgres;
mod process;
pub mod sandbox;
pub mod surface;

pub use nats::{NATS_URL_ENV, TestNats};
pub use postgres::{DATABASE_URL_ENV, KEEP_DATABASES_ENV, TestDatabase};
pub use sandbox::Sandbox;

/// Why a test could not get its database or server.
///
/// `Clone`, because a failed server start is remembered and reported to every test of the
/// process. `Debug` prints the same sentence as `Display`: a test that fails with `?` or
/// `.expect()` shows its error's `Debug`, and that is where the advice (which package to
/// install, which variable to set) has to be readable.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server binary is not installed.
    #[error(
        "{binary} not found (looked in {searched}): install the Debian package \
         (`apt-get install {package}`), or set {env_var} to a running server"
    )]
    MissingBinary {
        /// What was looked for.
        binary: &'static str,
        /// Where.
        searched: String,
        /// The Debian package that provides it.
        package: &'static str,
        /// The variable that makes it unnecessary.
        env_var: &'static str,
    },

    /// A throwaway server did not start.
    #[error("could not start a throwaway {server} server: {detail}")]
    Start {
        /// `PostgreSQL` or `NATS`.
        server: &'static str,
        /// The tool's output and the end of the server's log.
        detail: String,
    },

    /// A local file or socket operation failed.
    #[error("{context}: {detail}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        detail: String,
    },

    /// Creating or dropping a test database failed.
    #[error("test database: {detail}")]
    Database {
        /// The server's answer.
        detail: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, err: &std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            detail: err.to_string(),
        }
    }
}
