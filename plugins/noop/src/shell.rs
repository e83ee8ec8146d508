//! The plugin shell: a root context that reads its configuration, and
//! stream contexts (HTTP or network) that keep every default `Continue`.

use crate::config::{context_type, INVALID};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{ContextType, LogLevel};

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
        let config = self.get_plugin_configuration().unwrap_or_default();
        match context_type(&config) {
            Some(t) => {
                self.context = t;
                true
            }
            None => {
                let _ = proxy_wasm::hostcalls::log(LogLevel::Error, INVALID);
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
