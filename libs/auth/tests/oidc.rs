//! OIDC verification against a test issuer: keys generated here, discovery document and
//! JWKS served on 127.0.0.1:0 over HTTP, and over HTTPS with a certificate of a test CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use slipway_auth::{AuthnError, OidcError, OidcSettings, OidcVerifier};

const AUDIENCE: &str = "slipway-test";

/// A signing key of the test issuer, and its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

/// A fixed RSA key from `tests/fixtures`: generating one takes seconds of CPU in a debug
/// build, in every test process.
fn rsa_key(kid: &str) -> TestKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        rsa::RsaPrivateKey::from_pkcs1_pem(include_str!("fixtures/jwt-signing-a.pem")).unwrap()
    });
    let der = key.to_pkcs1_der().unwrap();
    TestKey {
        alg: Algorithm::RS256,
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA",
            "kid": kid,
            "alg": "RS256",
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }),
    }
}

fn ec_key(kid: &str) -> TestKey {
    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let der = secret.to_pkcs8_der().unwrap();
    let point = secret.public_key().to_encoded_point(false);
    TestKey {
        alg: Algorithm::ES256,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({
            "kty": "EC",
            "crv": "P-256",
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
    }
}

/// An issuer serving discovery and a JWKS whose keys the test can change.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
}

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (app, issuer) = issuer_app(url);
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

/// The same issuer over HTTPS, its certificate (for 127.0.0.1) signed by the fixture CA
/// (`tests/fixtures`).
async fn https_issuer() -> Issuer {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let chain = CertificateDer::pem_file_iter(fixtures.join("issuer.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixtures.join("issuer.key")).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (app, issuer) = issuer_app(url);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to do.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
    issuer
}

fn ca_certificates() -> Vec<CertificateDer<'static>> {
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ca.pem");
    CertificateDer::pem_file_iter(ca)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Discovery and the JWKS of an issuer at `url`.
fn issuer_app(url: String) -> (axum::Router, Issuer) {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let jwks_fetches = Arc::new(AtomicUsize::new(0));
    let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/keys") });
    let (served_keys, fetches) = (Arc::clone(&keys), Arc::clone(&jwks_fetches));
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { json_response(&discovery) }),
        )
        .route(
            "/keys",
            axum::routing::get(move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let keys = served_keys.lock().unwrap().clone();
                json_response(&json!({ "keys": keys }))
            }),
        );
    (
        app,
        Issuer {
            url,
            keys,
            jwks_fetches,
        },
    )
}

