//! Webhook secrets at rest, and the signature every delivery carries.
//!
//! The orchestrator must sign with the secret itself, so the secret cannot be stored as a
//! hash: it is sealed with AES-256-GCM under a key of the installation, bound to its
//! webhook's id (associated data) so a sealed secret copied onto another row does not open.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

const NONCE_LEN: usize = 12;
/// Leading byte of a sealed secret: the format, so it can change later.
const VERSION: u8 = 1;

/// A sealed secret cannot be opened or made.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no randomness available for a nonce")]
    Randomness,
    #[error("the secret cannot be sealed")]
    Encrypt,
    #[error("the sealed secret is corrupt or sealed under another key")]
    Open,
}

/// Seals and opens webhook secrets. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

impl SecretBox {
    /// A box keyed by SHA-256 of a label and `material` (the configured sealing key, or
    /// the installation's service credential): every replica derives the same key.
    pub fn derive(material: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"slipway.orchestrator.webhook-secrets.v1\0");
        hasher.update(material);
        let digest: [u8; 32] = hasher.finalize().into();
        Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(digest)),
        }
    }

    /// `secret` sealed for webhook `webhook_id`.
    pub fn seal(&self, webhook_id: &str, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Randomness)?;
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: webhook_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The secret of webhook `webhook_id` from its sealed form.
    pub fn open(&self, webhook_id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..=NONCE_LEN]);
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: webhook_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

/// The `Slipway-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 keyed with
/// the secret over "<unix seconds>.<body>">`. Receivers recompute it to check the body
/// came from us and was not altered; the timestamp lets them refuse old replays.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex(&mac(secret, unix_seconds, body))
    )
}

fn mac(secret: &[u8], unix_seconds: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would only make
    // every signature invalid, never leak anything.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
