//! Every proxy-wasm host call a plugin makes, none of which can panic.
//!
//! The stock proxy-wasm Rust SDK panics (trapping the VM, which in Envoy
//! fails the request or connection) on any status it does not expect, and
//! its `get_http_request_header` does `String::from_utf8(..).unwrap()` on
//! header values, which a client controls. Here:
//!
//! * every function returns a `Result` whose error is the host's
//!   [`Status`], or the raw number when the ABI defines no such status
//!   ([`Error`]);
//! * reads map NOT_FOUND to `Ok(None)` (a missing header, property or
//!   buffer is an answer, not a failure);
//! * header values are bytes; [`get_header_lossy`] and [`get_header_utf8`]
//!   are the string forms, neither of which can trap;
//! * an answer the host gave that cannot be decoded (a malformed pairs
//!   buffer) is `Err(Status::SerializationFailure)`.
//!
//! Plugins keep the proxy-wasm crate for its context traits and dispatch
//! (`RootContext`, `HttpContext`, `StreamContext`, `proxy_on_*` exports and
//! the allocator the host fills our buffers through), but call none of its
//! `hostcalls` nor the trait methods that wrap them.
//!
//! Outside wasm every call answers as a host with nothing would: NOT_FOUND
//! (so reads are `Ok(None)`), and logging succeeds into nowhere. Plugin
//! logic built on these calls compiles and unit-tests natively.

mod raw;

pub use meshwasm_wire::abi::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use std::ptr::null_mut;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A host call that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A status the ABI defines (never [`Status::Ok`]).
    Status(Status),
    /// A number the ABI does not define, as the host returned it.
    Raw(u32),
}

impl Error {
    /// The error for a non-OK status number.
    pub fn from_raw(raw: u32) -> Self {
        match Status::from_raw(raw) {
            Some(status) => Error::Status(status),
            None => Error::Raw(raw),
        }
    }

    /// The number on the wire.
    pub fn raw(self) -> u32 {
        match self {
            Error::Status(status) => status.raw(),
            Error::Raw(raw) => raw,
        }
    }

    /// The status, when the ABI defines it.
    pub fn status(self) -> Option<Status> {
        match self {
            Error::Status(status) => Some(status),
            Error::Raw(_) => None,
        }
    }

    /// NOT_FOUND (a root context asked for stream data, a missing queue, ...).
    pub fn is_not_found(self) -> bool {
        self == Error::Status(Status::NotFound)
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::Status(status)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Status(status) => write!(f, "host status {status:?} ({})", status.raw()),
            Error::Raw(raw) => write!(f, "host status {raw} (not an ABI status)"),
        }
    }
}

impl std::error::Error for Error {}

/// A host call's result.
pub type Result<T> = std::result::Result<T, Error>;

/// A header map's entries, names and values as bytes, in the host's order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// `Ok` for status 0, the error otherwise.
pub fn check(raw: u32) -> Result<()> {
    match raw {
        0 => Ok(()),
        other => Err(Error::from_raw(other)),
    }
}

/// For reads: `Ok(true)` for OK, `Ok(false)` for NOT_FOUND, the error otherwise.
fn found(raw: u32) -> Result<bool> {
    match check(raw) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The error for a host answer that cannot be decoded.
const UNDECODABLE: Error = Error::Status(Status::SerializationFailure);

/// A buffer the host returned: it allocated it through the module's
/// `proxy_on_memory_allocate` (the proxy-wasm crate's, a boxed slice of
/// exactly `size` bytes from the global allocator), and we own it now.
struct HostBuffer {
    data: *mut u8,
    size: usize,
}

impl HostBuffer {
    fn new() -> Self {
        HostBuffer { data: null_mut(), size: 0 }
    }

    /// Takes the bytes; an empty answer may come without a pointer.
    fn take(self) -> Vec<u8> {
        if self.data.is_null() {
            return Vec::new();
        }
        // SAFETY: see the type's comment; the host wrote `data` and `size`
        // together, and nothing else owns the allocation.
        unsafe { Vec::from_raw_parts(self.data, self.size, self.size) }
    }
}

/// Calls `f` with out-pointers for a host-allocated buffer. The buffer is
/// taken (never leaked) whatever the status; it is `None` unless OK.
fn read_buffer(f: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>> {
    let mut buf = HostBuffer::new();
    let status = f(&mut buf.data, &mut buf.size);
    let bytes = buf.take();
    Ok(found(status)?.then_some(bytes))
}

/// Lengths the ABI carries as u32: saturate rather than fail (nothing that
/// large fits in a wasm32 memory anyway).
fn saturate_u32(n: u128) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ------------------------------------------------------------------ logging

/// `proxy_log`: a message at `level` in the proxy's log.
pub fn log(level: LogLevel, message: &str) -> Result<()> {
    // SAFETY (every `unsafe` call below): the pointers are to live buffers
    // (or out-values) for the duration of the call; the host copies inputs.
    check(unsafe { raw::proxy_log(level.raw(), message.as_ptr(), message.len()) })
}

/// Sends a panic's message to the proxy's log (Critical) before the VM
/// aborts, as proxy-wasm's `set_log_level` hook does, without that hook's
/// own unwrap on the log call. Plugins call it first in `proxy_wasm::main!`;
/// no panic is expected, this is what makes one visible if it happens.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let _ = log(LogLevel::Critical, &info.to_string());
    }));
}

