//! The proxy-wasm host functions (module `env`), linked into every VM. Each
//! returns a Status like Envoy's, or traps (`Err`) only when the guest's own
//! allocator trapped. Behaviour notes cite docs/research/host-abi-details.md.

use super::properties::{get_property, ProxyFacts};
use super::state::{CalloutResponse, EventKind, ProxyState};
use super::stream::{HttpStream, LocalReplyRequest, Phase};
use super::{PluginInfo, SimFacts};
use crate::abi::{AbiVersion, BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use crate::http1_framing::{peer_framing, Body, Declared, PeerMessage};
use crate::pairs;
use crate::result::{HttpCallRecord, LogLine};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasmtime::{Caller, Linker, Memory, StoreLimits, TypedFunc};

pub type Ret = wasmtime::Result<i32>;

/// Returns the status from the enclosing host function on `Err`.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(s) => return Ok(s as i32),
        }
    };
}
pub(crate) use check;

/// What a context id stands for inside one VM.
#[derive(Clone)]
pub struct Ctx {
    /// Index into `VmHost::plugins`.
    pub plugin: usize,
    pub root_id: u32,
    pub stream: Option<(Rc<RefCell<HttpStream>>, usize)>,
}

/// Per-root-context timer.
#[derive(Clone, Copy, Debug)]
pub struct Tick {
    pub period_ns: u64,
    pub next_due_ns: u64,
}

/// The wasmtime store data of one VM.
pub struct VmHost {
    pub proxy: Rc<RefCell<ProxyState>>,
    pub facts: Rc<SimFacts>,
    pub vm_index: usize,
    pub vm_id: String,
    pub plugins: Vec<Rc<PluginInfo>>,
    pub contexts: HashMap<u32, Ctx>,
    pub next_context_id: u32,
    /// The context the host called into (foreign functions use it).
    pub current: u32,
    /// The context host calls act on; `proxy_set_effective_context` moves it.
    pub effective: u32,
    /// `_start`/`_initialize` is running: only a few calls are allowed.
    pub starting: bool,
    /// `proxy_on_configure` is running: the plugin configuration is readable.
    pub configuring: Option<usize>,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    pub metric_ids: super::metrics::MetricIds,
    pub next_callout: u32,
    /// Calling context of each outstanding http_call token.
    pub callouts: HashMap<u32, u32>,
    /// The answer being delivered by `proxy_on_http_call_response`.
    pub callout_response: Option<CalloutResponse>,
    /// `proxy_get_status`: code and message of the last callout.
    pub last_status: (u32, Vec<u8>),
    /// Arguments of the foreign function being called (buffer type 8).
    pub foreign_args: Vec<u8>,
    pub ticks: HashMap<u32, Tick>,
    pub declared_properties: HashMap<String, bool>,
    pub limits: StoreLimits,
    pub env: Vec<(String, String)>,
    /// Arguments for WASI `args_get` (empty for plugins, as in Envoy).
    pub args: Vec<String>,
    /// In command mode (the test runner) stdout/stderr go to the terminal.
    pub passthrough_stdio: bool,
    pub exit_code: Option<i32>,
}

impl VmHost {
    /// A VM's host state before instantiation: no contexts, no memory yet.
    pub fn new(
        proxy: Rc<RefCell<ProxyState>>,
        facts: Rc<SimFacts>,
        vm_index: usize,
        plugins: Vec<Rc<PluginInfo>>,
        env: Vec<(String, String)>,
    ) -> Self {
        VmHost {
            proxy,
            facts,
            vm_index,
            vm_id: plugins.first().map(|p| p.vm_id.clone()).unwrap_or_default(),
            plugins,
            contexts: HashMap::new(),
            next_context_id: 1,
            current: 0,
            effective: 0,
            starting: false,
            configuring: None,
            memory: None,
            alloc: None,
            metric_ids: Default::default(),
            next_callout: 0,
            callouts: HashMap::new(),
            callout_response: None,
            last_status: (0, Vec::new()),
            foreign_args: Vec::new(),
            ticks: HashMap::new(),
            declared_properties: HashMap::new(),
            limits: Default::default(),
            env,
            args: Vec::new(),
            passthrough_stdio: false,
            exit_code: None,
        }
    }

