#![forbid(unsafe_code)]
//! Authentication material and authorization rules shared by every Slipway service.
//!
//! Two plain-Rust halves, with no I/O so they can run on every request and be tested
//! exhaustively:
//!
//! - [`credential`]: the `slp_`/`slpa_`/`slps_`/`slpi_` tokens: generation from the OS
//!   CSPRNG, offline format and checksum validation (a typo never reaches a database),
//!   SHA-256 hashing for storage, constant-time comparison.
//! - [`rbac`]: the action vocabulary, built-in and custom roles, principals, resources, and
//!   [`rbac::authorize`], which decides allow or deny and how to answer a denial
//!   (PERMISSION_DENIED, NOT_FOUND across organizations, UNAUTHENTICATED).
//!
//! [`authn`] is the gRPC edge built on them: the layer that reads `authorization: Bearer`
//! and resolves it through a service-specific [`PrincipalResolver`].

pub mod authn;
pub mod credential;
pub mod rbac;

pub use authn::{AuthenticateLayer, AuthnError, PrincipalResolver, principal};
pub use credential::{Credential, CredentialError, CredentialHash, CredentialKind, NewCredential};
pub use rbac::{Action, Decision, Principal, Resource, authorize};
