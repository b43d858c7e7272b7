//! Secrets at rest: AES-256-GCM with envelope encryption.
//!
//! Every organization has its own [`DataKey`]; the database stores it only as a
//! [`WrappedDataKey`], encrypted under the installation's [`MasterKey`] from configuration.
//! A database dump alone therefore reveals no secret, and rotating the master key means
//! re-wrapping one small key per organization instead of re-encrypting every secret.
//!
//! Each secret value is sealed with [`DataKey::seal`] together with *associated data* naming
//! the row it belongs to (see [`associated_data`]): the ciphertext is authenticated against
//! it, so a ciphertext copied into another row, or another organization, fails to open.
//!
//! Byte formats (all stored as-is in `bytea`/`blob` columns):
//!
//! ```text
//! sealed value     : version (1) | nonce (12) | ciphertext + tag (len + 16)
//! wrapped data key : version (1) | master key id (4) | nonce (12) | ciphertext + tag (32 + 16)
//! ```
//!
//! The version byte lets a later release change algorithm or layout and still read old
//! rows; it is authenticated too (it is part of the GCM associated data).

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

/// Length of every key here: AES-256.
pub const KEY_LEN: usize = 32;
/// GCM's standard 96-bit nonce.
const NONCE_LEN: usize = 12;
/// GCM's 128-bit authentication tag.
const TAG_LEN: usize = 16;
/// Length of a [`KeyId`] in bytes (8 hex characters).
const KEY_ID_LEN: usize = 4;

/// Current layout of a sealed value.
const SEALED_VERSION: u8 = 1;
/// Current layout of a wrapped data key.
const WRAPPED_VERSION: u8 = 1;
/// Separates the wrapping of data keys from any other use of the master key, so a wrapped
/// key can never be mistaken for (or substituted by) something else sealed under it.
const WRAP_DOMAIN: &[u8] = b"slipway.catalog.data-key";

const SEALED_HEADER_LEN: usize = 1 + NONCE_LEN;
const WRAPPED_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;

/// Why a secret could not be sealed, opened, wrapped or unwrapped.
///
/// Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The master key in configuration is unusable; the reason says how, never what it is.
    #[error("bad master key: {0}")]
    BadMasterKey(String),
    /// The data key was wrapped under another master key than the configured one, for
    /// example after the master key was changed without re-wrapping.
    #[error(
        "data key was wrapped by master key {wrapped_by}, but the configured master key is {configured}"
    )]
    WrongKey {
        /// Id of the master key the data key was wrapped with.
        wrapped_by: KeyId,
        /// Id of the master key in configuration.
        configured: KeyId,
    },
    /// The bytes failed authentication or are malformed: tampered with, truncated, opened
    /// with another data key, or with associated data naming another row.
    #[error("secret is corrupt or does not belong here: {0}")]
    Corrupt(&'static str),
    /// The bytes were written by a format version this release cannot read.
    #[error("unsupported secret format version {0}")]
    UnsupportedVersion(u8),
    /// The operating system could not provide randomness for a key or nonce.
    #[error("no randomness from the operating system: {0}")]
    Randomness(getrandom::Error),
    /// AES-GCM refused to encrypt (only for inputs beyond its size limit of ~64 GiB).
    #[error("encryption failed: input too large")]
    Encrypt,
}

/// Identifies a master key without revealing it: the first 8 hex characters of the
/// SHA-256 of the key. Stored in every wrapped data key, so a changed master key is
/// recognised ([`SecretsError::WrongKey`]) rather than reported as corruption.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    fn of(key: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The installation's key-encryption key, from configuration. It only wraps and unwraps
/// [`DataKey`]s; secrets themselves are sealed with data keys.
///
/// `Debug` shows the [`KeyId`] only. The bytes are overwritten on drop (best effort: the
/// cipher's own key schedule is not cleared).
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
    id: KeyId,
    cipher: Aes256Gcm,
}

