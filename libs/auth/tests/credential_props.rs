//! Properties of the credential format: what is generated parses, any one-character
//! change or neighbour swap is caught offline, and no input makes the parser panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures outside #[test] functions panic to report the unexpected, as tests do"
)]

use proptest::prelude::*;
use slipway_auth::credential::{
    ALPHABET, Credential, CredentialError, CredentialHash, CredentialKind, NewCredential,
    RANDOM_LEN,
};

fn kind() -> impl Strategy<Value = CredentialKind> {
    prop::sample::select(CredentialKind::ALL.to_vec())
}

fn random_part() -> impl Strategy<Value = String> {
    "[0-9A-Za-z]{43}"
}

fn credential() -> impl Strategy<Value = NewCredential> {
    (kind(), random_part()).prop_map(|(kind, random)| {
        NewCredential::from_random_part(kind, &random).expect("valid random part")
    })
}

fn replace_char(text: &str, index: usize, with: char) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| if i == index { with } else { c })
        .collect()
}

#[test]
fn generated_credentials_parse_with_their_kind() {
    for kind in CredentialKind::ALL {
        for _ in 0..256 {
            let new = NewCredential::generate(kind).unwrap();
            let text = new.expose_secret();
            assert_eq!(text.len(), kind.token_len());
            assert!(text.starts_with(kind.prefix()));
            let parsed = Credential::parse(text).unwrap();
            assert_eq!(parsed.kind(), kind);
            assert_eq!(Credential::parse_as(kind, text), Ok(parsed));
            assert_eq!(parsed.hint(), &text[..kind.prefix().len() + 4]);
            assert_eq!(parsed.hash(), new.hash());
        }
    }
}

#[test]
fn generated_characters_are_spread_over_the_whole_alphabet() {
    // Rejection sampling keeps every character equally likely; a modulo bias or a broken
    // alphabet would leave some characters rare or absent. 62 × 43 × 200 draws: each
    // character expected ~8,600 times; the bounds are over ten standard deviations wide.
    let mut counts = [0u32; 62];
    for _ in 0..(62 * 200) {
        let token = NewCredential::generate(CredentialKind::ApiToken).unwrap();
        for byte in token.expose_secret().as_bytes()[4..4 + RANDOM_LEN].iter() {
            let index = ALPHABET.iter().position(|a| a == byte).unwrap();
            counts[index] += 1;
        }
    }
    for (i, count) in counts.iter().enumerate() {
        assert!(
            (7_600..9_600).contains(count),
            "{}: {count}",
            ALPHABET[i] as char
        );
    }
}

#[test]
fn typical_typos_are_reported_precisely() {
    let token = NewCredential::from_random_part(
        CredentialKind::ApiToken,
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg",
    )
    .unwrap();
    let text = token.expose_secret();
    use CredentialError::*;
    let api = CredentialKind::ApiToken;
    assert_eq!(Credential::parse(""), Err(Empty));
    assert_eq!(Empty.error_reason(), "TOKEN_MISSING");
    assert_eq!(
        Credential::parse("Bearer x"),
        Err(WrongPrefix { expected: None })
    );
    assert_eq!(
        Credential::parse(&text[..52]),
        Err(WrongLength {
            kind: api,
            expected: 53,
            actual: 52
        })
    );
    assert_eq!(
        Credential::parse(&format!("{text} ")),
        Err(WrongLength {
            kind: api,
            expected: 53,
            actual: 54
        })
    );
    assert_eq!(
        Credential::parse(&replace_char(text, 10, '-')),
        Err(BadCharacter {
            kind: api,
            position: 10
        })
    );
    assert_eq!(
        Credential::parse(&replace_char(text, 10, 'x')),
        Err(BadChecksum { kind: api })
    );
    assert_eq!(BadChecksum { kind: api }.error_reason(), "TOKEN_INVALID");
    assert_eq!(
        Credential::parse_as(CredentialKind::Agent, text),
        Err(WrongPrefix {
            expected: Some(CredentialKind::Agent)
        })
    );
    assert_eq!(
        WrongPrefix {
            expected: Some(CredentialKind::Agent)
        }
        .to_string(),
        "credential does not start with slpa_"
    );
    assert_eq!(
        WrongLength {
            kind: api,
            expected: 53,
            actual: 52
        }
        .to_string(),
        "api token has 52 characters, expected 53"
    );
    // An invitation token parses, but is not a bearer credential.
    let invitation = NewCredential::generate(CredentialKind::Invitation).unwrap();
    assert!(
        !Credential::parse(invitation.expose_secret())
            .unwrap()
            .kind()
            .is_bearer()
    );
}