    fn ctx(&self) -> Option<&Ctx> {
        self.contexts.get(&self.effective)
    }

    pub fn plugin_for_log(&self) -> String {
        let idx = self.ctx().map(|c| c.plugin).or(self.configuring).unwrap_or(0);
        self.plugins.get(idx).map(|p| p.name.clone()).unwrap_or_default()
    }

    fn stream(&self) -> Option<(Rc<RefCell<HttpStream>>, usize)> {
        self.ctx().and_then(|c| c.stream.clone())
    }

    pub fn log(&self, level: LogLevel, message: String) {
        let plugin = self.plugin_for_log();
        let min = self.plugins.iter().find(|p| p.name == plugin).map(|p| p.log_level).unwrap_or(LogLevel::Trace);
        if level >= min {
            self.proxy.borrow_mut().logs.push(LogLine { level, plugin, message });
        }
    }
}

pub fn memory(c: &Caller<'_, VmHost>) -> Result<Memory, Status> {
    c.data().memory.ok_or(Status::InvalidMemoryAccess)
}

pub fn read_bytes(c: &Caller<'_, VmHost>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = memory(c)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = mem.data(c);
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    data.get(ptr..end).map(|s| s.to_vec()).ok_or(Status::InvalidMemoryAccess)
}

pub fn read_string(c: &Caller<'_, VmHost>, ptr: i32, len: i32) -> Result<String, Status> {
    Ok(String::from_utf8_lossy(&read_bytes(c, ptr, len)?).into_owned())
}

pub fn write_bytes(c: &mut Caller<'_, VmHost>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = memory(c)?;
    mem.write(c, ptr as u32 as usize, bytes).map_err(|_| Status::InvalidMemoryAccess)
}

pub fn write_u32(c: &mut Caller<'_, VmHost>, ptr: i32, v: u32) -> Result<(), Status> {
    write_bytes(c, ptr, &v.to_le_bytes())
}

