//! noop's configuration: nothing, `{}` or `{"context": "http"}` (or
//! `"context": null`, protobuf JSON's default) for an HTTP filter;
//! `{"context": "network"}` for a network (TCP) filter; anything else is
//! refused, an array or any other non-object as every plugin refuses it.
//! The type is fixed by configuration, not detected per context, so the
//! HTTP floor stays free of the extra property read that detection costs.
//!
//! The forms are matched on the text with whitespace outside strings
//! removed, not with the SDK's serde parser: that parser would add ~100 KB
//! to the floor plugin (167 KB → 267 KB measured), for four forms.

use proxy_wasm::types::ContextType;

/// The error logged for any other configuration (it names the field).
pub const INVALID: &str = r#"noop: invalid configuration at `context`: use {} or {"context": "http"} (HTTP filter) or {"context": "network"} (network filter)"#;

/// The error logged for a configuration that is not a JSON object.
pub const NOT_AN_OBJECT: &str =
    "noop: invalid configuration at `.`: expected a JSON object (a configuration is an object or empty)";

/// The configuration without the whitespace JSON allows between tokens
/// (whitespace inside strings is kept, so `"net work"` stays wrong).
fn compact(config: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(config.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in config {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
    out
}

/// The context type a configuration asks for; the error to log otherwise.
pub fn context_type(config: &[u8]) -> Result<ContextType, &'static str> {
    let compact = compact(config);
    match compact.as_slice() {
        b"" | b"{}" | br#"{"context":"http"}"# | br#"{"context":null}"# => Ok(ContextType::HttpContext),
        br#"{"context":"network"}"# => Ok(ContextType::StreamContext),
        [b'{', ..] => Err(INVALID),
        _ => Err(NOT_AN_OBJECT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_picks_the_context_type() {
        assert_eq!(context_type(b""), Ok(ContextType::HttpContext));
        assert_eq!(context_type(b" \n"), Ok(ContextType::HttpContext));
        assert_eq!(context_type(b" { } "), Ok(ContextType::HttpContext));
        assert_eq!(context_type(br#"{"context": "http"}"#), Ok(ContextType::HttpContext));
        assert_eq!(context_type(br#"{"context" : null}"#), Ok(ContextType::HttpContext));
        assert_eq!(context_type(br#"{ "context": "network" }"#), Ok(ContextType::StreamContext));
        assert_eq!(context_type(br#"{"context":"tcp"}"#), Err(INVALID));
        assert_eq!(context_type(br#"{"context":"net work"}"#), Err(INVALID), "whitespace in a string counts");
        assert_eq!(context_type(br#"{"con text":"http"}"#), Err(INVALID));
        for not_an_object in [&br#"["network"]"#[..], b"[]", br#""http""#, b"1", b"null"] {
            assert_eq!(context_type(not_an_object), Err(NOT_AN_OBJECT), "{}", String::from_utf8_lossy(not_an_object));
        }
    }
}
