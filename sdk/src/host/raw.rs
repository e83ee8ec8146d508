//! The proxy-wasm ABI 0.2.1 imports (module `env`), declared once for the
//! whole SDK. Every argument and result is a plain integer or pointer:
//! unlike the proxy-wasm crate, which declares the result as its `Status`
//! enum (undefined behaviour for a number the enum lacks), an unexpected
//! status here is just a number for [`super::Error::from_raw`].
//!
//! Outside wasm the same functions exist and answer as a host with nothing
//! would: NOT_FOUND for everything, and OK for `proxy_log` (a message with
//! nowhere to go is not an error). They never write through their pointers.

/// Declares each import for wasm and a stub with the given native answer.
macro_rules! imports {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $native:expr; )*) => {
        #[cfg(target_arch = "wasm32")]
        // The proxy-wasm crate declares the same imports with its own enum
        // types; these are ABI-identical (u32 in wasm).
        #[allow(clashing_extern_declarations)]
        #[link(wasm_import_module = "env")]
        extern "C" {
            $( $(#[$doc])* pub fn $name($($arg: $ty),*) -> u32; )*
        }

        #[cfg(not(target_arch = "wasm32"))]
        mod native {
            use super::{NONE, OK};
            $(
                $(#[$doc])*
                #[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
                pub unsafe fn $name($($arg: $ty),*) -> u32 {
                    $( let _ = $arg; )*
                    $native
                }
            )*
        }
        #[cfg(not(target_arch = "wasm32"))]
        pub use native::*;
    };
}

/// `NOT_FOUND`: what the native stubs answer.
#[cfg(not(target_arch = "wasm32"))]
const NONE: u32 = 1;
/// `OK`.
#[cfg(not(target_arch = "wasm32"))]
const OK: u32 = 0;

imports! {
    fn proxy_log(level: u32, message: *const u8, message_size: usize) = OK;
    fn proxy_get_log_level(return_level: *mut u32) = NONE;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) = NONE;
    fn proxy_set_tick_period_milliseconds(period: u32) = NONE;
    fn proxy_get_property(path: *const u8, path_size: usize, return_data: *mut *mut u8, return_size: *mut usize) = NONE;
    fn proxy_set_property(path: *const u8, path_size: usize, data: *const u8, size: usize) = NONE;
    fn proxy_get_header_map_pairs(map: u32, return_data: *mut *mut u8, return_size: *mut usize) = NONE;
    fn proxy_set_header_map_pairs(map: u32, data: *const u8, size: usize) = NONE;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) = NONE;
    fn proxy_add_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) = NONE;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) = NONE;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) = NONE;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) = NONE;
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, size: usize, data: *const u8, data_size: usize) = NONE;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, return_id: *mut u32) = NONE;
    fn proxy_increment_metric(id: u32, offset: i64) = NONE;
    fn proxy_record_metric(id: u32, value: u64) = NONE;
    fn proxy_get_metric(id: u32, return_value: *mut u64) = NONE;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) = NONE;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) = NONE;
    fn proxy_register_shared_queue(name: *const u8, name_size: usize, return_id: *mut u32) = NONE;
    fn proxy_resolve_shared_queue(
        vm_id: *const u8,
        vm_id_size: usize,
        name: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) = NONE;
    fn proxy_enqueue_shared_queue(id: u32, value: *const u8, value_size: usize) = NONE;
    fn proxy_dequeue_shared_queue(id: u32, return_data: *mut *mut u8, return_size: *mut usize) = NONE;
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) = NONE;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) = NONE;
    fn proxy_continue_stream(stream: u32) = NONE;
    fn proxy_close_stream(stream: u32) = NONE;
    fn proxy_set_effective_context(context_id: u32) = NONE;
    fn proxy_done() = NONE;
}
