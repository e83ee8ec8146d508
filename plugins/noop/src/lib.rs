//! `noop`: a root context whose stream contexts return `Continue`
//! everywhere. Its per-request (or per-connection) cost is the floor every
//! other plugin is measured against.
//!
//! Configuration: empty, `{}` or `{"context": "http"}` for an HTTP filter;
//! `{"context": "network"}` for a network (TCP) filter; anything else is
//! refused. The type is fixed by configuration, not
//! detected per context, so the HTTP floor stays free of the extra property
//! read that detection costs.

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { context: ContextType::HttpContext }) });
}}

struct NoopRoot {
    context: ContextType,
}

impl Context for NoopRoot {}

/// The context type a configuration asks for; None when it is not one of
/// the two accepted forms.
fn context_type(config: &[u8]) -> Option<ContextType> {
    let compact: Vec<u8> = config.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    match compact.as_slice() {
        b"" | b"{}" | br#"{"context":"http"}"# => Some(ContextType::HttpContext),
        br#"{"context":"network"}"# => Some(ContextType::StreamContext),
        _ => None,
    }
}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match context_type(&config) {
            Some(t) => {
                self.context = t;
                true
            }
            None => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    r#"noop: invalid configuration at `context`: use {} or {"context": "http"} (HTTP filter) or {"context": "network"} (network filter)"#,
                );
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(self.context)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopStream))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(NoopStream))
    }
}

struct NoopStream;

impl Context for NoopStream {}

impl HttpContext for NoopStream {}

impl StreamContext for NoopStream {}

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