impl MasterKey {
    /// Builds a master key from its raw 32 bytes.
    ///
    /// An all-zero key is refused: it is what an unfilled placeholder decodes to.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, SecretsError> {
        if bytes.iter().all(|byte| *byte == 0) {
            return Err(SecretsError::BadMasterKey(
                "the key is all zero bytes; generate a random one (for example `openssl rand -base64 32`)"
                    .to_owned(),
            ));
        }
        Ok(Self {
            id: KeyId::of(&bytes),
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes)),
            bytes,
        })
    }

    /// Parses the key as written in configuration: 64 hex digits, or base64 (standard
    /// or URL-safe alphabet, padded or not) of exactly 32 bytes. Surrounding whitespace is
    /// ignored, since files and secret mounts often end with a newline.
    ///
    /// Errors say what is wrong (encoding, length) and never echo the value.
    pub fn parse(encoded: &str) -> Result<Self, SecretsError> {
        let encoded = encoded.trim();
        if encoded.is_empty() {
            return Err(SecretsError::BadMasterKey(
                "the key is empty; set 32 random bytes as base64 or hex (for example `openssl rand -base64 32`)"
                    .to_owned(),
            ));
        }
        // Hex digits are also base64 characters, so hex is tried first. No base64 of 32
        // bytes is all hex digits of even length (it is 43 characters, or 44 ending in `=`),
        // so this never misreads one, and a hex key of the wrong length is reported as such.
        let bytes = if encoded.len().is_multiple_of(2)
            && encoded.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            decode_hex(encoded)
        } else {
            decode_base64(encoded).ok_or_else(|| {
                SecretsError::BadMasterKey(
                    "the key is neither 64 hex characters nor valid base64".to_owned(),
                )
            })?
        };
        let length = bytes.len();
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            SecretsError::BadMasterKey(format!(
                "the key must be {KEY_LEN} bytes (AES-256), but it decodes to {length} bytes"
            ))
        })?;
        Self::from_bytes(bytes)
    }

    /// A fresh random key, for `slipway dev` and tests. A real installation sets its key in
    /// configuration: secrets sealed under a generated key are lost with it.
    pub fn generate() -> Result<Self, SecretsError> {
        Self::from_bytes(random_array()?)
    }

    /// Which master key this is; safe to log.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as 64 lowercase hex characters, which [`MasterKey::parse`] reads back: for
    /// writing a [`MasterKey::generate`]d development key to its file. Never log it.
    pub fn export_hex(&self) -> String {
        self.bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Encrypts `data_key` for storage next to its organization.
    pub fn wrap(&self, data_key: &DataKey) -> Result<WrappedDataKey, SecretsError> {
        let nonce: [u8; NONCE_LEN] = random_array()?;
        let header = wrapped_header(self.id, &nonce);
        let aad = wrap_associated_data(&header);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &data_key.bytes,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Encrypt)?;
        let mut bytes = Vec::with_capacity(WRAPPED_LEN);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&ciphertext);
        Ok(WrappedDataKey(bytes))
    }

    /// Decrypts a stored data key. [`SecretsError::WrongKey`] when it was wrapped under a
    /// different master key, [`SecretsError::Corrupt`] when it was altered.
    pub fn unwrap(&self, wrapped: &WrappedDataKey) -> Result<DataKey, SecretsError> {
        let wrapped_by = wrapped.key_id();
        if wrapped_by != self.id {
            return Err(SecretsError::WrongKey {
                wrapped_by,
                configured: self.id,
            });
        }
        let (header, ciphertext) = wrapped.0.split_at(1 + KEY_ID_LEN + NONCE_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[1 + KEY_ID_LEN..]);
        let aad = wrap_associated_data(header);
        let plaintext = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Corrupt("wrapped data key failed authentication"))?;
        let bytes: [u8; KEY_LEN] = plaintext
            .try_into()
            .map_err(|_| SecretsError::Corrupt("wrapped data key has the wrong length"))?;
        Ok(DataKey::from_bytes(bytes))
    }
}

impl FromStr for MasterKey {
    type Err = SecretsError;

    fn from_str(encoded: &str) -> Result<Self, Self::Err> {
        Self::parse(encoded)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// One organization's key for its secrets. Only ever stored wrapped
/// ([`MasterKey::wrap`]); `Debug` never shows it. The bytes are overwritten on drop (best
/// effort, as for [`MasterKey`]).
#[derive(Clone)]
pub struct DataKey {
    bytes: [u8; KEY_LEN],
    cipher: Aes256Gcm,
}

impl DataKey {
    /// A fresh random key from the operating system, for a new organization.
    pub fn generate() -> Result<Self, SecretsError> {
        Ok(Self::from_bytes(random_array()?))
    }

    fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes)),
            bytes,
        }
    }

    /// Encrypts `plaintext`, bound to `associated_data` (the row it is stored in, see
    /// [`associated_data`]). The associated data is not stored: [`DataKey::open`] must be
    /// given the same bytes.
    ///
    /// Every call draws a fresh random 96-bit nonce, so sealing the same value twice gives
    /// different bytes. Random nonces stay safe for about 2^32 seals per key, far beyond
    /// one organization's secrets.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let nonce: [u8; NONCE_LEN] = random_array()?;
        let aad = sealed_associated_data(SEALED_VERSION, associated_data);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Encrypt)?;
        let mut sealed = Vec::with_capacity(SEALED_HEADER_LEN + ciphertext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts what [`DataKey::seal`] produced with the same `associated_data`.
    /// [`SecretsError::Corrupt`] when the bytes were altered, belong to another row, or were
    /// sealed with another key.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(SecretsError::Corrupt("sealed value is empty"));
        };
        if version != SEALED_VERSION {
            return Err(SecretsError::UnsupportedVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretsError::Corrupt("sealed value is truncated"));
        }
        let (nonce_bytes, ciphertext) = rest.split_at(NONCE_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(nonce_bytes);
        let aad = sealed_associated_data(version, associated_data);
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Corrupt("sealed value failed authentication"))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// A [`DataKey`] encrypted under a [`MasterKey`]: what the database stores per
/// organization. Holds no secret in the clear, so it may be logged and copied freely.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey(Vec<u8>);

