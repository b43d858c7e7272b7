//! Slipway's opaque bearer credentials: API tokens (`slp_`), cluster agent credentials
//! (`slpa_`), control-plane service credentials (`slps_`) and invitation tokens (`slpi_`).
//!
//! Every kind has the shape documented on `slipway.identity.v1.AuthService`: a prefix, 43
//! random characters and a 6-character checksum, all from the base62 alphabet `0-9A-Za-z`.
//!
//! - The prefix says what a leaked string is (secret scanners match on it) and lets a
//!   service route it without a lookup.
//! - 43 base62 characters hold 256.03 bits, so the random part carries the full 256 bits of
//!   the operating system's CSPRNG.
//! - The checksum is the CRC-32 (IEEE) of the 43 random characters, written in base62 and
//!   left-padded with `0`. A mistyped or truncated token is refused offline, before any
//!   database or cache lookup; CRC-32 catches every single-character change and every swap
//!   of two neighbouring characters. It is not a MAC: it proves nothing about origin.
//! - Slipway stores only the SHA-256 of the whole credential ([`CredentialHash`]) and
//!   compares hashes in constant time. A plain hash (no salt, no slow KDF) is enough because
//!   the input already has 256 bits of entropy: there is nothing to brute-force.
//!
//! Parsing borrows ([`Credential`]) and never allocates, because it runs on every request.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The base62 alphabet, in digit order: `0-9` are 0–9, `A-Z` are 10–35, `a-z` are 36–61.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random characters after the prefix.
pub const RANDOM_LEN: usize = 43;

/// Checksum characters at the end.
pub const CHECKSUM_LEN: usize = 6;

/// Random characters shown after the prefix in a [hint](Credential::hint): enough to
/// recognise a token in a log or a leak report, never enough to use it. For an API token the
/// hint is the 8-character `ApiToken.secret_hint`.
pub const HINT_RANDOM_LEN: usize = 4;

const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;

/// Bytes at or above this value are discarded when drawing random characters: 248 is the
/// largest multiple of 62 that fits in a byte, so `byte % 62` stays uniform.
const REJECTION_THRESHOLD: u8 = 248;

/// What a credential is for, told by its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    /// `slp_`: an API token of one organization (principal kind API_TOKEN).
    ApiToken,
    /// `slpa_`: the agent credential of one cluster (principal kind AGENT).
    Agent,
    /// `slps_`: a control-plane service credential from the installation's configuration
    /// (principal kind SERVICE). Never given to users or integrations.
    Service,
    /// `slpi_`: an invitation token. Not a bearer credential: Authenticate refuses it; it is
    /// only ever presented to AcceptInvitation.
    Invitation,
}

impl CredentialKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 4] = [Self::ApiToken, Self::Agent, Self::Service, Self::Invitation];

    /// The prefix, underscore included.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::ApiToken => "slp_",
            Self::Agent => "slpa_",
            Self::Service => "slps_",
            Self::Invitation => "slpi_",
        }
    }

    /// Total length in characters (and bytes: every character is ASCII).
    pub const fn token_len(self) -> usize {
        self.prefix().len() + BODY_LEN
    }

    /// Whether this kind may be sent as `authorization: Bearer …`. Invitation tokens may
    /// not: they are secrets for AcceptInvitation only, so a leaked invitation link never
    /// authenticates anything.
    pub const fn is_bearer(self) -> bool {
        !matches!(self, Self::Invitation)
    }

    /// The kind whose prefix `text` starts with. No prefix is a prefix of another (the
    /// fourth character is `_` only for `slp_`), so at most one matches.
    pub fn from_prefix(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| text.starts_with(kind.prefix()))
    }

    /// A lowercase name for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ApiToken => "api token",
            Self::Agent => "agent credential",
            Self::Service => "service credential",
            Self::Invitation => "invitation token",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a well-formed credential. Messages never quote the input, which may
/// be a real secret with one typo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Nothing was given. Answered as `TOKEN_MISSING` rather than `TOKEN_INVALID`.
    #[error("credential is empty")]
    Empty,
    /// The string does not start with the expected prefix (`expected: None`: with any
    /// Slipway prefix).
    #[error(
        "credential does not start with {}",
        .expected.map_or("a slipway prefix (slp_, slpa_, slps_, slpi_)", CredentialKind::prefix)
    )]
    WrongPrefix {
        /// The kind asked for, if one was.
        expected: Option<CredentialKind>,
    },
    /// Right prefix, wrong number of characters: typically truncated when copied.
    #[error("{kind} has {actual} characters, expected {expected}")]
    WrongLength {
        /// The kind told by the prefix.
        kind: CredentialKind,
        /// The length of that kind.
        expected: usize,
        /// The length given, in characters.
        actual: usize,
    },
    /// A character outside `0-9A-Za-z` after the prefix.
    #[error("{kind} has a character outside 0-9A-Za-z at position {position}")]
    BadCharacter {
        /// The kind told by the prefix.
        kind: CredentialKind,
        /// Zero-based character index in the whole credential.
        position: usize,
    },
    /// Well-formed, but the checksum does not match the random part: mistyped or damaged.
    #[error("{kind} checksum does not match: it was mistyped or damaged")]
    BadChecksum {
        /// The kind told by the prefix.
        kind: CredentialKind,
    },
}

