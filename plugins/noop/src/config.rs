//! noop's configuration: empty, `{}` or `{"context": "http"}` for an HTTP
//! filter; `{"context": "network"}` for a network (TCP) filter; anything
//! else is refused. The type is fixed by configuration, not detected per
//! context, so the HTTP floor stays free of the extra property read that
//! detection costs.

use proxy_wasm::types::ContextType;

/// The error logged for any other configuration (it names the field).
pub const INVALID: &str = r#"noop: invalid configuration at `context`: use {} or {"context": "http"} (HTTP filter) or {"context": "network"} (network filter)"#;

/// The context type a configuration asks for; None when it is not one of
/// the two accepted forms.
pub fn context_type(config: &[u8]) -> Option<ContextType> {
    let compact: Vec<u8> = config.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    match compact.as_slice() {
        b"" | b"{}" | br#"{"context":"http"}"# => Some(ContextType::HttpContext),
        br#"{"context":"network"}"# => Some(ContextType::StreamContext),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_picks_the_context_type() {
        assert_eq!(context_type(b""), Some(ContextType::HttpContext));
        assert_eq!(context_type(b" { } "), Some(ContextType::HttpContext));
        assert_eq!(context_type(br#"{"context": "http"}"#), Some(ContextType::HttpContext));
        assert_eq!(context_type(br#"{ "context": "network" }"#), Some(ContextType::StreamContext));
        assert_eq!(context_type(br#"{"context":"tcp"}"#), None);
    }
}
