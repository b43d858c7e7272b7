//! Proof that a webhook comes from the git provider: GitHub signs the body with the
//! shared secret (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`), GitLab sends the
//! secret token itself (`X-Gitlab-Token`). Both are compared in constant time, so the
//! answer's timing tells an attacker nothing about how close a guess was.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Why a delivery's proof was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is absent (HTTP 401).
    #[error("the signature header is missing")]
    Missing,
    /// The header is not of the expected form (HTTP 401).
    #[error("the signature header is malformed")]
    Malformed,
    /// Well formed, but not made with the configured secret (HTTP 403).
    #[error("the signature does not match the configured secret")]
    Mismatch,
}

/// Checks GitHub's `X-Hub-Signature-256` header over the raw `body`.
pub fn verify_github(
    secret: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks GitLab's `X-Gitlab-Token` header against the configured token. Both sides are
/// hashed first, so the comparison also takes the same time whatever their lengths.
pub fn verify_gitlab(token: &str, header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let sent = Sha256::digest(header.as_bytes());
    let wanted = Sha256::digest(token.as_bytes());
    if bool::from(sent.as_slice().ct_eq(wanted.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub sends it (for tests and tools).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures() {
        // The example of GitHub's "Validating webhook deliveries" guide.
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(github_signature("It's a Secret to Everybody", body), header);
        assert_eq!(
            verify_github("It's a Secret to Everybody", body, Some(header)),
            Ok(())
        );
        assert_eq!(
            verify_github("another secret", body, Some(header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_github("It's a Secret to Everybody", b"Hello, World?", Some(header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_github("s", body, None), Err(SignatureError::Missing));
        for bad in [
            "757107ea",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=zz",
        ] {
            assert_eq!(
                verify_github("s", body, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn gitlab_tokens() {
        assert_eq!(verify_gitlab("t0ken", Some("t0ken")), Ok(()));
        assert_eq!(
            verify_gitlab("t0ken", Some("t0ke")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_gitlab("t0ken", None), Err(SignatureError::Missing));
    }
}