impl CredentialError {
    /// The `ErrorInfo` reason an UNAUTHENTICATED answer carries for this error, as listed
    /// under "Token errors" on AuthService.
    pub const fn error_reason(&self) -> &'static str {
        match self {
            Self::Empty => "TOKEN_MISSING",
            _ => "TOKEN_INVALID",
        }
    }
}

/// The operating system's random source failed, so no credential was generated. Rare
/// (very early boot, seccomp sandboxes); never fall back to a weaker source.
#[derive(Debug, thiserror::Error)]
#[error("the operating system random source failed")]
pub struct GenerateError(#[source] getrandom::Error);

/// A well-formed credential borrowed from a request: prefix and checksum verified, not yet
/// looked up. Its `Debug` shows only the kind and the hint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    kind: CredentialKind,
    text: &'a str,
}

impl<'a> Credential<'a> {
    /// Parses a credential of any kind, telling the kind from the prefix.
    ///
    /// Checks run in order (prefix, length, characters, checksum) and the first failure is
    /// returned, so the error names the most basic thing wrong.
    pub fn parse(text: &'a str) -> Result<Self, CredentialError> {
        if text.is_empty() {
            return Err(CredentialError::Empty);
        }
        let kind = CredentialKind::from_prefix(text)
            .ok_or(CredentialError::WrongPrefix { expected: None })?;
        Self::check(kind, text)
    }

    /// Parses a credential that must be of `kind`, e.g. an agent credential on the agent
    /// stream. Any other prefix is [`CredentialError::WrongPrefix`].
    pub fn parse_as(kind: CredentialKind, text: &'a str) -> Result<Self, CredentialError> {
        if text.is_empty() {
            return Err(CredentialError::Empty);
        }
        if !text.starts_with(kind.prefix()) {
            return Err(CredentialError::WrongPrefix {
                expected: Some(kind),
            });
        }
        Self::check(kind, text)
    }

    fn check(kind: CredentialKind, text: &'a str) -> Result<Self, CredentialError> {
        let prefix_len = kind.prefix().len();
        // The prefix matched and is ASCII, so this split is on a character boundary.
        let body = text.get(prefix_len..).unwrap_or_default();
        // Counted in characters, not bytes, so a non-ASCII typo is reported as a bad
        // character rather than as a length mismatch.
        let body_chars = body.chars().count();
        if body_chars != BODY_LEN {
            return Err(CredentialError::WrongLength {
                kind,
                expected: kind.token_len(),
                actual: prefix_len + body_chars,
            });
        }
        if let Some(index) = body.chars().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(CredentialError::BadCharacter {
                kind,
                position: prefix_len + index,
            });
        }
        // Now all ASCII: byte and character positions agree.
        let (random, checksum) = body.as_bytes().split_at(RANDOM_LEN);
        if checksum != checksum_of(random) {
            return Err(CredentialError::BadChecksum { kind });
        }
        Ok(Self { kind, text })
    }

    /// What the credential is for.
    pub const fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The secret itself. Named so that every use stands out in review.
    pub const fn expose_secret(&self) -> &'a str {
        self.text
    }

    /// The prefix and the first [`HINT_RANDOM_LEN`] random characters.
    pub fn hint(&self) -> &'a str {
        hint_of(self.kind, self.text)
    }

    /// The SHA-256 of the whole credential, prefix included: what Slipway stores and
    /// looks up.
    pub fn hash(&self) -> CredentialHash {
        CredentialHash::of(self.text)
    }

    /// Whether this credential hashes to `stored`, compared in constant time.
    pub fn verify(&self, stored: &CredentialHash) -> bool {
        self.hash().ct_eq(stored)
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("hint", &self.hint())
            .finish_non_exhaustive()
    }
}

/// A credential just generated, owned until it is shown to its holder once. Its `Debug`
/// shows only the kind and the hint.
#[derive(Clone, PartialEq, Eq)]
pub struct NewCredential {
    kind: CredentialKind,
    text: String,
}

impl NewCredential {
    /// Generates a credential of `kind` from the operating system's CSPRNG.
    pub fn generate(kind: CredentialKind) -> Result<Self, GenerateError> {
        let mut random = [0u8; RANDOM_LEN];
        let mut pool = [0u8; 64];
        let mut filled = 0;
        while filled < RANDOM_LEN {
            getrandom::fill(&mut pool).map_err(GenerateError)?;
            for byte in pool {
                if filled == RANDOM_LEN {
                    break;
                }
                if byte < REJECTION_THRESHOLD {
                    random[filled] = ALPHABET[usize::from(byte % 62)];
                    filled += 1;
                }
            }
        }
        Ok(Self::assemble(kind, &random))
    }