impl WrappedDataKey {
    /// Reads the stored bytes back, checking their layout (not yet their authenticity:
    /// that is [`MasterKey::unwrap`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretsError> {
        match bytes.first() {
            None => Err(SecretsError::Corrupt("wrapped data key is empty")),
            Some(&version) if version != WRAPPED_VERSION => {
                Err(SecretsError::UnsupportedVersion(version))
            }
            Some(_) if bytes.len() != WRAPPED_LEN => Err(SecretsError::Corrupt(
                "wrapped data key has the wrong length",
            )),
            Some(_) => Ok(Self(bytes)),
        }
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes to store, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Which master key wrapped this data key: lets a rotation find the organizations
    /// still wrapped under the old key without trying to decrypt.
    pub fn key_id(&self) -> KeyId {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&self.0[1..1 + KEY_ID_LEN]);
        KeyId(id)
    }
}

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDataKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// Builds associated data from the parts that identify a row, for example
/// `associated_data(&[b"variable", org_id.as_bytes(), variable_id.as_bytes()])`.
///
/// Each part is length-prefixed, so `["ab", "c"]` and `["a", "bc"]` differ: a ciphertext
/// can only open where all the same parts are given again.
pub fn associated_data(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|part| 8 + part.len()).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn wrapped_header(id: KeyId, nonce: &[u8; NONCE_LEN]) -> [u8; 1 + KEY_ID_LEN + NONCE_LEN] {
    let mut header = [0u8; 1 + KEY_ID_LEN + NONCE_LEN];
    header[0] = WRAPPED_VERSION;
    header[1..1 + KEY_ID_LEN].copy_from_slice(&id.0);
    header[1 + KEY_ID_LEN..].copy_from_slice(nonce);
    header
}

/// The whole stored header (version, key id, nonce) is authenticated, under a domain label.
fn wrap_associated_data(header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_DOMAIN.len() + header.len());
    aad.extend_from_slice(WRAP_DOMAIN);
    aad.extend_from_slice(header);
    aad
}

/// The version byte is authenticated with the caller's associated data; the version is a
/// fixed-size prefix, so the concatenation is unambiguous.
fn sealed_associated_data(version: u8, associated_data: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + associated_data.len());
    aad.push(version);
    aad.extend_from_slice(associated_data);
    aad
}

fn random_array<const N: usize>() -> Result<[u8; N], SecretsError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(SecretsError::Randomness)?;
    Ok(bytes)
}

