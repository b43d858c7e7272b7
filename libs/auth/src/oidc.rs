//! Verification of OIDC JWTs from the one configured issuer: the credential of users.
//!
//! A JWT is trusted only if it is signed by a key the issuer publishes (its JWKS), names
//! the issuer (`iss`) and this installation (`aud`), and is within its validity window
//! (`exp`, `nbf`, with a small leeway for clock skew). Only asymmetric algorithms are
//! accepted: with a shared-secret algorithm anyone holding the "public" key could sign.
//!
//! The JWKS is fetched from the configured URL, or discovered through
//! `{issuer}/.well-known/openid-configuration`, and cached: verifying must not cost a
//! network round trip. Issuers rotate keys by publishing a new one first and signing with
//! it later, so a token whose `kid` is not in the cached set triggers one refetch, rate
//! limited so that tokens with made-up `kid`s cannot turn the verifier into a load
//! generator against the issuer.
//!
//! Fetches use the hyper client already in the tree, over HTTPS (rustls, trusting the
//! system's certificate store plus [`OidcSettings::extra_roots`], for issuers behind an
//! installation's own CA) or plain HTTP (a sidecar or a test issuer on loopback).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::authn::AuthnError;

/// Largest discovery document or JWKS accepted; real ones are a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where and what to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer URL, exactly as it appears in `iss`.
    pub issuer: String,
    /// The audience this installation is registered as; `aud` must contain it.
    pub audience: String,
    /// The JWKS URL; unset: discovered from the issuer's `openid-configuration`.
    pub jwks_url: Option<String>,
    /// Signature algorithms accepted (asymmetric ones only; others are ignored).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long a fetched JWKS is used before it is fetched again.
    pub jwks_ttl: Duration,
    /// Least time between two fetches caused by an unknown `kid`.
    pub min_refetch_interval: Duration,
    /// Deadline of each HTTP fetch.
    pub fetch_timeout: Duration,
    /// Certificates trusted for HTTPS fetches besides the system's: an internal CA that
    /// signed a self-hosted issuer's certificate.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl OidcSettings {
    /// Settings for `issuer` and `audience`, with discovery and the defaults: RS256, RS384,
    /// RS512, PS256, ES256, ES384; 60 s leeway; JWKS kept an hour, refetched at most every
    /// 10 s for unknown keys; 5 s fetch deadline.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::ES384,
            ],
            leeway: Duration::from_secs(60),
            jwks_ttl: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
            extra_roots: Vec::new(),
        }
    }

    /// Uses this JWKS URL instead of discovery.
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }
}

/// What a verified JWT says about its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcClaims {
    /// `iss`: the configured issuer.
    pub issuer: String,
    /// `sub`: the user's stable id at the issuer; with `issuer`, the user's identity.
    pub subject: String,
    /// `email`, if the issuer sent it.
    pub email: Option<String>,
    /// `name`, if the issuer sent it.
    pub name: Option<String>,
    /// `exp`: when the token stops being valid (the principal's `expire_time`).
    pub expire_time: SystemTime,
}

/// Why a JWT was not accepted. The detail of [`OidcError::Invalid`] is for logs only: the
/// caller answers TOKEN_INVALID and never says which check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Malformed, bad signature, unknown key, wrong issuer or audience, not yet valid, or
    /// an algorithm not accepted (UNAUTHENTICATED, TOKEN_INVALID).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Past `exp` (UNAUTHENTICATED, TOKEN_EXPIRED).
    #[error("expired token")]
    Expired,
    /// The issuer's keys could not be fetched; nothing is known about the token
    /// (UNAVAILABLE: retry).
    #[error("cannot fetch the issuer's keys: {0}")]
    Unavailable(String),
}

/// Why a verifier cannot be built: its TLS client, at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    /// A certificate of [`OidcSettings::extra_roots`] is not a usable trust anchor.
    #[error("a configured root certificate is unusable: {0}")]
    Root(rustls::Error),
    #[error("no TLS configuration for OIDC fetches: {0}")]
    Tls(rustls::Error),
}

