//! Host calls made through raw imports, for the statuses the Rust SDK turns
//! into panics (or cannot express: its `Status` enum has no 6 or 12). Each
//! probe makes one call with deliberately bad arguments (or in a phase where
//! the call is not allowed) and logs `status <probe>=<n>`.
//!
//! The imports are declared with the exact ABI 0.2.1 signatures; the SDK
//! declares some of the same imports with its own enum types, hence the
//! allowed lint.

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::cell::Cell;
use std::ptr::{null, null_mut};

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_size(map_type: u32, return_size: *mut usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_status(buffer_type: u32, return_buffer_size: *mut usize, return_flags: *mut u32) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_done() -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        message_data_data: *const u8,
        message_data_size: usize,
        timeout: u32,
        return_callout_id: *mut u32,
    ) -> u32;
    fn proxy_grpc_stream(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        return_stream_id: *mut u32,
    ) -> u32;
    fn proxy_grpc_send(token: u32, message_data: *const u8, message_size: usize, end_stream: u32) -> u32;
    fn proxy_grpc_cancel(token_id: u32) -> u32;
    fn proxy_grpc_close(token_id: u32) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_dequeue_shared_queue(queue_id: u32, return_value_data: *mut *mut u8, return_value_size: *mut usize)
        -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// An address far past the end of any plugin's linear memory.
const OOB: usize = 0xFFFF_FF00;
/// A metric id of each type that no define call ever returns.
const UNKNOWN_COUNTER_ID: u32 = 0x7FFF_FFF0;

thread_local! {
    static SEQ: Cell<u32> = const { Cell::new(0) };
}

/// Frees a buffer the host allocated for a result.
fn free(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

pub fn report(name: &str, status: u32) {
    hostcalls::log(LogLevel::Info, &format!("status {name}={status}")).unwrap();
}

fn get_header(map: u32, key: &str) -> u32 {
    let (mut p, mut n) = (null_mut(), 0);
    let s = unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut p, &mut n) };
    free(p, n);
    s
}

fn get_buffer(kind: u32) -> u32 {
    let (mut p, mut n) = (null_mut(), 0);
    let s = unsafe { proxy_get_buffer_bytes(kind, 0, usize::MAX >> 1, &mut p, &mut n) };
    free(p, n);
    s
}

fn get_property(path: &[u8]) -> u32 {
    let (mut p, mut n) = (null_mut(), 0);
    let s = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut p, &mut n) };
    free(p, n);
    s
}

fn define(kind: u32, name: &str) -> u32 {
    let mut id = 0;
    let s = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    assert_eq!(s, 0, "define_metric {name}");
    id
}

fn http_call(cluster: &str, headers: &[(&str, &str)], token: *mut u32) -> u32 {
    let h = meshwasm_wire::pairs::encode::<&str, &str>(headers);
    unsafe { proxy_http_call(cluster.as_ptr(), cluster.len(), h.as_ptr(), h.len(), null(), 0, null(), 0, 1000, token) }
}

fn shared_get(key: &str) -> (u32, Vec<u8>, u32) {
    let (mut p, mut n, mut cas) = (null_mut(), 0, 0);
    let s = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut p, &mut n, &mut cas) };
    (s, free(p, n), cas)
}

fn shared_set(key: &str, value: &str, cas: u32) -> u32 {
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

fn foreign(name: &str, args: &[u8]) -> u32 {
    let (mut p, mut n) = (null_mut(), 0);
    let s =
        unsafe { proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), &mut p, &mut n) };
    free(p, n);
    s
}

/// Status probes `statuses` runs: each answers the same in every stream
/// callback.
pub const STREAM_PROBES: &[&str] = &[
    "log_bad_level",
    "log_oob",
    "get_log_level_oob",
    "get_time_oob",
    "get_header_map_value_bad_map",
    "get_header_map_pairs_bad_map",
    "set_header_map_pairs_bad_map",
    "add_header_map_value_bad_map",
    "get_header_map_size_bad_map",
    "get_header_map_value_oob",
    "set_call_response_headers",
    "get_buffer_bad_type",
    "get_buffer_status_bad_type",
    "get_plugin_configuration",
    "get_call_response_body",
    "get_property_unknown",
    "get_property_oob",
    "define_metric_bad_type",
    "increment_unknown_metric",
    "record_unknown_metric",
    "get_unknown_metric",
    "increment_counter_zero",
    "increment_counter_negative",
    "increment_histogram",
    "get_histogram",
    "http_call_unknown_cluster",
    "grpc_call",
    "grpc_stream",
    "grpc_send_unknown",
    "grpc_cancel_unknown",
    "grpc_close_unknown",
    "resolve_unknown_queue",
    "enqueue_unknown_queue",
    "dequeue_unknown_queue",
    "dequeue_empty_queue",
    "get_shared_data_missing",
    "set_shared_data_stale_cas",
    "set_shared_data_absent_key_cas",
    "continue_stream_upstream",
    "continue_stream_bad_type",
    "close_stream_bad_type",
    "set_effective_context_unknown",
    "done",
    "foreign_unknown",
    "foreign_clear_route_cache",
];

