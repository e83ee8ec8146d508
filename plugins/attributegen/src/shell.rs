//! The plugin shell: the root context reads the configuration and defines
//! Istio's error counters; the HTTP context runs the rules in their phase
//! and writes each value with `set_property`. Every host call goes through
//! `meshwasm_sdk::host`, which never panics.

use crate::config::Phase;
use crate::rules::{AttributeGen, Outcome};
use meshwasm_sdk::attributes::HostAttributes;
use meshwasm_sdk::host::{self, LogLevel, MetricType};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

/// The root context of a new plugin instance (the entry point's factory).
pub fn root(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(Root::default())
}

fn log(level: LogLevel, message: &str) {
    let _ = host::log(level, message);
}

/// Istio's error counters (its `error_count` metric with tags
/// `wasm_filter=attributegen` and `type=config|runtime`, named as the
/// proxy-wasm C++ SDK composes tagged names).
const CONFIG_ERRORS: &str = "wasm_filter.attributegen.type.config.error_count";
const RUNTIME_ERRORS: &str = "wasm_filter.attributegen.type.runtime.error_count";

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
}

struct Plugin {
    gen: AttributeGen,
    runtime_errors: Option<u32>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(config) = host::plugin_configuration_or_log("attributegen") else { return false };
        // Both counters exist from the start, as Istio resolves them when its
        // root context is created.
        let config_errors = host::define_metric(MetricType::Counter, CONFIG_ERRORS).ok();
        let runtime_errors = host::define_metric(MetricType::Counter, RUNTIME_ERRORS).ok();
        match AttributeGen::from_config(&config) {
            Ok(gen) => {
                // What Istio's plugin accepted but could not use: each logged
                // with its field; counted once per configuration, as Istio
                // counted one config error per failed configure.
                for e in &gen.tolerated {
                    log(LogLevel::Error, &e.to_string());
                }
                if let (Some(id), false) = (config_errors, gen.tolerated.is_empty()) {
                    let _ = host::increment_metric(id, 1);
                }
                if gen.debug {
                    for g in &gen.generators {
                        log(
                            LogLevel::Debug,
                            &format!("{}: {} matches, {:?}", g.output_attribute, g.matches.len(), g.phase),
                        );
                    }
                }
                self.plugin = Some(Rc::new(Plugin { gen, runtime_errors }));
                true
            }
            Err(e) => {
                if let Some(id) = config_errors {
                    let _ = host::increment_metric(id, 1);
                }
                // Envoy prefixes plugin logs with the plugin's name.
                log(LogLevel::Error, &e.to_string());
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { plugin: self.plugin.clone() }))
    }
}

struct Stream {
    plugin: Option<Rc<Plugin>>,
}

impl Stream {
    fn generate(&self, phase: Phase) {
        let Some(plugin) = &self.plugin else { return };
        if !plugin.gen.has_phase(phase) {
            return;
        }
        let attrs = HostAttributes::new();
        for outcome in plugin.gen.run(phase, &attrs) {
            match outcome {
                Outcome::Set { attribute, value } => {
                    // The status as a number in the debug log, as before.
                    let result = host::set_property(&[attribute], value.as_bytes()).map_err(host::Error::raw);
                    if plugin.gen.debug {
                        log(LogLevel::Debug, &format!("set {attribute} = {value} ({result:?})"));
                    }
                }
                Outcome::NoMatch { .. } => {}
                Outcome::Error { attribute, index, message } => {
                    if let Some(id) = plugin.runtime_errors {
                        let _ = host::increment_metric(id, 1);
                    }
                    if plugin.gen.debug {
                        log(LogLevel::Debug, &format!("{attribute}: match[{index}] failed: {message}"));
                    }
                }
            }
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.generate(Phase::OnRequest);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.generate(Phase::AfterResponse);
    }
}