/// `proxy_get_log_level`: the least severe level the proxy logs.
pub fn get_log_level() -> Result<LogLevel> {
    let mut level = 0u32;
    check(unsafe { raw::proxy_get_log_level(&mut level) })?;
    i32::try_from(level).ok().and_then(|l| LogLevel::from_i32(l).ok()).ok_or(UNDECODABLE)
}

// ------------------------------------------------------------------ properties

/// A property path as `proxy_get_property` takes it: segments joined by NUL.
pub fn serialize_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// `proxy_get_property`: the property's bytes (Envoy's encodings, see
/// [`crate::property`]), `None` when the proxy does not have it.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>> {
    let p = serialize_path(path);
    read_buffer(|data, size| unsafe { raw::proxy_get_property(p.as_ptr(), p.len(), data, size) })
}

/// `proxy_set_property` (Envoy stores it as filter state `wasm.<path>`):
/// NOT_FOUND in a root context, BAD_ARGUMENT for a read-only property.
pub fn set_property(path: &[&str], value: &[u8]) -> Result<()> {
    let p = serialize_path(path);
    check(unsafe { raw::proxy_set_property(p.as_ptr(), p.len(), value.as_ptr(), value.len()) })
}

// ------------------------------------------------------------------ header maps

/// `proxy_get_header_map_value`: a header's value as bytes, `None` when the
/// map does not have it. (Envoy joins repeated names with `,`.)
pub fn get_header(map: MapType, name: &str) -> Result<Option<Vec<u8>>> {
    read_buffer(|data, size| unsafe {
        raw::proxy_get_header_map_value(map.raw(), name.as_ptr(), name.len(), data, size)
    })
}

/// [`get_header`] as a string, invalid UTF-8 replaced by U+FFFD.
pub fn get_header_lossy(map: MapType, name: &str) -> Result<Option<String>> {
    Ok(get_header(map, name)?.map(lossy))
}

/// [`get_header`] as a string; a value that is not UTF-8 is
/// `Err(Status::SerializationFailure)` (a client controls header bytes).
pub fn get_header_utf8(map: MapType, name: &str) -> Result<Option<String>> {
    get_header(map, name)?.map(utf8).transpose()
}

/// `proxy_get_header_map_pairs`: every entry of a map, in order.
pub fn get_headers(map: MapType) -> Result<Pairs> {
    let bytes = read_buffer(|data, size| unsafe { raw::proxy_get_header_map_pairs(map.raw(), data, size) })?;
    match bytes {
        None => Ok(Vec::new()),
        Some(bytes) => decode_pairs(&bytes),
    }
}

/// [`get_headers`] with names and values as lossy strings.
pub fn get_headers_lossy(map: MapType) -> Result<Vec<(String, String)>> {
    Ok(get_headers(map)?.into_iter().map(|(k, v)| (lossy(k), lossy(v))).collect())
}

/// `proxy_set_header_map_pairs`: replaces a whole map.
pub fn set_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(map: MapType, headers: &[(K, V)]) -> Result<()> {
    let bytes = meshwasm_wire::pairs::encode(headers);
    check(unsafe { raw::proxy_set_header_map_pairs(map.raw(), bytes.as_ptr(), bytes.len()) })
}