/// Probes `statuses=<cluster>` adds: they need a cluster the host knows.
pub const CLUSTER_PROBES: &[&str] = &["http_call_missing_path", "http_call_oob_token"];

/// Probes run in the root context (on_configure) with `root_statuses`.
pub const ROOT_PROBES: &[&str] = &[
    "set_property",
    "get_request_header",
    "get_plugin_configuration",
    "get_call_response_body",
    "set_request_body",
    "send_local_response",
    "continue_stream_upstream",
];

/// Runs one probe; `arg` is a cluster name for the http_call probes. Returns
/// None for an unknown probe name.
pub fn probe(name: &str, arg: &str) -> Option<u32> {
    let oob_ret = OOB as *mut u32;
    let (mut p, mut n) = (null_mut::<u8>(), 0usize);
    let status = unsafe {
        match name {
            "log_bad_level" => proxy_log(9, b"x".as_ptr(), 1),
            "log_oob" => proxy_log(2, OOB as *const u8, 64),
            "get_log_level_oob" => proxy_get_log_level(oob_ret),
            "get_time_oob" => proxy_get_current_time_nanoseconds(OOB as *mut u64),
            "get_header_map_value_bad_map" => get_header(99, ":path"),
            "get_header_map_pairs_bad_map" => proxy_get_header_map_pairs(99, &mut p, &mut n),
            "set_header_map_pairs_bad_map" => {
                let e = meshwasm_wire::pairs::encode::<&str, &str>(&[]);
                proxy_set_header_map_pairs(99, e.as_ptr(), e.len())
            }
            "add_header_map_value_bad_map" => proxy_add_header_map_value(99, b"k".as_ptr(), 1, b"v".as_ptr(), 1),
            "get_header_map_size_bad_map" => proxy_get_header_map_size(99, &mut n),
            "get_header_map_value_oob" => proxy_get_header_map_value(0, OOB as *const u8, 5, &mut p, &mut n),
            // Phase-dependent: request headers are only there while the
            // filter holds them; response headers only on the response side.
            "get_request_header" => get_header(0, ":path"),
            "get_response_header" => get_header(2, ":status"),
            "get_missing_request_header" => get_header(0, "x-probe-absent"),
            "set_call_response_headers" => {
                let e = meshwasm_wire::pairs::encode::<&str, &str>(&[("a", "b")]);
                proxy_set_header_map_pairs(6, e.as_ptr(), e.len())
            }
            "get_buffer_bad_type" => get_buffer(99),
            "get_buffer_status_bad_type" => {
                let mut flags = 0;
                proxy_get_buffer_status(99, &mut n, &mut flags)
            }
            "get_plugin_configuration" => get_buffer(7),
            "get_call_response_body" => get_buffer(4),
            "set_request_body" => proxy_set_buffer_bytes(0, 0, 0, b"".as_ptr(), 0),
            "get_property_unknown" => get_property(b"probe_no_such_property"),
            "get_property_oob" => proxy_get_property(OOB as *const u8, 8, &mut p, &mut n),
            "set_property" => proxy_set_property(b"probe_ro".as_ptr(), 8, b"v".as_ptr(), 1),
            "send_local_response" => {
                let h = meshwasm_wire::pairs::encode::<&str, &str>(&[]);
                proxy_send_local_response(418, b"probe".as_ptr(), 5, b"".as_ptr(), 0, h.as_ptr(), h.len(), -1)
            }
            "define_metric_bad_type" => {
                let mut id = 0;
                proxy_define_metric(9, b"probe_bad".as_ptr(), 9, &mut id)
            }
            "increment_unknown_metric" => proxy_increment_metric(UNKNOWN_COUNTER_ID, 1),
            "record_unknown_metric" => proxy_record_metric(UNKNOWN_COUNTER_ID, 1),
            "get_unknown_metric" => {
                let mut v = 0u64;
                proxy_get_metric(UNKNOWN_COUNTER_ID, &mut v)
            }
            "increment_counter_zero" => proxy_increment_metric(define(0, "probe_status_counter"), 0),
            "increment_counter_negative" => proxy_increment_metric(define(0, "probe_status_counter"), -1),
            "increment_histogram" => proxy_increment_metric(define(2, "probe_status_histogram"), 1),
            "get_histogram" => {
                let mut v = 0u64;
                proxy_get_metric(define(2, "probe_status_histogram"), &mut v)
            }
            "http_call_unknown_cluster" => {
                let mut token = 0;
                http_call(
                    "probe-no-such-cluster",
                    &[(":method", "GET"), (":path", "/"), (":authority", "x")],
                    &mut token,
                )
            }
            "http_call_missing_path" => {
                let mut token = 0;
                http_call(arg, &[(":method", "GET"), (":authority", "x")], &mut token)
            }
            "http_call_oob_token" => {
                http_call(arg, &[(":method", "GET"), (":path", "/"), (":authority", "x")], oob_ret)
            }
            "grpc_call" => {
                let mut token = 0;
                let (c, s, m) = ("probe-no-such-cluster", "probe.Service", "Call");
                proxy_grpc_call(
                    c.as_ptr(),
                    c.len(),
                    s.as_ptr(),
                    s.len(),
                    m.as_ptr(),
                    m.len(),
                    null(),
                    0,
                    null(),
                    0,
                    1000,
                    &mut token,
                )
            }
            "grpc_stream" => {
                let mut token = 0;
                let (c, s, m) = ("probe-no-such-cluster", "probe.Service", "Stream");
                proxy_grpc_stream(c.as_ptr(), c.len(), s.as_ptr(), s.len(), m.as_ptr(), m.len(), null(), 0, &mut token)
            }
            // 4006: a gRPC-stream token (low bits 2) nobody was given.
            "grpc_send_unknown" => proxy_grpc_send(4006, b"x".as_ptr(), 1, 0),
            "grpc_cancel_unknown" => proxy_grpc_cancel(4006),
            "grpc_close_unknown" => proxy_grpc_close(4006),
            "get_status" => {
                let mut code = 0;
                proxy_get_status(&mut code, &mut p, &mut n)
            }
            "resolve_unknown_queue" => {
                let mut id = 0;
                proxy_resolve_shared_queue(null(), 0, b"probe-no-such-queue".as_ptr(), 19, &mut id)
            }
            "enqueue_unknown_queue" => proxy_enqueue_shared_queue(0x7FFF_0000, b"x".as_ptr(), 1),
            "dequeue_unknown_queue" => proxy_dequeue_shared_queue(0x7FFF_0000, &mut p, &mut n),
            "dequeue_empty_queue" => {
                let mut id = 0;
                let name = "probe-empty";
                assert_eq!(proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id), 0);
                proxy_dequeue_shared_queue(id, &mut p, &mut n)
            }
            "get_shared_data_missing" => shared_get("probe-never-set").0,
            "set_shared_data_stale_cas" => {
                assert_eq!(shared_set("probe-stale", "a", 0), 0);
                let (s, _, cas) = shared_get("probe-stale");
                assert_eq!(s, 0);
                assert_eq!(shared_set("probe-stale", "b", cas), 0, "fresh cas");
                shared_set("probe-stale", "c", cas)
            }
            "set_shared_data_absent_key_cas" => {
                // A key no one has written yet: every call makes a new one.
                let seq = SEQ.with(|s| {
                    s.set(s.get() + 1);
                    s.get()
                });
                let mut now = 0u64;
                proxy_get_current_time_nanoseconds(&mut now);
                let key = format!("probe-absent-{now}-{seq}-{:p}", &seq);
                shared_set(&key, "v", 12345)
            }
            "continue_stream_upstream" => proxy_continue_stream(3),
            "continue_stream_bad_type" => proxy_continue_stream(9),
            "close_stream_bad_type" => proxy_close_stream(9),
            "set_effective_context_unknown" => proxy_set_effective_context(999_999),
            "done" => proxy_done(),
            "foreign_unknown" => foreign("probe_no_such_function", b""),
            "foreign_clear_route_cache" => foreign("clear_route_cache", b""),
            // DeclarePropertyArguments{name: "probe_ro", readonly: true}.
            "declare_property" => foreign("declare_property", b"\x0a\x08probe_ro\x10\x01"),
            _ => return None,
        }
    };
    free(p, n);
    Some(status)
}

/// `proxy_get_header_map_size`, which the SDK never calls.
pub fn header_map_size(map: u32) -> Result<usize, u32> {
    let mut n = 0;
    match unsafe { proxy_get_header_map_size(map, &mut n) } {
        0 => Ok(n),
        s => Err(s),
    }
}

/// `proxy_get_buffer_status`, which the SDK never calls.
pub fn buffer_status(kind: u32) -> Result<(usize, u32), u32> {
    let (mut n, mut flags) = (0, 0);
    match unsafe { proxy_get_buffer_status(kind, &mut n, &mut flags) } {
        0 => Ok((n, flags)),
        s => Err(s),
    }
}
