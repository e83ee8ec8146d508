//! The simulated proxy: loads a scenario's plugins into VMs the way Envoy
//! does (a throw-away VM that validates the configuration, then one VM per
//! thread), and replays streams through the HTTP filter chain.
//!
//! ```no_run
//! let scenario = host_sim_scenario::scenario::Scenario::load("examples/noop.json".as_ref()).unwrap();
//! let result = host_sim_simulator::run(&scenario).unwrap();
//! assert!(result.streams[0].downstream_response.is_some());
//! ```

mod abi;
pub mod bench;
mod pairs;

use host_sim_scenario::{http1_framing, prometheus, result, scenario};

pub use command::run_command as run_wasi_command;

mod chain;
mod command;
mod filter_chain;
mod foreign;
mod hop;
mod host;
mod http1;
mod metrics;
mod node;
mod properties;
mod state;
mod stream;
mod tcp;
mod vm;
mod wasi;

use crate::abi::LogLevel;
use crate::result::{LogLine, PluginStatus, RunResult};
use crate::scenario::{config_bytes, Direction, NodeSpec, PluginType, Scenario, StatsTag};
use host::{Ctx, VmHost};
use state::{EventKind, ProxyState};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
pub use vm::{disable_module_cache, VmLimits};
use vm::{CallOutcome, Vm};
use wasmtime::{Engine, Linker, Module};

pub use host_sim_scenario::{TCP_UPSTREAM_CLUSTER, UPSTREAM_CLUSTER};

/// One plugin of the chain, as its VMs see it.
#[derive(Debug)]
pub(crate) struct PluginInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub log_level: LogLevel,
    pub fail_open: bool,
    pub plugin_type: PluginType,
}

/// Facts about the proxy that do not change while it runs.
pub(crate) struct SimFacts {
    pub node: NodeSpec,
    pub node_proto: Vec<u8>,
    pub direction: Direction,
    pub clusters: Vec<String>,
    pub upstream_cluster: String,
    /// The streams' route name (`xds.route_name`; "" when unnamed).
    pub route_name: String,
    /// The upstream endpoint's `filter_metadata` (scenario
    /// `upstream_endpoint_metadata`).
    pub upstream_host_metadata: serde_json::Map<String, serde_json::Value>,
    /// The upstream cluster's `filter_metadata` (scenario
    /// `upstream_cluster_metadata`).
    pub upstream_cluster_metadata: serde_json::Map<String, serde_json::Value>,
    /// The upstream connection's mutual TLS (`server_proxy.mtls`: the hop
    /// to the server proxy).
    pub upstream_tls: Option<scenario::HopTlsSpec>,
}

/// Where one plugin lives on one thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub vm: usize,
    pub root_context: u32,
}

/// The simulated proxy: a scenario's plugins in their VMs (a base VM, the
/// main thread's, one per worker), the state they share, and virtual time.
pub struct Proxy {
    pub(crate) state: Rc<RefCell<ProxyState>>,
    pub(crate) plugins: Vec<Rc<PluginInfo>>,
    pub(crate) vms: Vec<Vm>,
    /// `threads[t][p]`: plugin p on thread t. Thread 0 is the main thread
    /// (it gets no streams); workers are 1..=workers.
    pub(crate) threads: Vec<Vec<Placement>>,
    pub(crate) statuses: Vec<PluginStatus>,
    pub(crate) stats_tags: Vec<StatsTag>,
    next_worker: usize,
    next_stream_id: u64,
    /// The server proxy of a two-proxy chain (scenario `server_proxy`).
    pub(crate) next_hop: Option<Box<hop::Hop>>,
}

/// Runs a whole scenario on host-sim.
pub fn run(scenario: &Scenario) -> anyhow::Result<RunResult> {
    let mut proxy = Proxy::start(scenario, VmLimits::default())?;
    if let Some(server) = scenario.server_scenario() {
        proxy.next_hop = Some(Box::new(hop::Hop::start(&server, VmLimits::default())?));
    }
    let mut result = proxy.run_streams(scenario);
    result.scenario = scenario.name.clone();
    result.check(&scenario.expect);
    Ok(result)
}