/// `proxy_add_header_map_value`: adds a value (a repeated name keeps both).
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<()> {
    check(unsafe { raw::proxy_add_header_map_value(map.raw(), name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// `proxy_replace_header_map_value`: sets a header, replacing its values.
pub fn replace_header(map: MapType, name: &str, value: &[u8]) -> Result<()> {
    check(unsafe {
        raw::proxy_replace_header_map_value(map.raw(), name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// `proxy_remove_header_map_value`: removes every value of a header.
pub fn remove_header(map: MapType, name: &str) -> Result<()> {
    check(unsafe { raw::proxy_remove_header_map_value(map.raw(), name.as_ptr(), name.len()) })
}

/// A pairs buffer the host returned, owned.
fn decode_pairs(bytes: &[u8]) -> Result<Pairs> {
    let pairs = meshwasm_wire::pairs::decode(bytes).ok_or(UNDECODABLE)?;
    Ok(pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
}

/// Bytes as a string, invalid UTF-8 replaced by U+FFFD.
pub fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Bytes as a string; `Err(Status::SerializationFailure)` when not UTF-8.
pub fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| UNDECODABLE)
}

// ------------------------------------------------------------------ buffers

/// `proxy_get_buffer_bytes`: up to `max_size` bytes of a buffer from
/// `start` (a body, downstream/upstream data, a configuration, an HTTP
/// call's response body); `None` when the buffer is not available now.
pub fn get_buffer(buffer: BufferType, start: usize, max_size: usize) -> Result<Option<Vec<u8>>> {
    read_buffer(|data, size| unsafe { raw::proxy_get_buffer_bytes(buffer.raw(), start, max_size, data, size) })
}

/// The whole of a buffer whose size the host did not announce (a
/// configuration): asks for as much as a wasm32 memory could hold.
fn get_whole_buffer(buffer: BufferType) -> Result<Option<Vec<u8>>> {
    // i32::MAX: hosts read the size as a signed 32-bit number.
    get_buffer(buffer, 0, i32::MAX as usize)
}

/// The plugin configuration (in `on_configure`); `None` when there is none.
pub fn get_plugin_configuration() -> Result<Option<Vec<u8>>> {
    get_whole_buffer(BufferType::PluginConfiguration)
}

/// The plugin configuration for `on_configure`: empty when there is none;
/// `None`, after logging `<plugin>: cannot read the configuration: ...`,
/// when the host fails to give it (the plugin then refuses to start).
pub fn plugin_configuration_or_log(plugin: &str) -> Option<Vec<u8>> {
    match get_plugin_configuration() {
        Ok(config) => Some(config.unwrap_or_default()),
        Err(e) => {
            let _ = log(LogLevel::Error, &format!("{plugin}: cannot read the configuration: {e}"));
            None
        }
    }
}

/// The VM configuration (in `on_vm_start`); `None` when there is none.
pub fn get_vm_configuration() -> Result<Option<Vec<u8>>> {
    get_whole_buffer(BufferType::VmConfiguration)
}

/// `proxy_set_buffer_bytes`: replaces `size` bytes at `start` with `data`
/// (`start` 0 and `size` the buffer's length replaces it all; `size` 0
/// inserts).
pub fn set_buffer(buffer: BufferType, start: usize, size: usize, data: &[u8]) -> Result<()> {
    check(unsafe { raw::proxy_set_buffer_bytes(buffer.raw(), start, size, data.as_ptr(), data.len()) })
}

// ------------------------------------------------------------------ metrics

/// `proxy_define_metric`: the id of the metric `name` (the same id for the
/// same name and kind).
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32> {
    let mut id = 0u32;
    check(unsafe { raw::proxy_define_metric(kind.raw(), name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// `proxy_increment_metric`: adds `offset` to a counter or gauge (a gauge
/// may go down).
pub fn increment_metric(id: u32, offset: i64) -> Result<()> {
    check(unsafe { raw::proxy_increment_metric(id, offset) })
}

/// `proxy_record_metric`: sets a gauge, or records a histogram sample.
pub fn record_metric(id: u32, value: u64) -> Result<()> {
    check(unsafe { raw::proxy_record_metric(id, value) })
}

/// `proxy_get_metric`: a counter's or gauge's value.
pub fn get_metric(id: u32) -> Result<u64> {
    let mut value = 0u64;
    check(unsafe { raw::proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

// ------------------------------------------------------------------ shared data

/// `proxy_get_shared_data`: the value under `key` and its CAS token, `None`
/// when the key has no value.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>> {
    let mut cas = 0u32;
    let value =
        read_buffer(|data, size| unsafe { raw::proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas) })?;
    Ok(value.map(|v| (v, cas)))
}

/// `proxy_set_shared_data`: with `cas` `Some`, only if the value is still
/// the one that token was read with (else `Err(Status::CasMismatch)`).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<()> {
    check(unsafe { raw::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0)) })
}

// ------------------------------------------------------------------ queues

/// `proxy_register_shared_queue`: the id of this VM's queue `name`
/// (created if new); its root context gets `on_queue_ready`.
pub fn register_shared_queue(name: &str) -> Result<u32> {
    let mut id = 0u32;
    check(unsafe { raw::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// `proxy_resolve_shared_queue`: the id of queue `name` of VM `vm_id`
/// (empty: this VM's), `None` when nobody registered it.
pub fn resolve_shared_queue(vm_id: &str, name: &str) -> Result<Option<u32>> {
    let mut id = 0u32;
    let status =
        unsafe { raw::proxy_resolve_shared_queue(vm_id.as_ptr(), vm_id.len(), name.as_ptr(), name.len(), &mut id) };
    Ok(found(status)?.then_some(id))
}

/// `proxy_enqueue_shared_queue`.
pub fn enqueue_shared_queue(id: u32, value: &[u8]) -> Result<()> {
    check(unsafe { raw::proxy_enqueue_shared_queue(id, value.as_ptr(), value.len()) })
}

/// `proxy_dequeue_shared_queue`: the next item, `None` when the queue is
/// empty (EMPTY); NOT_FOUND (no such queue) is an error here.
pub fn dequeue_shared_queue(id: u32) -> Result<Option<Vec<u8>>> {
    let mut buf = HostBuffer::new();
    let status = unsafe { raw::proxy_dequeue_shared_queue(id, &mut buf.data, &mut buf.size) };
    let bytes = buf.take();
    match check(status) {
        Ok(()) => Ok(Some(bytes)),
        Err(Error::Status(Status::Empty)) => Ok(None),
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------ HTTP calls

/// `proxy_http_call`: sends a request to cluster `upstream`; the root
/// context's `on_http_call_response` gets the returned token. `headers`
/// must include `:method`, `:path` and `:authority`.
pub fn dispatch_http_call<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    upstream: &str,
    headers: &[(K, V)],
    body: &[u8],
    trailers: &[(K, V)],
    timeout: Duration,
) -> Result<u32> {
    let headers = meshwasm_wire::pairs::encode(headers);
    let trailers = meshwasm_wire::pairs::encode(trailers);
    let timeout_ms = saturate_u32(timeout.as_millis());
    let mut token = 0u32;
    check(unsafe {
        raw::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// In `on_http_call_response`: the response's headers.
pub fn get_http_call_response_headers() -> Result<Pairs> {
    get_headers(MapType::HttpCallResponseHeaders)
}

/// In `on_http_call_response`: one response header.
pub fn get_http_call_response_header(name: &str) -> Result<Option<Vec<u8>>> {
    get_header(MapType::HttpCallResponseHeaders, name)
}

/// In `on_http_call_response`: the response's trailers.
pub fn get_http_call_response_trailers() -> Result<Pairs> {
    get_headers(MapType::HttpCallResponseTrailers)
}

/// In `on_http_call_response`: up to `max_size` bytes of the body from
/// `start` (`body_size` is an argument of the callback).
pub fn get_http_call_response_body(start: usize, max_size: usize) -> Result<Option<Vec<u8>>> {
    get_buffer(BufferType::HttpCallResponseBody, start, max_size)
}

// ------------------------------------------------------------------ timers and time

/// `proxy_set_tick_period_milliseconds`: `on_tick` every `period` (0 stops
/// it); finer than a millisecond is rounded down.
pub fn set_tick_period(period: Duration) -> Result<()> {
    check(unsafe { raw::proxy_set_tick_period_milliseconds(saturate_u32(period.as_millis())) })
}

/// `proxy_get_current_time_nanoseconds`: nanoseconds since the Unix epoch.
pub fn get_current_time_nanos() -> Result<u64> {
    let mut nanos = 0u64;
    check(unsafe { raw::proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

/// The proxy's wall-clock time.
pub fn get_current_time() -> Result<SystemTime> {
    Ok(UNIX_EPOCH + Duration::from_nanos(get_current_time_nanos()?))
}

// ------------------------------------------------------------------ streams

/// `proxy_send_local_response`: answers the request from the proxy
/// (`status_code`, `details` for the access log's response code details,
/// `grpc_status` for gRPC or `None`). The stream's hook should then return
/// Pause.
pub fn send_local_response<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    status_code: u32,
    details: &str,
    headers: &[(K, V)],
    body: &[u8],
    grpc_status: Option<i32>,
) -> Result<()> {
    let headers = meshwasm_wire::pairs::encode(headers);
    check(unsafe {
        raw::proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            // -1: no gRPC status (the ABI's "none").
            grpc_status.unwrap_or(-1),
        )
    })
}

/// `proxy_continue_stream`: resumes a paused request, response, or a
/// connection's direction.
pub fn continue_stream(stream: StreamType) -> Result<()> {
    check(unsafe { raw::proxy_continue_stream(stream.raw()) })
}

/// `proxy_close_stream`: resets the stream, or closes the connection.
pub fn close_stream(stream: StreamType) -> Result<()> {
    check(unsafe { raw::proxy_close_stream(stream.raw()) })
}

// ------------------------------------------------------------------ contexts

/// `proxy_set_effective_context`: later calls act for context `id` (a
/// stream a root context answers for, in a timer or callout callback).
pub fn set_effective_context(id: u32) -> Result<()> {
    check(unsafe { raw::proxy_set_effective_context(id) })
}

/// `proxy_done`: a root context that returned false from `on_done` is done.
pub fn done() -> Result<()> {
    check(unsafe { raw::proxy_done() })
}

#[cfg(test)]
mod tests;