/// Overwrites key bytes; `black_box` keeps the compiler from dropping the dead store.
fn wipe(bytes: &mut [u8; KEY_LEN]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// Caller guarantees `hex` is an even number of ASCII hex digits.
fn decode_hex(hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Decodes base64 in the standard or URL-safe alphabet, with or without `=` padding.
/// `None` on any other character, misplaced padding, or an impossible length.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let unpadded = text.trim_end_matches('=');
    let padding = text.len() - unpadded.len();
    if padding > 2 || (padding > 0 && !text.len().is_multiple_of(4)) || unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for byte in unpadded.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, or the text is not the canonical encoding of any bytes.
    if buffer != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    /// The same 32 bytes as [`HEX_KEY`], as `base64` prints them.
    const BASE64_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn org_variable_ad(org: u8, variable: u8) -> Vec<u8> {
        associated_data(&[b"variable", &[org; 16], &[variable; 16]])
    }

    #[test]
    fn parses_hex_and_base64_to_the_same_key() {
        let from_hex = MasterKey::parse(HEX_KEY).unwrap();
        let from_base64 = MasterKey::parse(BASE64_KEY).unwrap();
        let from_url_safe_unpadded = MasterKey::parse(BASE64_KEY.trim_end_matches('=')).unwrap();
        let from_upper_hex = MasterKey::parse(&format!("  {}\n", HEX_KEY.to_uppercase())).unwrap();
        assert_eq!(from_hex.export_hex(), HEX_KEY);
        assert_eq!(from_base64.export_hex(), HEX_KEY);
        assert_eq!(from_url_safe_unpadded.export_hex(), HEX_KEY);
        assert_eq!(from_upper_hex.export_hex(), HEX_KEY);
        assert_eq!(from_hex.id(), from_base64.id());
    }

    #[test]
    fn key_id_is_the_first_8_hex_chars_of_the_sha256_of_the_key() {
        let key = MasterKey::parse(HEX_KEY).unwrap();
        let digest = Sha256::digest(decode_hex(HEX_KEY));
        let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key.id().to_string(), expected);
        assert_eq!(key.id().to_string().len(), 8);
    }

    #[test]
    fn rejects_master_keys_of_the_wrong_length_or_encoding_without_echoing_them() {
        for (input, expected) in [
            ("", "empty"),
            ("c2hvcnQ=", "decodes to 5 bytes"),
            (&HEX_KEY[..62], "decodes to"),
            (&format!("{HEX_KEY}00"), "decodes to"),
            ("not base64 at all!", "neither"),
            (&"0".repeat(64), "all zero"),
        ] {
            let error = MasterKey::parse(input).unwrap_err();
            assert!(
                matches!(error, SecretsError::BadMasterKey(_)),
                "{input:?}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(expected), "{input:?}: {message}");
            if input.len() > 4 {
                assert!(!message.contains(input), "{message} echoes the key");
            }
        }
    }

    #[test]
    fn debug_never_prints_key_material() {
        let master = MasterKey::parse(HEX_KEY).unwrap();
        let printed = format!("{master:?} {master:#?}");
        assert!(printed.contains(&master.id().to_string()));
        assert!(!printed.contains("0a0b0c"), "{printed}");
        assert!(!printed.contains("10, 11, 12"), "{printed}");
        let data_key = DataKey::generate().unwrap();
        assert_eq!(format!("{data_key:?}"), "DataKey(..)");
    }

    #[test]
    fn seal_then_open_round_trips() {
        let key = DataKey::generate().unwrap();
        let ad = org_variable_ad(1, 2);
        let sealed = key.seal(b"postgres://user:hunter2@db/app", &ad).unwrap();
        assert_eq!(sealed[0], SEALED_VERSION);
        assert_eq!(sealed.len(), 1 + 12 + 30 + 16);
        assert_eq!(
            key.open(&sealed, &ad).unwrap(),
            b"postgres://user:hunter2@db/app"
        );
        // Empty values are secrets too.
        let empty = key.seal(b"", &ad).unwrap();
        assert_eq!(key.open(&empty, &ad).unwrap(), b"");
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let key = DataKey::generate().unwrap();
        let first = key.seal(b"same", b"row").unwrap();
        let second = key.seal(b"same", b"row").unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn a_ciphertext_copied_to_another_row_does_not_open() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(b"secret", &org_variable_ad(1, 2)).unwrap();
        for other_row in [org_variable_ad(1, 3), org_variable_ad(9, 2), Vec::new()] {
            assert!(matches!(
                key.open(&sealed, &other_row),
                Err(SecretsError::Corrupt(_))
            ));
        }
        // Length prefixes keep differently split parts apart.
        assert_ne!(
            associated_data(&[b"ab", b"c"]),
            associated_data(&[b"a", b"bc"])
        );
    }

    #[test]
    fn any_tampered_byte_is_refused() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(b"a secret value", b"row").unwrap();
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            let error = key.open(&tampered, b"row").unwrap_err();
            if index == 0 {
                assert!(
                    matches!(error, SecretsError::UnsupportedVersion(_)),
                    "{error:?}"
                );
            } else {
                assert!(
                    matches!(error, SecretsError::Corrupt(_)),
                    "byte {index}: {error:?}"
                );
            }
        }
        for length in 0..sealed.len() {
            assert!(
                key.open(&sealed[..length], b"row").is_err(),
                "truncated to {length}"
            );
        }
    }

    #[test]
    fn another_data_key_cannot_open() {
        let sealed = DataKey::generate()
            .unwrap()
            .seal(b"secret", b"row")
            .unwrap();
        let other = DataKey::generate().unwrap();
        assert!(matches!(
            other.open(&sealed, b"row"),
            Err(SecretsError::Corrupt(_))
        ));
    }

    #[test]
    fn wrap_then_unwrap_gives_back_a_working_data_key() {
        let master = MasterKey::generate().unwrap();
        let data_key = DataKey::generate().unwrap();
        let sealed = data_key.seal(b"secret", b"row").unwrap();

        let wrapped = master.wrap(&data_key).unwrap();
        assert_eq!(wrapped.as_bytes().len(), WRAPPED_LEN);
        assert_eq!(wrapped.key_id(), master.id());
        assert!(
            !wrapped
                .as_bytes()
                .windows(KEY_LEN)
                .any(|w| w == data_key.bytes),
            "the data key is stored in the clear"
        );

        let stored = WrappedDataKey::from_bytes(wrapped.clone().into_bytes()).unwrap();
        assert_eq!(stored, wrapped);
        let unwrapped = master.unwrap(&stored).unwrap();
        assert_eq!(unwrapped.open(&sealed, b"row").unwrap(), b"secret");
    }

    #[test]
    fn another_master_key_is_reported_as_wrong_key() {
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let wrapped = old.wrap(&DataKey::generate().unwrap()).unwrap();
        match new.unwrap(&wrapped) {
            Err(SecretsError::WrongKey {
                wrapped_by,
                configured,
            }) => {
                assert_eq!(wrapped_by, old.id());
                assert_eq!(configured, new.id());
            }
            other => panic!("expected WrongKey, got {other:?}"),
        }
    }

    #[test]
    fn a_tampered_wrapped_key_is_refused() {
        let master = MasterKey::generate().unwrap();
        let wrapped = master.wrap(&DataKey::generate().unwrap()).unwrap();
        // Past the version and key id, which are checked before decryption.
        for index in 1 + KEY_ID_LEN..WRAPPED_LEN {
            let mut bytes = wrapped.as_bytes().to_vec();
            bytes[index] ^= 0x80;
            let tampered = WrappedDataKey::from_bytes(bytes).unwrap();
            assert!(matches!(
                master.unwrap(&tampered),
                Err(SecretsError::Corrupt(_))
            ));
        }
        assert!(matches!(
            WrappedDataKey::from_bytes(wrapped.as_bytes()[..WRAPPED_LEN - 1].to_vec()),
            Err(SecretsError::Corrupt(_))
        ));
        let mut future = wrapped.into_bytes();
        future[0] = 2;
        assert!(matches!(
            WrappedDataKey::from_bytes(future),
            Err(SecretsError::UnsupportedVersion(2))
        ));
        assert!(WrappedDataKey::from_bytes(Vec::new()).is_err());
    }

    #[test]
    fn plaintext_never_appears_in_the_sealed_output() {
        let key = DataKey::generate().unwrap();
        let plaintext = "SLIPWAY-CANARY-correct-horse-battery-staple-0123456789".repeat(8);
        let sealed = key.seal(plaintext.as_bytes(), b"row").unwrap();
        // No 8-byte window of the plaintext appears anywhere in the output.
        for window in plaintext.as_bytes().windows(8) {
            assert!(!sealed.windows(8).any(|w| w == window));
        }
        assert!(!String::from_utf8_lossy(&sealed).contains("CANARY"));
    }

    #[test]
    fn base64_decoder_matches_known_vectors_and_refuses_junk() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("Zm9vYmE=", b"fooba"),
            ("Zm9vYmFy", b"foobar"),
            ("-_8", &[0xfb, 0xff][..]),
            ("+/8=", &[0xfb, 0xff][..]),
        ] {
            assert_eq!(decode_base64(text).as_deref(), Some(bytes), "{text}");
        }
        for junk in ["Z", "Zg=", "Zg===", "Zh==", "Zm9v!", "=Zm9"] {
            assert_eq!(decode_base64(junk), None, "{junk}");
        }
    }

    proptest! {
        #[test]
        fn seal_open_round_trips_arbitrary_bytes(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
            ad in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = DataKey::generate().unwrap();
            let sealed = key.seal(&plaintext, &ad).unwrap();
            prop_assert_eq!(sealed.len(), SEALED_HEADER_LEN + plaintext.len() + TAG_LEN);
            prop_assert_eq!(key.open(&sealed, &ad).unwrap(), plaintext);
        }

        #[test]
        fn master_key_parses_its_own_hex_export(bytes in any::<[u8; KEY_LEN]>()) {
            prop_assume!(bytes.iter().any(|b| *b != 0));
            let key = MasterKey::from_bytes(bytes).unwrap();
            let again = MasterKey::parse(&key.export_hex()).unwrap();
            prop_assert_eq!(again.id(), key.id());
            prop_assert_eq!(again.bytes, bytes);
        }
    }
}
