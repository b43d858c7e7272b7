//! The crate's error type.

use sea_orm::DbErr;

/// What can go wrong while connecting to or migrating a database.
///
/// Every variant that could mention the connection URL holds it already redacted, and
/// connection failures carry the driver's message as scrubbed text rather than as a
/// `source`: a `source` would be printed by `{:#}`/error-chain reporters verbatim, and
/// drivers are free to echo the connection string (with its password) in their messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL's scheme is not one Slipway supports (`postgres://`, `postgresql://`,
    /// `sqlite:`).
    #[error("unsupported database url {url}: expected postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },

    /// A local file operation needed for a SQLite database failed (creating its folder).
    #[error("cannot prepare sqlite database {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The server could not be reached, refused the credentials, or the URL was malformed.
    #[error("cannot connect to database {url}: {detail}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's message, scrubbed of the URL and password.
        detail: String,
    },

    /// Taking or releasing the migration lock failed (PostgreSQL).
    #[error("cannot take the migration lock: {detail}")]
    MigrationLock {
        /// What failed.
        detail: String,
    },

    /// A migration, or reading the table of applied migrations, failed.
    #[error("database migration failed: {source}")]
    Migrate {
        /// The error sea-orm-migration returned.
        #[source]
        source: DbErr,
    },
}