#[test]
fn stored_hashes_round_trip_and_compare() {
    let token = NewCredential::generate(CredentialKind::ApiToken).unwrap();
    let stored = *token.hash().as_bytes();
    let read = CredentialHash::try_from(&stored[..]).unwrap();
    assert!(token.as_credential().verify(&read));
    assert!(CredentialHash::try_from(&stored[..31]).is_err());
    let other = NewCredential::generate(CredentialKind::ApiToken).unwrap();
    assert!(!other.as_credential().verify(&read));
    assert!(!read.ct_eq(&other.hash()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn built_credentials_always_parse(new in credential()) {
        let parsed = Credential::parse(new.expose_secret()).unwrap();
        prop_assert_eq!(parsed.kind(), new.kind());
        prop_assert_eq!(parsed.expose_secret(), new.expose_secret());
        prop_assert!(parsed.verify(&new.hash()));
    }

    /// Any single-character substitution is refused; after the prefix, a base62
    /// replacement is caught by the checksum itself.
    #[test]
    fn any_single_character_change_is_rejected(
        new in credential(),
        index in any::<prop::sample::Index>(),
        replacement in prop_oneof![
            4 => prop::sample::select(ALPHABET.iter().map(|&b| char::from(b)).collect::<Vec<_>>()),
            1 => any::<char>(),
        ],
    ) {
        let text = new.expose_secret();
        let position = index.index(text.len());
        let original = text.as_bytes()[position] as char;
        prop_assume!(replacement != original);
        let changed = replace_char(text, position, replacement);
        let kind = new.kind();
        let result = Credential::parse_as(kind, &changed);
        if position < kind.prefix().len() {
            prop_assert_eq!(result, Err(CredentialError::WrongPrefix { expected: Some(kind) }));
        } else if replacement.is_ascii_alphanumeric() {
            prop_assert_eq!(result, Err(CredentialError::BadChecksum { kind }));
            // Told apart from every other kind too: the prefix is untouched.
            prop_assert_eq!(Credential::parse(&changed), Err(CredentialError::BadChecksum { kind }));
        } else {
            prop_assert_eq!(result, Err(CredentialError::BadCharacter { kind, position }));
        }
    }

    /// Swapping two different neighbouring characters after the prefix is caught.
    #[test]
    fn neighbour_swaps_are_rejected(new in credential(), index in any::<prop::sample::Index>()) {
        let kind = new.kind();
        let mut bytes = new.expose_secret().as_bytes().to_vec();
        let position = kind.prefix().len() + index.index(bytes.len() - kind.prefix().len() - 1);
        prop_assume!(bytes[position] != bytes[position + 1]);
        bytes.swap(position, position + 1);
        let swapped = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(Credential::parse(&swapped), Err(CredentialError::BadChecksum { kind }));
    }

    /// Truncated or extended credentials are a length error, never a panic.
    #[test]
    fn truncation_and_extension_are_length_errors(new in credential(), cut in 1usize..60, extra in "[0-9A-Za-z]{1,8}") {
        let text = new.expose_secret();
        let kind = new.kind();
        let keep = text.len().saturating_sub(cut).max(kind.prefix().len());
        prop_assume!(keep < text.len());
        prop_assert_eq!(
            Credential::parse(&text[..keep]),
            Err(CredentialError::WrongLength { kind, expected: kind.token_len(), actual: keep })
        );
        let longer = format!("{text}{extra}");
        prop_assert!(
            matches!(Credential::parse(&longer), Err(CredentialError::WrongLength { .. })),
            "extended credential was not a length error"
        );
    }

    /// Arbitrary input never panics, and whatever parses really is well formed.
    #[test]
    fn arbitrary_strings_never_panic(
        text in prop_oneof![
            any::<String>(),
            ("slp[aisx_]?_?", any::<String>()).prop_map(|(p, s)| format!("{p}{s}")),
            ("slp_", "[0-9A-Za-z\u{e9}\u{1F600} _-]{40,52}").prop_map(|(p, s)| format!("{p}{s}")),
        ],
        kind in kind(),
    ) {
        if let Ok(parsed) = Credential::parse(&text) {
            prop_assert_eq!(parsed.expose_secret().len(), parsed.kind().token_len());
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        let _ = Credential::parse_as(kind, &text);
    }

    /// Different credentials never share a stored hash; the same one always does.
    #[test]
    fn hashes_identify_credentials(a in credential(), b in credential()) {
        prop_assert_eq!(a.hash() == b.hash(), a.expose_secret() == b.expose_secret());
        prop_assert_eq!(a.hash(), a.as_credential().hash());
    }
}
