//! Name globs, as deployment rules choose environments by name: `*` stands for any run of
//! characters (none included), `?` for exactly one; everything else is literal. Names are
//! DNS labels, so there is nothing to escape.
//!
//! Catalog validates and stores them, and refuses two rules that could claim the same
//! environment at the same priority ([`may_overlap`]); the orchestrator's scheduler
//! matches them ([`matches`]). One implementation keeps the two in agreement.

/// Longest pattern accepted: a DNS label's length.
pub const MAX_LEN: usize = 63;

/// Why a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("must be at most {MAX_LEN} characters")]
    TooLong,
    #[error("may hold only lowercase letters, digits, '-', '*' and '?'")]
    BadCharacter,
}

/// Checks a pattern; the empty pattern is valid and matches every name.
pub fn validate(pattern: &str) -> Result<(), GlobError> {
    if pattern.len() > MAX_LEN {
        return Err(GlobError::TooLong);
    }
    if !pattern
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '*' | '?'))
    {
        return Err(GlobError::BadCharacter);
    }
    Ok(())
}

/// Whether `name` matches `pattern` (the empty pattern matches everything).
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // The classic two-pointer walk: on a mismatch, let the last `*` swallow one more
    // character. Linear in practice, never exponential.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether some name could match both patterns. Exact for literals; two patterns that
/// both hold a wildcard are taken to overlap (`a-*` and `*-b` share `a-b`, and telling
/// the rare disjoint pairs apart is not worth a product automaton here).
pub fn may_overlap(a: &str, b: &str) -> bool {
    let wild = |p: &str| p.is_empty() || p.contains(['*', '?']);
    match (wild(a), wild(b)) {
        (false, false) => a == b,
        (false, true) => matches(b, a),
        (true, false) => matches(a, b),
        (true, true) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_match_as_documented() {
        for (pattern, name, expected) in [
            ("", "anything", true),
            ("*", "", true),
            ("*", "dev", true),
            ("pr-*", "pr-42", true),
            ("pr-*", "pr-", true),
            ("pr-*", "staging", false),
            ("dev-?", "dev-1", true),
            ("dev-?", "dev-12", false),
            ("*-eu", "api-eu", true),
            ("*-eu", "api-us", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("staging", "staging", true),
            ("staging", "staging-2", false),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn validation_refuses_what_no_name_could_hold() {
        assert_eq!(validate("pr-*"), Ok(()));
        assert_eq!(validate(""), Ok(()));
        assert_eq!(validate("PR-*"), Err(GlobError::BadCharacter));
        assert_eq!(validate("pr/*"), Err(GlobError::BadCharacter));
        assert_eq!(validate(&"a".repeat(64)), Err(GlobError::TooLong));
    }

    #[test]
    fn overlap_is_exact_for_literals() {
        assert!(may_overlap("staging", "staging"));
        assert!(!may_overlap("staging", "dev"));
        assert!(may_overlap("pr-*", "pr-1"));
        assert!(!may_overlap("pr-*", "staging"));
        assert!(may_overlap("", "dev"));
        assert!(may_overlap("a-*", "*-b"));
    }

    /// A reference matcher: the regular expression the glob stands for.
    fn reference(pattern: &str, name: &str) -> bool {
        fn go(p: &[char], n: &[char]) -> bool {
            match p.split_first() {
                None => n.is_empty(),
                Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
                Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
                Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
            }
        }
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        pattern.is_empty() || go(&p, &n)
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            pattern in "[ab*?-]{0,8}",
            name in "[ab-]{0,10}",
        ) {
            prop_assert_eq!(matches(&pattern, &name), reference(&pattern, &name));
        }

        #[test]
        fn a_name_matching_both_patterns_means_they_overlap(
            a in "[ab*?]{0,5}",
            b in "[ab*?]{0,5}",
            name in "[ab]{0,6}",
        ) {
            if matches(&a, &name) && matches(&b, &name) {
                prop_assert!(may_overlap(&a, &b));
            }
        }
    }
}
