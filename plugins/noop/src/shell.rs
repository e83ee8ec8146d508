//! The plugin shell: a root context that reads its configuration, and
//! stream contexts (HTTP or network) that keep every default `Continue`.
//! Its host calls go through `meshwasm_sdk::host`, which never panics.

use crate::config::context_type;
use meshwasm_sdk::host::{self, LogLevel};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

/// The root context of a new plugin instance (the entry point's factory).
pub fn root(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(NoopRoot { context: ContextType::HttpContext })
}

struct NoopRoot {
    context: ContextType,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = host::plugin_configuration_or_log("noop") else { return false };
        match context_type(&config) {
            Ok(t) => {
                self.context = t;
                true
            }
            Err(message) => {
                let _ = host::log(LogLevel::Error, message);
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
