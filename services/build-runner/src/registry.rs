//! The few calls of the OCI distribution API the runner makes itself: look a manifest up
//! (the image cache), and put a manifest under another tag (reusing a cached image).
//! Blobs are pushed by the image builders, which speak the same API.
//!
//! Authentication follows what registries do: HTTP Basic with the job's credentials, and
//! when the registry answers `401` with a `Bearer` challenge, a token fetched from the
//! challenge's realm with those credentials (the token flow of Docker Hub, GHCR, Harbor…).

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};
use slipway_proto::build::v1 as build;

/// The manifest types the runner asks for, newest first.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest manifest or token answer read (manifests are a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest one registry call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the registry could not be used; every variant is `BUILD_FAILURE_REASON_REGISTRY_ERROR`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The job's registry target is not usable.
    #[error("the registry target is invalid: {0}")]
    Invalid(String),
    /// The registry could not be reached.
    #[error("registry {host} cannot be reached: {detail}")]
    Unreachable { host: String, detail: String },
    /// The registry refused the credentials.
    #[error("registry {host} refused the login (http {status})")]
    Unauthorized { host: String, status: u16 },
    /// The registry answered something else than expected.
    #[error("registry {host} answered http {status} to {what}")]
    Refused {
        host: String,
        status: u16,
        what: &'static str,
    },
    /// The manifest served does not hash to its announced digest.
    #[error("registry {host} served a manifest whose digest does not match")]
    DigestMismatch { host: String },
}

/// A manifest as the registry stores it: its bytes are what the digest covers.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub body: Bytes,
    /// `sha256:<64 hex>` of `body`.
    pub digest: String,
}

/// `sha256:<hex>` of `bytes`, the digest form of the distribution API.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One repository of one registry, with the job's credentials.
pub struct Registry {
    scheme: &'static str,
    host: String,
    repository: String,
    basic: Option<String>,
    bearer: Mutex<Option<String>>,
    http: Client<HttpConnector, Full<Bytes>>,
    https: Option<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
}

