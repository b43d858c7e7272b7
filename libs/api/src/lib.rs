#![forbid(unsafe_code)]
//! What every Slipway gRPC adapter shares, whatever its domain:
//!
//! - [`validation`]: checks that need no database, collected into one `INVALID_ARGUMENT`
//!   with a `BadRequest` field violation per bad field (API-STYLE.md, "Errors");
//! - [`page`]: opaque page tokens bound to the listing they continue (API-STYLE.md,
//!   "Standard methods");
//! - [`glob`]: the name globs deployment rules choose environments with.

pub mod glob;
pub mod page;
pub mod validation;

pub use validation::Violations;

/// A stored time as a protobuf timestamp, as every API answers times.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Always below 10^9, so it fits.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
