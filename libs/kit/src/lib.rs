#![forbid(unsafe_code)]
//! The one way a Slipway service runs.
//!
//! A service crate builds a [`GrpcServer`], adds the gRPC services it implements, declares
//! the API packages it owns (every service of those packages it has not built yet answers
//! `UNIMPLEMENTED` with a sentence), and calls [`GrpcServer::serve`] with a bound listener
//! and a shutdown future. The kit adds what every server needs: `grpc.health.v1`, server
//! reflection (v1 and v1alpha), gRPC-Web, the tower stack in [`layers`], and a graceful
//! shutdown that turns health to NOT_SERVING before draining.

pub mod binary;
pub mod layers;
mod planned;
mod server;
mod shutdown;

pub use server::{GrpcServer, KitError};
pub use shutdown::shutdown_signal;