    /// Builds the credential of `kind` with a given random part (43 base62 characters).
    ///
    /// For fixtures that need a known credential (tests, a scripted bootstrap); anything
    /// issued to a holder must come from [`NewCredential::generate`].
    pub fn from_random_part(kind: CredentialKind, random: &str) -> Result<Self, CredentialError> {
        let count = random.chars().count();
        if count != RANDOM_LEN {
            return Err(CredentialError::WrongLength {
                kind,
                expected: kind.token_len(),
                actual: kind.prefix().len() + count + CHECKSUM_LEN,
            });
        }
        if let Some(index) = random.chars().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(CredentialError::BadCharacter {
                kind,
                position: kind.prefix().len() + index,
            });
        }
        let mut bytes = [0u8; RANDOM_LEN];
        bytes.copy_from_slice(random.as_bytes());
        Ok(Self::assemble(kind, &bytes))
    }

    fn assemble(kind: CredentialKind, random: &[u8; RANDOM_LEN]) -> Self {
        let mut text = String::with_capacity(kind.token_len());
        text.push_str(kind.prefix());
        text.extend(random.iter().map(|&b| char::from(b)));
        text.extend(checksum_of(random).iter().map(|&b| char::from(b)));
        Self { kind, text }
    }

    /// What the credential is for.
    pub const fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The secret, to return to its holder once and then drop.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The secret, by value.
    pub fn into_secret(self) -> String {
        self.text
    }

    /// The prefix and the first [`HINT_RANDOM_LEN`] random characters, to store beside the
    /// hash.
    pub fn hint(&self) -> &str {
        hint_of(self.kind, &self.text)
    }

    /// The SHA-256 to store.
    pub fn hash(&self) -> CredentialHash {
        CredentialHash::of(&self.text)
    }

    /// The borrowed, parsed view of this credential.
    pub fn as_credential(&self) -> Credential<'_> {
        Credential {
            kind: self.kind,
            text: &self.text,
        }
    }
}

impl fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCredential")
            .field("kind", &self.kind)
            .field("hint", &self.hint())
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a credential: the only form in which Slipway keeps one.
///
/// Equality is constant-time, so comparing a presented credential's hash with a stored one
/// leaks nothing through timing, wherever the comparison happens (`==`, a map lookup's final
/// check, [`CredentialHash::ct_eq`]). It implements `Hash` so it can key caches.
#[derive(Clone, Copy)]
pub struct CredentialHash([u8; 32]);

impl CredentialHash {
    /// Length in bytes.
    pub const LEN: usize = 32;

    fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// Wraps a stored hash.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, to store.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl TryFrom<&[u8]> for CredentialHash {
    type Error = HashLengthError;

    /// Reads a stored hash; anything but 32 bytes is corrupt data.
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| HashLengthError {
                actual: bytes.len(),
            })
    }
}

impl PartialEq for CredentialHash {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for CredentialHash {}

impl std::hash::Hash for CredentialHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHash(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// A stored credential hash that is not 32 bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credential hash has {actual} bytes, expected 32")]
pub struct HashLengthError {
    /// The length found.
    pub actual: usize,
}

/// The 6 checksum characters of a random part: CRC-32 (IEEE) in base62, most significant
/// digit first, left-padded with `0`. 62^6 > 2^32, so every CRC value fits.
fn checksum_of(random: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(random);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

fn hint_of(kind: CredentialKind, text: &str) -> &str {
    text.get(..kind.prefix().len() + HINT_RANDOM_LEN)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_base62_crc32_left_padded() {
        // CRC-32 of the empty input is 0: all padding.
        assert_eq!(&checksum_of(b""), b"000000");
        // CRC-32("123456789") = 0xCBF43926, the standard check value of CRC-32/IEEE.
        let encoded = checksum_of(b"123456789");
        let decoded = encoded.iter().fold(0u64, |acc, &c| {
            let digit = ALPHABET.iter().position(|&a| a == c).unwrap() as u64;
            acc * 62 + digit
        });
        assert_eq!(decoded, 0xCBF4_3926);
    }

    #[test]
    fn known_fixture_round_trips() {
        let random = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";
        let token = NewCredential::from_random_part(CredentialKind::ApiToken, random).unwrap();
        assert_eq!(token.expose_secret().len(), 53);
        assert_eq!(token.hint(), "slp_0123");
        let parsed = Credential::parse(token.expose_secret()).unwrap();
        assert_eq!(parsed.kind(), CredentialKind::ApiToken);
        assert!(parsed.verify(&token.hash()));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = NewCredential::generate(CredentialKind::Service).unwrap();
        let secret = token.expose_secret().to_owned();
        for shown in [format!("{token:?}"), format!("{:?}", token.as_credential())] {
            assert!(!shown.contains(&secret[8..]), "{shown}");
        }
    }
}
