//! What an HTTP stream (chain.rs) and a TCP connection (tcp.rs) share: the
//! filter chain it goes through on one worker, each filter's context
//! (created on the filter's first callback, as Envoy does), hook calls on
//! the filters' VMs, and the first trap seen.

use super::stream::{HttpStream, Phase};
use super::vm::CallOutcome;
use super::{set_active, Placement, PluginInfo, Proxy};
use crate::result::PluginFailure;
use crate::scenario::PluginType;
use std::cell::RefCell;
use std::rc::Rc;

pub(super) struct FilterChain<'p> {
    pub proxy: &'p mut Proxy,
    /// Plugin index of each filter position.
    plugins: Vec<usize>,
    pub worker: usize,
    /// The stream or connection every filter's context sees.
    pub stream: Rc<RefCell<HttpStream>>,
    /// Context id of each filter, once created.
    pub contexts: Vec<Option<u32>>,
    /// The first trap (Envoy logs it as its own error, not a plugin log).
    pub failure: Option<PluginFailure>,
    /// The phase a hook leaves behind when it returns; None keeps the hook's.
    pub phase_after_hook: Option<Phase>,
}

impl<'p> FilterChain<'p> {
    /// A new stream or connection through the `kind` chain, on the worker
    /// the scenario names or the next one (round-robin). `stream` gets its
    /// id, start time and per-filter header bookkeeping here.
    pub fn new(proxy: &'p mut Proxy, kind: PluginType, worker: Option<u32>, stream: HttpStream) -> Self {
        let worker = proxy.pick_worker(worker);
        let plugins = proxy.chain_of(kind);
        let n = plugins.len();
        proxy.next_stream_id += 1;
        let stream = HttpStream {
            connection_id: proxy.next_stream_id,
            start_ns: proxy.state.borrow().now_ns(),
            held_request_headers: vec![false; n],
            held_response_headers: vec![false; n],
            ..stream
        };
        FilterChain {
            proxy,
            plugins,
            worker,
            stream: Rc::new(RefCell::new(stream)),
            contexts: vec![None; n],
            failure: None,
            phase_after_hook: None,
        }
    }

    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    pub fn plugin(&self, filter: usize) -> &PluginInfo {
        &self.proxy.plugins[self.plugins[filter]]
    }

    fn placement(&self, filter: usize) -> Placement {
        self.proxy.threads[self.worker][self.plugins[filter]]
    }

    /// Whether traffic passes a filter whose VM failed.
    pub fn fails_open(&self, filter: usize) -> bool {
        self.plugin(filter).fail_open
    }

    /// The filter's context id, creating it on first use with
    /// `proxy_on_context_create`. None when the plugin's VM has failed, or
    /// the creation trapped (the id is kept: later calls find the VM
    /// failed).
    pub fn context(&mut self, filter: usize) -> Option<u32> {
        if let Some(id) = self.contexts[filter] {
            return Some(id);
        }
        let place = self.placement(filter);
        if self.proxy.vms[place.vm].failed.is_some() {
            return None;
        }
        let slot = self.proxy.vms[place.vm].store.data().contexts[&place.root_context].plugin;
        let stream = Some((self.stream.clone(), filter, place.root_context));
        let id = self.proxy.new_context(place.vm, slot, stream);
        self.contexts[filter] = Some(id);
        let outcome = self.call(filter, "proxy_on_context_create", &[id as i32, place.root_context as i32]);
        (!matches!(outcome, Some(CallOutcome::Trapped(_)) | None)).then_some(id)
    }

    /// Calls an export of the filter's VM (`args[0]` is the context); None
    /// when the VM has failed. The first trap is kept in `failure`.
    pub fn call(&mut self, filter: usize, export: &'static str, args: &[i32]) -> Option<CallOutcome> {
        let plugin = self.plugins[filter];
        let place = self.placement(filter);
        let vm = &mut self.proxy.vms[place.vm];
        if vm.failed.is_some() {
            return None;
        }
        set_active(vm, args[0] as u32);
        let outcome = vm.call(export, args);
        if let CallOutcome::Trapped(msg) = &outcome {
            if self.failure.is_none() {
                self.failure =
                    Some(PluginFailure { plugin: self.proxy.plugins[plugin].name.clone(), message: msg.clone() });
            }
        }
        Some(outcome)
    }

    /// Runs a hook of the filter in `phase`, its context first in the
    /// arguments: the action it returned (0, Continue, when the plugin does
    /// not export the hook), or None when the filter failed (its VM had
    /// failed, or trapped now).
    pub fn hook(&mut self, filter: usize, phase: Phase, export: &'static str, args: &[i32]) -> Option<i32> {
        let ctx = self.context(filter)?;
        self.stream.borrow_mut().phase = Some(phase);
        let mut full = vec![ctx as i32];
        full.extend_from_slice(args);
        let outcome = self.call(filter, export, &full);
        if let Some(after) = self.phase_after_hook {
            self.stream.borrow_mut().phase = Some(after);
        }
        match outcome {
            None | Some(CallOutcome::Trapped(_)) => None,
            Some(CallOutcome::Returned(r)) => Some(r.unwrap_or(0) as i32),
            Some(CallOutcome::Missing) => Some(0),
        }
    }

    /// Forgets a filter's context once `proxy_on_delete` ran.
    pub fn delete_context(&mut self, filter: usize, ctx: u32) {
        let place = self.placement(filter);
        self.proxy.vms[place.vm].store.data_mut().contexts.remove(&ctx);
    }
}