fn json_response(value: &Value) -> impl axum::response::IntoResponse + use<> {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

impl Issuer {
    fn publish(&self, key: &TestKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    fn verifier(&self) -> OidcVerifier {
        let mut settings = OidcSettings::new(self.url.clone(), AUDIENCE);
        settings.min_refetch_interval = Duration::ZERO;
        OidcVerifier::new(settings).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": "user-42",
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "email": "ada@example.com",
        "name": "Ada Lovelace",
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn is_invalid(outcome: &Result<slipway_auth::OidcClaims, OidcError>) -> bool {
    matches!(outcome, Err(OidcError::Invalid(_)))
}

#[tokio::test]
async fn valid_tokens_of_both_algorithms_verify_through_discovery() {
    let issuer = issuer().await;
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    issuer.publish(&rsa);
    issuer.publish(&ec);
    let verifier = issuer.verifier();
    for key in [&rsa, &ec] {
        let verified = verifier
            .verify(&sign(key, &claims(&issuer.url)))
            .await
            .unwrap();
        assert_eq!(verified.issuer, issuer.url);
        assert_eq!(verified.subject, "user-42");
        assert_eq!(verified.email.as_deref(), Some("ada@example.com"));
        assert_eq!(verified.name.as_deref(), Some("Ada Lovelace"));
        assert!(verified.expire_time > SystemTime::now());
    }
    // The JWKS was fetched once and cached.
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let issuer = issuer().await;
    let ec = ec_key("ec-1");
    issuer.publish(&ec);
    let verifier = issuer.verifier();

    // Signed by a key the issuer never published, under a published kid.
    let impostor = TestKey {
        kid: "ec-1".into(),
        ..ec_key("ignored")
    };
    assert!(is_invalid(
        &verifier
            .verify(&sign(&impostor, &claims(&issuer.url)))
            .await
    ));

    let mut wrong_audience = claims(&issuer.url);
    wrong_audience["aud"] = json!("someone-else");
    assert!(is_invalid(
        &verifier.verify(&sign(&ec, &wrong_audience)).await
    ));

    let wrong_issuer = claims("http://evil.example");
    assert!(is_invalid(
        &verifier.verify(&sign(&ec, &wrong_issuer)).await
    ));

    let mut not_yet = claims(&issuer.url);
    not_yet["nbf"] = json!(now() + 3600);
    assert!(is_invalid(&verifier.verify(&sign(&ec, &not_yet)).await));

    let mut expired = claims(&issuer.url);
    expired["exp"] = json!(now() - 3600);
    let outcome = verifier.verify(&sign(&ec, &expired)).await;
    assert_eq!(outcome, Err(OidcError::Expired));
    assert!(matches!(
        AuthnError::from(outcome.unwrap_err()),
        AuthnError::Expired
    ));

    let mut no_audience = claims(&issuer.url);
    no_audience.as_object_mut().unwrap().remove("aud");
    assert!(is_invalid(&verifier.verify(&sign(&ec, &no_audience)).await));

    // A shared-secret algorithm is never accepted, whatever the key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("ec-1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(&issuer.url),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert!(is_invalid(&verifier.verify(&hs).await));

    assert!(is_invalid(&verifier.verify("not-a-jwt").await));
    assert!(matches!(
        AuthnError::from(OidcError::Invalid("x".into())),
        AuthnError::Invalid
    ));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_first_sight() {
    let issuer = issuer().await;
    let old = ec_key("old");
    issuer.publish(&old);
    let verifier = issuer.verifier();
    verifier
        .verify(&sign(&old, &claims(&issuer.url)))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);

    let new = rsa_key("new");
    issuer.publish(&new);
    verifier
        .verify(&sign(&new, &claims(&issuer.url)))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
    verifier
        .verify(&sign(&old, &claims(&issuer.url)))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let issuer = issuer().await;
    let known = ec_key("known");
    issuer.publish(&known);
    let mut settings = OidcSettings::new(issuer.url.clone(), AUDIENCE);
    settings.min_refetch_interval = Duration::from_secs(60);
    let verifier = OidcVerifier::new(settings).unwrap();
    verifier
        .verify(&sign(&known, &claims(&issuer.url)))
        .await
        .unwrap();
    for i in 0..5 {
        let stranger = ec_key(&format!("made-up-{i}"));
        assert!(is_invalid(
            &verifier
                .verify(&sign(&stranger, &claims(&issuer.url)))
                .await
        ));
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_and_a_configured_jwks_url_skips_discovery() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let key = ec_key("k");
    let verifier = OidcVerifier::new(OidcSettings::new(gone.clone(), AUDIENCE)).unwrap();
    let outcome = verifier.verify(&sign(&key, &claims(&gone))).await;
    assert!(
        matches!(outcome, Err(OidcError::Unavailable(_))),
        "{outcome:?}"
    );

    let issuer = issuer().await;
    issuer.publish(&key);
    // The issuer named in tokens need not serve discovery when the JWKS URL is configured.
    let settings = OidcSettings::new("https://login.example.com", AUDIENCE)
        .with_jwks_url(format!("{}/keys", issuer.url));
    let verifier = OidcVerifier::new(settings).unwrap();
    let verified = verifier
        .verify(&sign(&key, &claims("https://login.example.com")))
        .await
        .unwrap();
    assert_eq!(verified.issuer, "https://login.example.com");
}

#[tokio::test]
async fn an_issuer_over_https_is_trusted_through_its_ca_and_refused_without_it() {
    let issuer = https_issuer().await;
    let key = ec_key("tls");
    issuer.publish(&key);
    let token = sign(&key, &claims(&issuer.url));

    let mut settings = OidcSettings::new(issuer.url.clone(), AUDIENCE);
    settings.extra_roots = ca_certificates();
    let verified = OidcVerifier::new(settings)
        .unwrap()
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(verified.issuer, issuer.url);

    // The system's roots alone do not know the test CA: the keys cannot be fetched.
    let untrusting = OidcVerifier::new(OidcSettings::new(issuer.url.clone(), AUDIENCE)).unwrap();
    let outcome = untrusting.verify(&token).await;
    assert!(
        matches!(&outcome, Err(OidcError::Unavailable(detail)) if detail.contains(&issuer.url)),
        "{outcome:?}"
    );
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
}