pub fn write_u64(c: &mut Caller<'_, VmHost>, ptr: i32, v: u64) -> Result<(), Status> {
    write_bytes(c, ptr, &v.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates and writes the pointer and
/// size; an empty result is (0, 0), as in the reference host.
pub fn return_bytes(
    c: &mut Caller<'_, VmHost>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<Result<(), Status>> {
    let mut addr = 0i32;
    if !bytes.is_empty() {
        let Some(alloc) = c.data().alloc.clone() else { return Ok(Err(Status::InvalidMemoryAccess)) };
        addr = alloc.call(&mut *c, bytes.len() as i32)?;
        if addr == 0 {
            return Ok(Err(Status::InvalidMemoryAccess));
        }
        if let Err(s) = write_bytes(c, addr, bytes) {
            return Ok(Err(s));
        }
    }
    Ok(write_u32(c, ptr_ptr, addr as u32).and_then(|_| write_u32(c, size_ptr, bytes.len() as u32)))
}

fn proxy_facts<'a>(h: &'a VmHost, plugin: &'a PluginInfo) -> ProxyFacts<'a> {
    ProxyFacts {
        node: &h.facts.node,
        node_proto: &h.facts.node_proto,
        direction: h.facts.direction,
        plugin_name: &plugin.name,
        plugin_root_id: &plugin.root_id,
        plugin_vm_id: &h.vm_id,
        upstream_cluster: &h.facts.upstream_cluster,
        route_name: &h.facts.route_name,
        upstream_host_metadata: &h.facts.upstream_host_metadata,
        upstream_cluster_metadata: &h.facts.upstream_cluster_metadata,
        upstream_tls: h.facts.upstream_tls.as_ref(),
    }
}

/// Which header map a call may reach now; `None`: not available (Envoy
/// answers BAD_ARGUMENT for value calls and an empty map for pairs).
fn with_map<R>(h: &VmHost, map: MapType, f: impl FnOnce(&mut super::stream::HeaderMap) -> R) -> Option<R> {
    match map {
        MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers => {
            // Read-only copy of the callout's answer.
            let resp = h.callout_response.as_ref()?;
            let list = if map == MapType::HttpCallResponseHeaders { &resp.headers } else { &resp.trailers };
            let mut m = super::stream::HeaderMap(list.clone());
            Some(f(&mut m))
        }
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => None,
        _ => {
            let (stream, filter) = h.stream()?;
            let mut s = stream.borrow_mut();
            if s.network {
                // A network filter has no HTTP header maps.
                return None;
            }
            let phase = s.phase?;
            let log = phase == Phase::Log;
            let available = match map {
                MapType::RequestHeaders => log || s.holds_request_headers(filter),
                MapType::ResponseHeaders => log || s.held_response_headers.get(filter).copied().unwrap_or(false),
                MapType::RequestTrailers => matches!(phase, Phase::RequestTrailers | Phase::RequestBody),
                MapType::ResponseTrailers => log || matches!(phase, Phase::ResponseTrailers | Phase::ResponseBody),
                _ => false,
            };
            if !available {
                return None;
            }
            Some(match map {
                MapType::RequestHeaders => f(&mut s.request_headers),
                MapType::ResponseHeaders => f(&mut s.response_headers),
                MapType::RequestTrailers => f(&mut s.request_trailers),
                _ => f(&mut s.response_trailers),
            })
        }
    }
}

fn is_read_only_map(map: MapType) -> bool {
    matches!(map, MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers)
}

/// In `proxy_on_log` Envoy only has read-only copies of the maps: value and
/// pairs reads work, but changes and `proxy_get_header_map_size` are
/// BAD_ARGUMENT (observed in Envoy 1.40).
fn logging(h: &VmHost) -> bool {
    h.stream().is_some_and(|(s, _)| s.borrow().phase == Some(Phase::Log))
}

/// Registers every `env` host function for the given ABI version.
pub fn add_to_linker(linker: &mut Linker<VmHost>, abi: AbiVersion) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", |c: Caller<'_, VmHost>, level: i32, ptr: i32, len: i32| -> Ret {
        let level = check!(LogLevel::from_i32(level));
        let msg = check!(read_string(&c, ptr, len));
        c.data().log(level, msg);
        Ok(0)
    })?;
    if abi == AbiVersion::V0_2_1 {
        linker.func_wrap("env", "proxy_get_log_level", |mut c: Caller<'_, VmHost>, ret: i32| -> Ret {
            let name = c.data().plugin_for_log();
            let level =
                c.data().plugins.iter().find(|p| p.name == name).map(|p| p.log_level).unwrap_or(LogLevel::Trace);
            check!(write_u32(&mut c, ret, level as u32));
            Ok(0)
        })?;
    }
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: Caller<'_, VmHost>, ret: i32| -> Ret {
        let now = c.data().proxy.borrow().now_ns();
        check!(write_u64(&mut c, ret, now));
        Ok(0)
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: Caller<'_, VmHost>, ms: i32| -> Ret {
        let h = c.data_mut();
        let Some(root) = h.ctx().map(|x| x.root_id) else { return Ok(Status::BadArgument as i32) };
        let period_ns = ms as u32 as u64 * 1_000_000;
        if period_ns == 0 {
            h.ticks.remove(&root);
        } else {
            let now = h.proxy.borrow().elapsed_ns;
            h.ticks.insert(root, Tick { period_ns, next_due_ns: now + period_ns });
        }
        Ok(0)
    })?;
    add_buffer_functions(linker)?;
    add_header_functions(linker)?;
    add_property_functions(linker)?;
    add_stream_functions(linker, abi)?;
    add_callout_functions(linker)?;
    add_metric_functions(linker)?;
    add_shared_functions(linker)?;
    super::foreign::add_to_linker(linker)?;
    Ok(())
}