impl Registry {
    /// The registry of `target`. `http://` means a plain-HTTP registry (local ones only,
    /// as the contract says); no scheme means HTTPS.
    pub fn new(target: &build::RegistryTarget) -> Result<Self, RegistryError> {
        let url = target.url.trim().trim_end_matches('/');
        let (scheme, host) = if let Some(rest) = url.strip_prefix("http://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            ("https", rest)
        } else {
            ("https", url)
        };
        if host.is_empty()
            || host.contains(['/', '@', ' ', '?', '#'])
            || host.parse::<http::uri::Authority>().is_err()
        {
            return Err(RegistryError::Invalid(
                "its url must be a registry host with an optional port and scheme".to_owned(),
            ));
        }
        let repository = target.repository.trim_matches('/').to_owned();
        if !valid_repository(&repository) {
            return Err(RegistryError::Invalid(
                "its repository must be lowercase path components ([a-z0-9._-], separated by '/')"
                    .to_owned(),
            ));
        }
        let basic = target.credentials.as_ref().and_then(|c| {
            (!c.username.is_empty() || !c.password.is_empty()).then(|| {
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            })
        });
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let https = if scheme == "https" {
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| RegistryError::Unreachable {
                    host: host.to_owned(),
                    detail: format!("no trusted certificates on this runner ({e})"),
                })?
                .https_only()
                .enable_http1()
                .build();
            Some(Client::builder(TokioExecutor::new()).build(tls))
        } else {
            None
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            repository,
            basic,
            bearer: Mutex::new(None),
            http,
            https,
        })
    }

    /// The registry host (with port), as image references and auth files name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the registry speaks plain HTTP.
    pub fn insecure(&self) -> bool {
        self.scheme == "http"
    }

    /// The image reference `<host>/<repository>:<tag>`.
    pub fn reference(&self, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repository)
    }

    /// The job's credentials as `user:password`, for builders that take an auth file.
    pub fn basic_auth(&self) -> Option<&str> {
        self.basic.as_deref()
    }

    /// The manifest under `reference` (a tag or a digest), or `None` when the repository
    /// has none.
    pub async fn manifest(&self, reference: &str) -> Result<Option<Manifest>, RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let (status, headers, body) = self
            .call(Method::GET, &path, None, "a manifest lookup")
            .await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => return Err(self.refused(status, "a manifest lookup")),
        }
        let digest = digest_of(&body);
        let announced = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        if announced.is_some_and(|a| a != digest)
            || (reference.starts_with("sha256:") && reference != digest)
        {
            return Err(RegistryError::DigestMismatch {
                host: self.host.clone(),
            });
        }
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        Ok(Some(Manifest {
            media_type,
            body,
            digest,
        }))
    }

    /// Stores `manifest` under `tag` (the blobs it names are already in the repository);
    /// returns its digest.
    pub async fn put_manifest(
        &self,
        tag: &str,
        manifest: &Manifest,
    ) -> Result<String, RegistryError> {
        let path = format!("/v2/{}/manifests/{tag}", self.repository);
        let (status, _, _) = self
            .call(
                Method::PUT,
                &path,
                Some((manifest.media_type.as_str(), manifest.body.clone())),
                "a manifest push",
            )
            .await?;
        if status == StatusCode::CREATED || status == StatusCode::OK {
            Ok(manifest.digest.clone())
        } else {
            Err(self.refused(status, "a manifest push"))
        }
    }

    fn refused(&self, status: StatusCode, what: &'static str) -> RegistryError {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            RegistryError::Unauthorized {
                host: self.host.clone(),
                status: status.as_u16(),
            }
        } else {
            RegistryError::Refused {
                host: self.host.clone(),
                status: status.as_u16(),
                what,
            }
        }
    }

    /// One call, authenticated; on a `Bearer` challenge, fetches a token and calls again.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        what: &'static str,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), RegistryError> {
        let uri = format!("{}://{}{path}", self.scheme, self.host);
        let first = self
            .send(method.clone(), &uri, body.clone(), self.authorization())
            .await?;
        if first.0 != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .1
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer);
        let Some(challenge) = challenge else {
            return Err(self.refused(first.0, what));
        };
        let token = self.token(&challenge).await?;
        let authorization = format!("Bearer {token}");
        if let Ok(mut bearer) = self.bearer.lock() {
            *bearer = Some(authorization.clone());
        }
        self.send(method, &uri, body, Some(authorization)).await
    }

    fn authorization(&self) -> Option<String> {
        if let Some(bearer) = self.bearer.lock().ok().and_then(|b| b.clone()) {
            return Some(bearer);
        }
        self.basic.as_ref().map(|b| format!("Basic {b}"))
    }

    /// A token from the challenge's realm, for the challenge's scope (widened to push).
    async fn token(&self, challenge: &Challenge) -> Result<String, RegistryError> {
        let scope = format!("repository:{}:pull,push", self.repository);
        let mut query = vec![("scope", scope.as_str())];
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        let query: Vec<String> = query
            .into_iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let separator = if challenge.realm.contains('?') {
            '&'
        } else {
            '?'
        };
        let uri = format!("{}{separator}{}", challenge.realm, query.join("&"));
        if !(uri.starts_with("https://") || (self.insecure() && uri.starts_with("http://"))) {
            return Err(RegistryError::Refused {
                host: self.host.clone(),
                status: 401,
                what: "a token request (its realm is not https)",
            });
        }
        let basic = self.basic.as_ref().map(|b| format!("Basic {b}"));
        let (status, _, body) = self.send(Method::GET, &uri, None, basic).await?;
        if status != StatusCode::OK {
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                status: status.as_u16(),
            });
        }
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| RegistryError::Refused {
                host: self.host.clone(),
                status: status.as_u16(),
                what: "a token request (not json)",
            })?;
        answer
            .get("token")
            .or_else(|| answer.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or(RegistryError::Unauthorized {
                host: self.host.clone(),
                status: status.as_u16(),
            })
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<(&str, Bytes)>,
        authorization: Option<String>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), RegistryError> {
        let unreachable = |detail: String| RegistryError::Unreachable {
            host: self.host.clone(),
            detail,
        };
        let uri: Uri = uri
            .parse()
            .map_err(|_| RegistryError::Invalid("its url does not make a valid uri".to_owned()))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(header::ACCEPT, ACCEPT)
            .header(header::USER_AGENT, "slipway-build-runner");
        if let Some(authorization) = authorization
            && let Ok(value) = HeaderValue::from_str(&authorization)
        {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = match body {
            Some((content_type, bytes)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(bytes)),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let response = if uri.scheme_str() == Some("https") {
            let Some(https) = &self.https else {
                return Err(unreachable(
                    "an https call to a plain-http registry".to_owned(),
                ));
            };
            tokio::time::timeout(CALL_TIMEOUT, https.request(request)).await
        } else {
            tokio::time::timeout(CALL_TIMEOUT, self.http.request(request)).await
        }
        .map_err(|_| unreachable("no answer within 60 s".to_owned()))?
        .map_err(|e| unreachable(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

/// The innermost cause of a client error ("connection refused"), lowercase.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string().to_lowercase()
}

/// Repository names of the distribution spec: lowercase components joined by `/`.
fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        })
}

/// A `Bearer` challenge of `WWW-Authenticate`.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

fn parse_bearer(value: &str) -> Option<Challenge> {
    let rest = value
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| value.trim().strip_prefix("bearer "))?;
    let mut realm = None;
    let mut service = None;
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        realm: realm?,
        service,
    })
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        assert_eq!(
            parse_bearer(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
            ),
            Some(Challenge {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        assert_eq!(parse_bearer(r#"Basic realm="x""#), None);
    }

    #[test]
    fn targets_are_checked() {
        let target = |url: &str, repository: &str| build::RegistryTarget {
            url: url.into(),
            repository: repository.into(),
            ..Default::default()
        };
        let local = Registry::new(&target("http://127.0.0.1:5000", "acme/api")).unwrap();
        assert!(local.insecure());
        assert_eq!(local.reference("v1"), "127.0.0.1:5000/acme/api:v1");
        assert!(Registry::new(&target("http://127.0.0.1:5000", "Acme/API")).is_err());
        assert!(Registry::new(&target("http://a/b", "acme")).is_err());
        assert!(Registry::new(&target("", "acme")).is_err());
    }

    #[test]
    fn digests_are_sha256() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