impl From<OidcError> for AuthnError {
    fn from(error: OidcError) -> Self {
        match error {
            OidcError::Invalid(_) => AuthnError::Invalid,
            OidcError::Expired => AuthnError::Expired,
            OidcError::Unavailable(detail) => AuthnError::Unavailable(detail),
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    sub: String,
    exp: f64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// Verifies JWTs of one issuer; cheap to share (`Arc`), keys cached inside.
pub struct OidcVerifier {
    settings: OidcSettings,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    keys: Mutex<Option<Arc<Keys>>>,
    /// One fetch at a time: concurrent requests with a new `kid` share one refetch.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier; nothing is fetched until the first token.
    pub fn new(settings: OidcSettings) -> Result<Self, OidcSetupError> {
        let client = Client::builder(TokioExecutor::new()).build(connector(&settings.extra_roots)?);
        Ok(Self {
            settings,
            client,
            keys: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Checks `token`'s signature, issuer, audience and validity window, and returns its
    /// claims.
    pub async fn verify(&self, token: &str) -> Result<OidcClaims, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcError::Invalid(format!("header: {e}")))?;
        if !self.settings.algorithms.contains(&header.alg) || !is_asymmetric(header.alg) {
            return Err(OidcError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{:?}", header.alg)
        {
            return Err(OidcError::Invalid(
                "the key is published for another algorithm".into(),
            ));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| OidcError::Invalid(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => OidcError::Expired,
                    _ => OidcError::Invalid(e.to_string()),
                }
            })?;
        let claims = data.claims;
        let expire_time = (claims.exp.is_finite() && claims.exp >= 0.0)
            .then(|| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs_f64(claims.exp)))
            .flatten()
            .ok_or_else(|| OidcError::Invalid("exp out of range".into()))?;
        Ok(OidcClaims {
            issuer: claims.iss,
            subject: claims.sub,
            email: claims.email.filter(|e| !e.is_empty()),
            name: claims.name.filter(|n| !n.is_empty()),
            expire_time,
        })
    }

    fn cached(&self) -> Option<Arc<Keys>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key for `kid`: from the cached set if fresh and present, else after one
    /// (rate-limited) refetch.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, OidcError> {
        let asked = Instant::now();
        if let Some(keys) = self.cached() {
            let fresh = keys.fetched.elapsed() < self.settings.jwks_ttl;
            if fresh {
                if let Some(jwk) = find(&keys.set, kid) {
                    return Ok(jwk);
                }
                if keys.fetched.elapsed() < self.settings.min_refetch_interval {
                    return Err(OidcError::Invalid("unknown signing key".into()));
                }
            }
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have refetched while this one waited.
        if let Some(keys) = self.cached()
            && keys.fetched >= asked
        {
            return find(&keys.set, kid)
                .ok_or_else(|| OidcError::Invalid("unknown signing key".into()));
        }
        match self.fetch_jwks().await {
            Ok(set) => {
                let keys = Arc::new(Keys {
                    set,
                    fetched: Instant::now(),
                });
                *self
                    .keys
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&keys));
                find(&keys.set, kid).ok_or_else(|| OidcError::Invalid("unknown signing key".into()))
            }
            Err(error) => {
                // A stale set still vouches for the keys it holds; better than refusing
                // every user while the issuer is briefly unreachable.
                if let Some(jwk) = self.cached().and_then(|keys| find(&keys.set, kid)) {
                    tracing::warn!(%error, "cannot refresh the issuer's keys; using the cached set");
                    return Ok(jwk);
                }
                Err(error)
            }
        }
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, OidcError> {
        let url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => {
                let base = self.settings.issuer.trim_end_matches('/');
                let discovery: Discovery = self
                    .get_json(&format!("{base}/.well-known/openid-configuration"))
                    .await?;
                // OIDC Discovery: the document must name the issuer it was fetched for.
                if discovery.issuer != self.settings.issuer {
                    return Err(OidcError::Unavailable(
                        "the discovery document names another issuer".into(),
                    ));
                }
                discovery.jwks_uri
            }
        };
        self.get_json(&url).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let fail = |what: String| OidcError::Unavailable(format!("{url}: {what}"));
        let uri: http::Uri = url.parse().map_err(|_| fail("not a URL".into()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(fail("only http:// and https:// URLs are fetched".into()));
        }
        let fetch = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !response.status().is_success() {
                return Err(fail(format!("status {}", response.status())));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
        };
        tokio::time::timeout(self.settings.fetch_timeout, fetch)
            .await
            .map_err(|_| fail("timed out".into()))?
    }
}

/// HTTPS (or plain HTTP) with rustls on ring, the provider the rest of the tree uses,
/// named explicitly so no process-wide default is needed. Roots: the system's store (what
/// cannot be loaded is logged and skipped) and `extra_roots`.
fn connector(
    extra_roots: &[CertificateDer<'static>],
) -> Result<HttpsConnector<HttpConnector>, OidcSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "a system certificate store could not be read");
    }
    let (_, unusable) = roots.add_parsable_certificates(native.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "system certificates skipped");
    }
    for root in extra_roots {
        roots.add(root.clone()).map_err(OidcSetupError::Root)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(OidcSetupError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}

fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The key named `kid`; a token without `kid` may use the set's only key.
fn find(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None => match set.keys.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        },
    }
}