fn add_buffer_functions(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmHost>, kind: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let kind = check!(BufferType::from_i32(kind));
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            // Copy only the requested range out of the buffer.
            let slice = check!(with_buffer(c.data(), kind, |buf| {
                if start > buf.len() {
                    Vec::new()
                } else {
                    buf[start..buf.len().min(start.saturating_add(max))].to_vec()
                }
            }));
            check!(return_bytes(&mut c, &slice, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Caller<'_, VmHost>, kind: i32, len_ptr: i32, flags_ptr: i32| -> Ret {
            let kind = check!(BufferType::from_i32(kind));
            let len = check!(with_buffer(c.data(), kind, |buf| buf.len()));
            check!(write_u32(&mut c, len_ptr, len as u32));
            check!(write_u32(&mut c, flags_ptr, 0));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |c: Caller<'_, VmHost>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> Ret {
            let kind = check!(BufferType::from_i32(kind));
            let data = check!(read_bytes(&c, ptr, len));
            let h = c.data();
            let Some((stream, _)) = h.stream() else {
                // No stream (a root context): the body slots hold no data,
                // which Envoy answers with BAD_ARGUMENT like any other
                // phase without a body.
                return Ok(match kind {
                    BufferType::DownstreamData | BufferType::UpstreamData => Status::NotFound,
                    _ => Status::BadArgument,
                } as i32);
            };
            let mut s = stream.borrow_mut();
            let phase = s.phase;
            let buf = match (kind, phase) {
                (BufferType::HttpRequestBody, Some(Phase::RequestBody)) => &mut s.request_body,
                (BufferType::HttpResponseBody, Some(Phase::ResponseBody)) => &mut s.response_body,
                (BufferType::DownstreamData, Some(Phase::DownstreamData)) => &mut s.downstream_data,
                (BufferType::UpstreamData, Some(Phase::UpstreamData)) => &mut s.upstream_data,
                (BufferType::HttpRequestBody | BufferType::HttpResponseBody, _) => {
                    return Ok(Status::BadArgument as i32)
                }
                (BufferType::DownstreamData | BufferType::UpstreamData, _) => return Ok(Status::NotFound as i32),
                _ => return Ok(Status::BadArgument as i32),
            };
            // Envoy: start 0 drains `size` bytes then prepends; start at or
            // past the end appends; anything in between is refused.
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            if start == 0 {
                buf.drain(..size.min(buf.len()));
                buf.splice(0..0, data);
            } else if start >= buf.len() {
                buf.extend_from_slice(&data);
            } else {
                return Ok(Status::BadArgument as i32);
            }
            Ok(0)
        },
    )?;
    Ok(())
}

/// The readable bytes of a buffer, or the status Envoy answers.
/// Runs `f` on the readable bytes of a buffer (without copying them), or
/// returns the status Envoy answers.
fn with_buffer<R>(h: &VmHost, kind: BufferType, f: impl FnOnce(&[u8]) -> R) -> Result<R, Status> {
    match kind {
        BufferType::VmConfiguration => {
            let plugin = h.ctx().and_then(|c| h.plugins.get(c.plugin)).or(h.plugins.first());
            Ok(f(plugin.map(|p| p.vm_configuration.as_slice()).unwrap_or_default()))
        }
        BufferType::PluginConfiguration => match h.configuring {
            Some(i) => Ok(f(&h.plugins[i].configuration)),
            None => Err(Status::NotFound),
        },
        BufferType::HttpCallResponseBody => h.callout_response.as_ref().map(|r| f(&r.body)).ok_or(Status::NotFound),
        BufferType::CallData => Ok(f(&h.foreign_args)),
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            // Envoy always has a body buffer object; outside body callbacks
            // it is empty.
            let Some((stream, _)) = h.stream() else { return Ok(f(&[])) };
            let s = stream.borrow();
            Ok(match (kind, s.phase) {
                (BufferType::HttpRequestBody, Some(Phase::RequestBody)) => f(&s.request_body),
                (BufferType::HttpResponseBody, Some(Phase::ResponseBody)) => f(&s.response_body),
                _ => f(&[]),
            })
        }
        BufferType::DownstreamData | BufferType::UpstreamData => {
            // Envoy points these at the connection's buffer only during the
            // matching network callback.
            let (stream, _) = h.stream().ok_or(Status::NotFound)?;
            let s = stream.borrow();
            match (kind, s.phase) {
                (BufferType::DownstreamData, Some(Phase::DownstreamData)) => Ok(f(&s.downstream_data)),
                (BufferType::UpstreamData, Some(Phase::UpstreamData)) => Ok(f(&s.upstream_data)),
                _ => Err(Status::NotFound),
            }
        }
        BufferType::GrpcReceiveBuffer => Err(Status::NotFound),
    }
}