impl Proxy {
    /// Compiles the plugins and starts every VM. Configuration problems do
    /// not return `Err`: they show in [`Proxy::statuses`] like Envoy's
    /// rejection; `Err` means a file could not be read or compiled.
    pub fn start(scenario: &Scenario, limits: VmLimits) -> anyhow::Result<Proxy> {
        let engine = vm::engine_for(&limits)?;
        let facts = Rc::new(SimFacts {
            node: scenario.node.clone(),
            node_proto: node::encode_node(&scenario.node),
            direction: scenario.direction,
            clusters: scenario.clusters.clone(),
            upstream_cluster: scenario.upstream_cluster.clone(),
            route_name: scenario.route_name.clone(),
            upstream_host_metadata: scenario.upstream_endpoint_metadata.clone(),
            upstream_cluster_metadata: scenario.upstream_cluster_metadata.clone(),
            upstream_tls: scenario.server_proxy.as_ref().and_then(|sp| sp.mtls.clone()),
        });
        let state = Rc::new(RefCell::new(ProxyState::default()));
        let plugins: Vec<Rc<PluginInfo>> = scenario
            .plugins
            .iter()
            .map(|p| {
                Rc::new(PluginInfo {
                    name: p.display_name(),
                    root_id: p.root_id.clone(),
                    vm_id: p.vm_id.clone(),
                    configuration: config_bytes(&p.configuration),
                    vm_configuration: config_bytes(&p.vm_configuration),
                    log_level: p.log_level,
                    fail_open: p.fail_open,
                    plugin_type: p.plugin_type,
                })
            })
            .collect();
        let mut modules: HashMap<PathBuf, Module> = HashMap::new();
        for p in &scenario.plugins {
            if !modules.contains_key(&p.wasm) {
                modules.insert(p.wasm.clone(), vm::load_module(&engine, &p.wasm)?);
            }
        }
        // Plugins that name the same vm_id and code share one VM per thread.
        let mut groups: Vec<(PathBuf, Vec<usize>)> = Vec::new();
        for (i, p) in scenario.plugins.iter().enumerate() {
            match groups.iter_mut().find(|(w, members)| {
                !p.vm_id.is_empty() && *w == p.wasm && scenario.plugins[members[0]].vm_id == p.vm_id
            }) {
                Some((_, members)) => members.push(i),
                None => groups.push((p.wasm.clone(), vec![i])),
            }
        }
        let mut proxy = Proxy {
            state,
            plugins,
            vms: Vec::new(),
            threads: Vec::new(),
            statuses: scenario
                .plugins
                .iter()
                .map(|p| PluginStatus {
                    name: p.display_name(),
                    root_id: p.root_id.clone(),
                    vm_started: false,
                    configured: false,
                    error: None,
                })
                .collect(),
            stats_tags: scenario.effective_stats_tags(),
            next_worker: 0,
            next_stream_id: 0,
            next_hop: None,
        };
        let env: Vec<(String, String)> = Vec::new();
        let mut placements: Vec<Vec<Option<Placement>>> =
            vec![vec![None; scenario.plugins.len()]; scenario.workers as usize + 1];
        for (wasm, members) in &groups {
            let module = &modules[wasm];
            let abi = match vm::abi_version(module) {
                Ok(a) => a,
                Err(e) => {
                    proxy.fail_group(members, &e);
                    continue;
                }
            };
            let linker = vm::linker(&engine, abi)?;
            let spec = &scenario.plugins[members[0]];
            let mut env = env.clone();
            env.extend(spec.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())));
            let ctx = VmContext { engine: &engine, module, linker: &linker, facts: &facts, env: &env, limits };
            // The base VM validates the configuration, as Envoy's canary does.
            if let Err(e) = proxy.start_vm(&ctx, members, "base") {
                proxy.fail_group(members, &e);
                proxy.vms.pop();
                continue;
            }
            // Envoy throws the canary VM away after configuring it: a timer
            // it set never fires.
            if let Some(base) = proxy.vms.last_mut() {
                base.store.data_mut().ticks.clear();
            }
            for (thread, slots) in placements.iter_mut().enumerate() {
                let label = if thread == 0 { "thread-local (main)" } else { "thread-local" };
                match proxy.start_vm(&ctx, members, label) {
                    Ok(roots) => {
                        let vm = proxy.vms.len() - 1;
                        for (m, root_context) in members.iter().zip(roots) {
                            slots[*m] = Some(Placement { vm, root_context });
                        }
                    }
                    Err(e) => proxy.fail_group(members, &e),
                }
            }
            for m in members {
                if proxy.statuses[*m].error.is_none() {
                    proxy.statuses[*m].vm_started = true;
                    proxy.statuses[*m].configured = true;
                }
            }
        }
        if proxy.statuses.iter().all(|s| s.configured) {
            proxy.threads =
                placements.into_iter().map(|t| t.into_iter().map(|p| p.expect("placed")).collect()).collect();
        }
        Ok(proxy)
    }

    /// Each plugin's start-up outcome (configured, or why it was refused).
    pub fn statuses(&self) -> &[PluginStatus] {
        &self.statuses
    }

    /// Whether every plugin loaded and accepted its configuration (as Envoy
    /// requires before it serves anything).
    pub fn ready(&self) -> bool {
        !self.threads.is_empty()
    }

    fn fail_group(&mut self, members: &[usize], why: &str) {
        for m in members {
            let s = &mut self.statuses[*m];
            if s.error.is_none() {
                // A VM that refused to start or configure logged its own
                // reason; Envoy's "Wasm VM failed Failed to configure base
                // Wasm plugin" goes to its `wasm` logger, not the plugin's
                // (observed in Envoy 1.40).
                if !why.starts_with("Failed to configure") && !why.starts_with("Failed to start") {
                    self.state.borrow_mut().logs.push(LogLine {
                        level: LogLevel::Error,
                        plugin: s.name.clone(),
                        message: why.to_string(),
                    });
                }
                s.error = Some(format!("Unable to create Wasm plugin {}: {why}", s.name));
            }
        }
    }

    /// Instantiates one VM for a group of plugins and runs each plugin's
    /// root context through create → vm_start → configure. Returns the root
    /// context ids; the VM is pushed to `self.vms`.
    fn start_vm(&mut self, ctx: &VmContext, members: &[usize], label: &str) -> Result<Vec<u32>, String> {
        let plugins: Vec<Rc<PluginInfo>> = members.iter().map(|m| self.plugins[*m].clone()).collect();
        let host = VmHost::new(self.state.clone(), ctx.facts.clone(), self.vms.len(), plugins, ctx.env.clone());
        let vm = Vm::instantiate(ctx.engine, ctx.module, ctx.linker, host, ctx.limits)?;
        self.vms.push(vm);
        let vm_index = self.vms.len() - 1;
        let mut roots = Vec::new();
        for (slot, plugin) in members.iter().enumerate() {
            let root = self.new_context(vm_index, slot, None);
            roots.push(root);
            let vm = &mut self.vms[vm_index];
            let name = self.plugins[*plugin].name.clone();
            let vm_config_len = vm.store.data().plugins[slot].vm_configuration.len() as i32;
            let plugin_config_len = vm.store.data().plugins[slot].configuration.len() as i32;
            set_active(vm, root);
            if let CallOutcome::Trapped(e) = vm.call("proxy_on_context_create", &[root as i32, 0]) {
                return Err(e);
            }
            match vm.call("proxy_on_vm_start", &[root as i32, vm_config_len]) {
                CallOutcome::Trapped(e) => return Err(e),
                CallOutcome::Returned(Some(0)) => return Err(format!("Failed to start {label} Wasm")),
                _ => {}
            }
            // Reported even if the configuration is then refused.
            self.statuses[*plugin].vm_started = true;
            let vm = &mut self.vms[vm_index];
            vm.store.data_mut().configuring = Some(slot);
            let outcome = vm.call("proxy_on_configure", &[root as i32, plugin_config_len]);
            vm.store.data_mut().configuring = None;
            match outcome {
                CallOutcome::Trapped(e) => return Err(e),
                CallOutcome::Returned(Some(0)) => {
                    return Err(format!("Failed to configure {label} Wasm plugin {name}"))
                }
                _ => {}
            }
        }
        Ok(roots)
    }

    /// Allocates a context id in a VM and records what it stands for.
    pub(crate) fn new_context(
        &mut self,
        vm: usize,
        plugin_slot: usize,
        stream: Option<(Rc<RefCell<stream::HttpStream>>, usize, u32)>,
    ) -> u32 {
        let h = self.vms[vm].store.data_mut();
        let id = h.next_context_id;
        h.next_context_id += 1;
        let (stream, root_id) = match stream {
            Some((s, filter, root)) => (Some((s, filter)), root),
            None => (None, id),
        };
        h.contexts.insert(id, Ctx { plugin: plugin_slot, root_id, stream });
        id
    }

    /// Lets virtual time pass, firing due ticks and asynchronous events in
    /// time order.
    pub fn advance(&mut self, ms: u64) {
        let target = self.state.borrow().elapsed_ns + ms * 1_000_000;
        while self.run_next_event(Some(target)) {}
        self.state.borrow_mut().elapsed_ns = target;
    }

    /// Runs the earliest pending tick or event (no later than `until_ns`,
    /// or anything pending when None); false when there was none.
    pub(crate) fn run_next_event(&mut self, until_ns: Option<u64>) -> bool {
        let next_tick = self
            .vms
            .iter()
            .enumerate()
            .filter(|(_, v)| v.failed.is_none())
            .flat_map(|(i, v)| v.store.data().ticks.iter().map(move |(root, t)| (t.next_due_ns, i, *root)))
            .min();
        let next_event = self.state.borrow().next_event_due();
        let limit = until_ns.unwrap_or(u64::MAX);
        let tick_first = match (next_tick, next_event) {
            (Some((t, ..)), Some(e)) => t < e,
            (Some(_), None) => true,
            _ => false,
        };
        if tick_first {
            let (due, vm, root) = next_tick.unwrap();
            if due > limit || (until_ns.is_none() && next_event.is_none()) {
                // Ticks alone never end a wait: without a bound they would
                // fire forever.
                return false;
            }
            {
                // One borrow: `borrow_mut() = ...borrow()` in one statement
                // panics (the RefCell is already mutably borrowed).
                let mut s = self.state.borrow_mut();
                s.elapsed_ns = due.max(s.elapsed_ns);
            }
            if let Some(t) = self.vms[vm].store.data_mut().ticks.get_mut(&root) {
                t.next_due_ns += t.period_ns;
            }
            self.call_root(vm, root, "proxy_on_tick", &[root as i32]);
            return true;
        }
        let Some(event) = self.state.borrow_mut().pop_due_event(limit) else { return false };
        {
            let mut s = self.state.borrow_mut();
            s.elapsed_ns = event.due_ns.max(s.elapsed_ns);
        }
        match event.kind {
            EventKind::QueueReady { root_context, queue_id } => {
                self.call_root(event.vm, root_context, "proxy_on_queue_ready", &[root_context as i32, queue_id as i32]);
            }
            EventKind::HttpCallResponse { context, token, response } => {
                let vm = &mut self.vms[event.vm];
                let h = vm.store.data_mut();
                h.callouts.remove(&token);
                let sizes = match &response {
                    Some(r) => {
                        h.last_status = (0, Vec::new());
                        [r.headers.len() as i32, r.body.len() as i32, r.trailers.len() as i32]
                    }
                    None => {
                        // Envoy reports a failed call with no headers and
                        // status BrokenConnection ("reset").
                        h.last_status = (11, b"reset".to_vec());
                        [0, 0, 0]
                    }
                };
                h.callout_response = response;
                self.call_root(
                    event.vm,
                    context,
                    "proxy_on_http_call_response",
                    &[context as i32, token as i32, sizes[0], sizes[1], sizes[2]],
                );
                self.vms[event.vm].store.data_mut().callout_response = None;
            }
        }
        true
    }

    fn call_root(&mut self, vm: usize, root: u32, export: &'static str, args: &[i32]) {
        let v = &mut self.vms[vm];
        if v.failed.is_some() {
            return;
        }
        set_active(v, root);
        if let CallOutcome::Trapped(e) = v.call(export, args) {
            let plugin = v.store.data().plugin_for_log();
            self.state.borrow_mut().logs.push(LogLine { level: LogLevel::Critical, plugin, message: e });
        }
    }

    /// The metrics in Envoy's Prometheus text format, after tag extraction.
    pub fn prometheus(&self) -> String {
        crate::prometheus::render(self.state.borrow().metrics.all(), &self.stats_tags)
    }

    /// Runs every stream, then every TCP connection, of the scenario (if the
    /// plugins are ready) and collects the result.
    pub fn run_streams(&mut self, scenario: &Scenario) -> RunResult {
        let mut result = RunResult { engine: "host-sim".into(), ..Default::default() };
        let root_logs_before = self.state.borrow().logs.len();
        let mut root_logs: Vec<LogLine> = self.state.borrow().logs[..root_logs_before].to_vec();
        // Envoy serves nothing until every plugin is configured; a server
        // proxy that refused its plugins is not modelled as a running hop.
        if self.ready() && self.next_hop.as_ref().is_none_or(|h| h.proxy.ready()) {
            for spec in &scenario.streams {
                // Ticks and queue callbacks between streams are root logs.
                let before = self.state.borrow().logs.len();
                self.advance_chain(spec.advance_ms_before);
                root_logs.extend_from_slice(&self.state.borrow().logs[before..]);
                result.streams.push(self.run_stream(spec, &scenario.connection));
                if let Some(hop) = &mut self.next_hop {
                    hop.align(result.streams.len(), &spec.name);
                }
            }
            for spec in &scenario.connections {
                let before = self.state.borrow().logs.len();
                self.advance(spec.advance_ms_before);
                root_logs.extend_from_slice(&self.state.borrow().logs[before..]);
                result.connections.push(self.run_connection(spec, &scenario.connection));
            }
            let before = self.state.borrow().logs.len();
            self.advance_chain(scenario.advance_ms_after);
            root_logs.extend_from_slice(&self.state.borrow().logs[before..]);
        }
        result.logs = root_logs;
        result.plugins = self.statuses.clone();
        // A refused configuration stops Envoy during start-up ("error
        // `Unable to create Wasm plugin <name>` initializing config", observed
        // in Envoy 1.40): there are no stats to read. What the VMs recorded
        // stays readable through `prometheus()`.
        if self.ready() {
            result.metrics = self.state.borrow().metrics.values();
            result.prometheus = self.prometheus();
            result.warnings =
                crate::prometheus::unextracted_label_warnings(self.state.borrow().metrics.all(), &self.stats_tags);
        }
        result.server_proxy = self.next_hop.as_ref().map(|h| Box::new(h.result()));
        result
    }

    /// The plugins of one filter chain (HTTP or network), in order.
    pub(crate) fn chain_of(&self, kind: PluginType) -> Vec<usize> {
        (0..self.plugins.len()).filter(|i| self.plugins[*i].plugin_type == kind).collect()
    }

    fn pick_worker(&mut self, requested: Option<u32>) -> usize {
        let workers = self.threads.len() - 1;
        let w = requested.map(|w| w as usize).unwrap_or_else(|| {
            let w = self.next_worker % workers;
            self.next_worker += 1;
            w
        });
        w + 1
    }
}

/// What starting one VM needs.
struct VmContext<'a> {
    engine: &'a Engine,
    module: &'a Module,
    linker: &'a Linker<VmHost>,
    facts: &'a Rc<SimFacts>,
    env: &'a Vec<(String, String)>,
    limits: VmLimits,
}

pub(crate) fn set_active(vm: &mut Vm, context: u32) {
    let h = vm.store.data_mut();
    h.current = context;
    h.effective = context;
}
