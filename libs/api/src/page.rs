//! Page tokens: the store's keyset cursor, bound to the query it continues.
//!
//! A token is hex-encoded JSON `{ "q": <query>, "c": <cursor> }`. `q` names the listing and
//! its filters (e.g. `api_tokens/<organization id>`), so a token used with other request
//! fields is refused with INVALID_ARGUMENT instead of silently paging something else. It
//! is not secret: it holds only the sort key of the last item the caller already saw, and
//! every listing still filters by the caller's organization.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use slipway_proto::ApiError;

#[derive(Serialize, Deserialize)]
struct Token<C> {
    q: String,
    c: C,
}

/// The cursor in `token` for the listing `query`; `None` for an empty token (first page).
pub fn decode<C: DeserializeOwned>(token: &str, query: &str) -> Result<Option<C>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::invalid_field(
            "page_token",
            "is not a page token of this listing with these fields",
        )
    };
    let bytes = from_hex(token).ok_or_else(invalid)?;
    let decoded: Token<C> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if decoded.q != query {
        return Err(invalid());
    }
    Ok(Some(decoded.c))
}

/// The token for the next page; empty when there is none.
pub fn encode<C: Serialize>(cursor: Option<C>, query: &str) -> String {
    let Some(cursor) = cursor else {
        return String::new();
    };
    let token = Token {
        q: query.to_owned(),
        c: cursor,
    };
    serde_json::to_vec(&token)
        .map(|bytes| to_hex(&bytes))
        .unwrap_or_default()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 16_384 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct NameCursor {
        name: String,
    }

    #[test]
    fn tokens_round_trip_and_stay_bound_to_their_query() {
        let token = encode(Some(NameCursor { name: "ci".into() }), "q1");
        let back: Option<NameCursor> = decode(&token, "q1").unwrap();
        assert_eq!(back, Some(NameCursor { name: "ci".into() }));
        assert!(decode::<NameCursor>(&token, "q2").is_err());
        assert!(decode::<NameCursor>("zz", "q1").is_err());
        assert_eq!(decode::<NameCursor>("", "q1").unwrap(), None);
        assert_eq!(encode::<NameCursor>(None, "q1"), "");
    }
}