fn add_header_functions(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmHost>, map: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let map = check!(MapType::from_i32(map));
            // An unavailable map reads as empty (Ok), as in Envoy.
            let bytes = with_map(c.data(), map, |m| pairs::encode(&m.0)).unwrap_or_default();
            let bytes = if bytes.len() <= 4 { Vec::new() } else { bytes };
            check!(return_bytes(&mut c, &bytes, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |c: Caller<'_, VmHost>, map: i32, ptr: i32, len: i32| -> Ret {
            let map = check!(MapType::from_i32(map));
            let raw = check!(read_bytes(&c, ptr, len));
            if is_read_only_map(map) || logging(c.data()) {
                return Ok(Status::BadArgument as i32);
            }
            // Malformed input decodes to no pairs: the map is cleared (Envoy).
            let decoded = pairs::decode(&raw).unwrap_or_default();
            let entries: Vec<(String, Vec<u8>)> =
                decoded.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v)).collect();
            check!(with_map(c.data(), map, |m| m.0 = entries).ok_or(Status::BadArgument));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmHost>, map: i32, kptr: i32, klen: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let map = check!(MapType::from_i32(map));
            let key = check!(read_string(&c, kptr, klen));
            let found = check!(with_map(c.data(), map, |m| m.get(&key).map(|v| v.to_vec())).ok_or(Status::BadArgument));
            let value = check!(found.ok_or(Status::NotFound));
            check!(return_bytes(&mut c, &value, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    for (name, op) in [("proxy_add_header_map_value", 0), ("proxy_replace_header_map_value", 1)] {
        linker.func_wrap(
            "env",
            name,
            move |c: Caller<'_, VmHost>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> Ret {
                let map = check!(MapType::from_i32(map));
                let key = check!(read_string(&c, kptr, klen));
                let value = check!(read_bytes(&c, vptr, vlen));
                if is_read_only_map(map) || logging(c.data()) {
                    return Ok(Status::BadArgument as i32);
                }
                let edit = |m: &mut super::stream::HeaderMap| {
                    if op == 0 {
                        m.add(&key, &value)
                    } else {
                        m.replace(&key, &value)
                    }
                };
                check!(with_map(c.data(), map, edit).ok_or(Status::BadArgument));
                Ok(0)
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |c: Caller<'_, VmHost>, map: i32, kptr: i32, klen: i32| -> Ret {
            let map = check!(MapType::from_i32(map));
            let key = check!(read_string(&c, kptr, klen));
            if is_read_only_map(map) || logging(c.data()) {
                return Ok(Status::BadArgument as i32);
            }
            check!(with_map(c.data(), map, |m| m.remove(&key)).ok_or(Status::BadArgument));
            Ok(0)
        },
    )?;
    linker.func_wrap("env", "proxy_get_header_map_size", |mut c: Caller<'_, VmHost>, map: i32, ret: i32| -> Ret {
        let map = check!(MapType::from_i32(map));
        // Envoy answers the map's byteSize(), not its entry count.
        if logging(c.data()) {
            return Ok(Status::BadArgument as i32);
        }
        let size = check!(with_map(c.data(), map, |m| m.byte_size()).ok_or(Status::BadArgument));
        check!(write_u32(&mut c, ret, size as u32));
        Ok(0)
    })?;
    Ok(())
}

fn split_path(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn add_property_functions(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, VmHost>, pptr: i32, plen: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let raw = check!(read_bytes(&c, pptr, plen));
            let segments = split_path(&raw);
            let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
            let value = {
                let h = c.data();
                let plugin = h.ctx().map(|x| x.plugin).or(h.configuring).unwrap_or(0);
                // A WASI command (`host-sim wasi-run`) has no plugin: no property exists.
                let Some(info) = h.plugins.get(plugin) else { return Ok(Status::NotFound as i32) };
                let facts = proxy_facts(h, info);
                let stream = h.stream();
                let guard = stream.as_ref().map(|(s, filter)| (s.borrow(), *filter));
                check!(get_property(&facts, guard.as_ref().map(|(s, f)| (&**s, *f)), &refs))
            };
            check!(return_bytes(&mut c, &value, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |c: Caller<'_, VmHost>, pptr: i32, plen: i32, vptr: i32, vlen: i32| -> Ret {
            let raw = check!(read_bytes(&c, pptr, plen));
            let value = check!(read_bytes(&c, vptr, vlen));
            let h = c.data();
            // No stream info in a root context: NOT_FOUND, as in Envoy.
            let Some((stream, _)) = h.stream() else { return Ok(Status::NotFound as i32) };
            let key = format!("wasm.{}", String::from_utf8_lossy(&raw));
            let read_only =
                h.declared_properties.get(&String::from_utf8_lossy(&raw).into_owned()).copied().unwrap_or(false);
            let mut s = stream.borrow_mut();
            check!(s.set_filter_state(key.clone(), value));
            if read_only {
                if let Some(e) = s.filter_state.get_mut(&key) {
                    e.read_only = true;
                }
            }
            Ok(0)
        },
    )?;
    Ok(())
}

fn add_stream_functions(linker: &mut Linker<VmHost>, abi: AbiVersion) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |c: Caller<'_, VmHost>,
         status: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         grpc: i32|
         -> Ret {
            let details = check!(read_string(&c, dptr, dlen));
            let body = check!(read_bytes(&c, bptr, blen));
            let raw_headers = check!(read_bytes(&c, hptr, hlen));
            let h = c.data();
            // Without a stream (a root context) Envoy has no decoder
            // callbacks: the reply goes nowhere, and the status is still Ok.
            let Some((stream, filter_index)) = h.stream() else { return Ok(0) };
            let headers = pairs::decode(&raw_headers)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
                .collect();
            let mut s = stream.borrow_mut();
            // Envoy keeps the first reply; later ones are ignored. The reply is
            // sent after the current callback returns.
            if s.local_reply.is_none() {
                s.local_reply = Some(LocalReplyRequest {
                    plugin: h.plugin_for_log(),
                    filter_index,
                    status: status as u32 as u16,
                    details: details.replace(' ', "_"),
                    body,
                    headers,
                    grpc_status: (0..=16).contains(&grpc).then_some(grpc),
                });
            }
            Ok(0)
        },
    )?;
    if abi != AbiVersion::V0_1_0 {
        linker.func_wrap("env", "proxy_continue_stream", |c: Caller<'_, VmHost>, kind: i32| -> Ret {
            let kind = check!(StreamType::from_i32(kind));
            if kind == StreamType::Upstream {
                return Ok(Status::Unimplemented as i32);
            }
            if let Some((stream, _)) = c.data().stream() {
                let mut s = stream.borrow_mut();
                match kind {
                    StreamType::Request => s.continue_request = true,
                    StreamType::Response => s.continue_response = true,
                    StreamType::Downstream => s.continue_reading = true,
                    StreamType::Upstream => {}
                }
            }
            Ok(0)
        })?;
        linker.func_wrap("env", "proxy_close_stream", |c: Caller<'_, VmHost>, kind: i32| -> Ret {
            check!(StreamType::from_i32(kind));
            if let Some((stream, _)) = c.data().stream() {
                stream.borrow_mut().close_requested = true;
            }
            Ok(0)
        })?;
    } else {
        for (name, req) in [("proxy_continue_request", true), ("proxy_continue_response", false)] {
            linker.func_wrap("env", name, move |c: Caller<'_, VmHost>| -> Ret {
                if let Some((stream, _)) = c.data().stream() {
                    let mut s = stream.borrow_mut();
                    if req {
                        s.continue_request = true
                    } else {
                        s.continue_response = true
                    }
                }
                Ok(0)
            })?;
        }
        linker.func_wrap("env", "proxy_clear_route_cache", |c: Caller<'_, VmHost>| -> Ret {
            if let Some((stream, _)) = c.data().stream() {
                stream.borrow_mut().route_cache_cleared += 1;
            }
            Ok(0)
        })?;
    }
    linker.func_wrap("env", "proxy_set_effective_context", |mut c: Caller<'_, VmHost>, id: i32| -> Ret {
        let id = id as u32;
        if !c.data().contexts.contains_key(&id) {
            return Ok(Status::BadArgument as i32);
        }
        c.data_mut().effective = id;
        Ok(0)
    })?;
    linker.func_wrap("env", "proxy_done", |_c: Caller<'_, VmHost>| -> Ret {
        // host-sim never defers a root context's shutdown, so nothing waits.
        Ok(Status::NotFound as i32)
    })?;
    Ok(())
}

