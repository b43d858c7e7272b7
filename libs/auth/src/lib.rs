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
//!
//! Around it:
//!
//! - [`convert`]: the wire principal of `AuthService.Authenticate` to and from
//!   [`rbac::Principal`], custom role grants included.
//! - [`cache`] and [`remote`]: [`RemoteResolver`] asks identity, caches by credential hash
//!   for a short TTL, and drops entries at once on identity change events.
//! - [`caching`]: [`CachingResolver`], the same cache and event follower around any
//!   resolver; identity wraps its store resolver in it so that `Check` and every
//!   authenticated call do not read the database each time.
//! - [`oidc`]: verification of OIDC JWTs against the issuer's JWKS, for identity.

pub mod authn;
pub mod cache;
pub mod caching;
pub mod convert;
pub mod credential;
pub mod oidc;
pub mod rbac;
pub mod remote;

pub use authn::{AuthenticateLayer, AuthnError, PrincipalResolver, principal};
pub use caching::CachingResolver;
pub use credential::{Credential, CredentialError, CredentialHash, CredentialKind, NewCredential};
pub use oidc::{OidcClaims, OidcError, OidcSettings, OidcSetupError, OidcVerifier};
pub use rbac::{Action, Decision, Principal, Resource, authorize};
pub use remote::{RemoteResolver, RemoteSettings};