fn add_callout_functions(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, VmHost>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         tptr: i32,
         tlen: i32,
         timeout_ms: i32,
         token_ptr: i32|
         -> Ret {
            let cluster = check!(read_string(&c, uptr, ulen));
            let headers = pairs::decode(&check!(read_bytes(&c, hptr, hlen))).unwrap_or_default();
            let body = check!(read_bytes(&c, bptr, blen));
            let trailers = pairs::decode(&check!(read_bytes(&c, tptr, tlen))).unwrap_or_default();
            let h = c.data();
            if !h.facts.clusters.contains(&cluster) {
                return Ok(Status::BadArgument as i32);
            }
            let has = |name: &[u8]| headers.iter().any(|(k, _)| k == name);
            if !(has(b":method") && has(b":path") && has(b":authority")) {
                return Ok(Status::BadArgument as i32);
            }
            let Some(ctx) = h.ctx().cloned() else { return Ok(Status::BadArgument as i32) };
            let token = h.next_callout + 4;
            check!(write_u32(&mut c, token_ptr, token));
            let h = c.data_mut();
            h.next_callout = token;
            h.callouts.insert(token, h.effective);
            let to_list = |p: &[(Vec<u8>, Vec<u8>)]| -> Vec<(String, String)> {
                p.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())).collect()
            };
            let mut proxy = h.proxy.borrow_mut();
            let canned = proxy.canned_http_calls.pop_front();
            let timeout_ns = timeout_ms as u32 as u64 * 1_000_000;
            let (delay_ns, response, status) = match canned {
                Some(r) if timeout_ns == 0 || r.delay_ms * 1_000_000 <= timeout_ns => {
                    let mut headers = vec![(":status".to_string(), r.status.to_string().into_bytes())];
                    headers.extend(r.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())));
                    let trailers: Vec<(String, Vec<u8>)> =
                        r.trailers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
                    let chunks = r.chunks();
                    let body = chunks.concat();
                    // As through the router: the answer keeps its HTTP/1
                    // framing header (chunked with trailers or several
                    // chunks, else content-length) and gets
                    // x-envoy-upstream-service-time (observed in Envoy 1.40).
                    let declared = Declared::of(headers.iter().map(|(k, v)| (k, v)));
                    let shape = Body::of(&chunks, !trailers.is_empty());
                    let message = PeerMessage::Response { bodiless: false };
                    if let (Some(framing), _) = peer_framing(declared, shape, message) {
                        headers.push((framing.name().into(), framing.value().into_bytes()));
                    }
                    headers.push(("x-envoy-upstream-service-time".into(), r.delay_ms.to_string().into_bytes()));
                    (r.delay_ms * 1_000_000, Some(CalloutResponse { headers, body, trailers }), Some(r.status))
                }
                // Too slow for the timeout, or nobody answers: the async
                // client's router answers itself, as Envoy 1.40 does (the
                // plugin sees a 504 or 503 answer, not a failed call).
                Some(_) => (timeout_ns, Some(router_reply(504, "upstream request timeout")), None),
                None => (
                    0,
                    Some(router_reply(503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")),
                    None,
                ),
            };
            proxy.http_calls.push(HttpCallRecord {
                plugin: h.plugins[ctx.plugin].name.clone(),
                cluster,
                headers: to_list(&headers),
                body: String::from_utf8_lossy(&body).into_owned(),
                trailers: to_list(&trailers),
                timeout_ms: timeout_ms as u32,
                response_status: status,
            });
            let vm = h.vm_index;
            proxy.schedule(delay_ns, vm, EventKind::HttpCallResponse { context: ctx.root_id, token, response });
            Ok(0)
        },
    )?;
    // gRPC callouts need a gRPC peer; host-sim has none yet, so they fail the
    // way Envoy fails a call to an unknown cluster.
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: Caller<'_, VmHost>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> Ret { Ok(Status::ParseFailure as i32) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: Caller<'_, VmHost>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> Ret {
            Ok(Status::ParseFailure as i32)
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_send", |_c: Caller<'_, VmHost>, _: i32, _: i32, _: i32, _: i32| -> Ret {
        Ok(Status::NotFound as i32)
    })?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        linker.func_wrap("env", name, |_c: Caller<'_, VmHost>, _: i32| -> Ret { Ok(Status::NotFound as i32) })?;
    }
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_, VmHost>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let (code, msg) = c.data().last_status.clone();
            check!(write_u32(&mut c, code_ptr, code));
            check!(return_bytes(&mut c, &msg, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    Ok(())
}

/// A reply the router generates for an http call that got no answer.
fn router_reply(status: u16, body: &str) -> CalloutResponse {
    let headers = vec![
        (":status".to_string(), status.to_string().into_bytes()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
        ("content-type".to_string(), b"text/plain".to_vec()),
    ];
    CalloutResponse { headers, body: body.as_bytes().to_vec(), trailers: Vec::new() }
}

fn add_metric_functions(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmHost>, kind: i32, nptr: i32, nlen: i32, ret: i32| -> Ret {
            let kind = check!(MetricType::from_i32(kind));
            let name = check!(read_string(&c, nptr, nlen));
            let h = c.data_mut();
            let stat = h.proxy.borrow_mut().metrics.define(kind, &name);
            let id = h.metric_ids.assign(kind, stat);
            check!(write_u32(&mut c, ret, id));
            Ok(0)
        },
    )?;
    linker.func_wrap("env", "proxy_increment_metric", |c: Caller<'_, VmHost>, id: i32, offset: i64| -> Ret {
        let h = c.data();
        let stat = check!(h.metric_ids.resolve(id as u32));
        check!(h.proxy.borrow_mut().metrics.increment(stat, offset));
        Ok(0)
    })?;
    linker.func_wrap("env", "proxy_record_metric", |c: Caller<'_, VmHost>, id: i32, value: i64| -> Ret {
        let h = c.data();
        let stat = check!(h.metric_ids.resolve(id as u32));
        check!(h.proxy.borrow_mut().metrics.record(stat, value as u64));
        Ok(0)
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut c: Caller<'_, VmHost>, id: i32, ret: i32| -> Ret {
        let h = c.data();
        let stat = check!(h.metric_ids.resolve(id as u32));
        let value = check!(h.proxy.borrow().metrics.get(stat));
        check!(write_u64(&mut c, ret, value));
        Ok(0)
    })?;
    Ok(())
}

fn add_shared_functions(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmHost>, kptr: i32, klen: i32, ptr_ptr: i32, size_ptr: i32, cas_ptr: i32| -> Ret {
            let key = check!(read_string(&c, kptr, klen));
            let (value, cas) = check!(c.data().proxy.borrow().get_shared_data(&c.data().vm_id, &key));
            check!(return_bytes(&mut c, &value, ptr_ptr, size_ptr)?);
            check!(write_u32(&mut c, cas_ptr, cas));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: Caller<'_, VmHost>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| -> Ret {
            let key = check!(read_string(&c, kptr, klen));
            let value = check!(read_bytes(&c, vptr, vlen));
            let h = c.data();
            check!(h.proxy.borrow_mut().set_shared_data(&h.vm_id, &key, value, cas as u32));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_, VmHost>, nptr: i32, nlen: i32, ret: i32| -> Ret {
            let name = check!(read_string(&c, nptr, nlen));
            let h = c.data();
            let root = h.ctx().map(|x| x.root_id).unwrap_or(0);
            let id = h.proxy.borrow_mut().register_queue(&h.vm_id, &name, (h.vm_index, root));
            check!(write_u32(&mut c, ret, id));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, VmHost>, vptr: i32, vlen: i32, nptr: i32, nlen: i32, ret: i32| -> Ret {
            let mut vm_id = check!(read_string(&c, vptr, vlen));
            let name = check!(read_string(&c, nptr, nlen));
            if vm_id.is_empty() {
                vm_id = c.data().vm_id.clone();
            }
            let id = check!(c.data().proxy.borrow().resolve_queue(&vm_id, &name));
            check!(write_u32(&mut c, ret, id));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: Caller<'_, VmHost>, id: i32, ptr: i32, len: i32| -> Ret {
            let data = check!(read_bytes(&c, ptr, len));
            check!(c.data().proxy.borrow_mut().enqueue(id as u32, data));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, VmHost>, id: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let data = check!(c.data().proxy.borrow_mut().dequeue(id as u32));
            check!(return_bytes(&mut c, &data, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    Ok(())
}
