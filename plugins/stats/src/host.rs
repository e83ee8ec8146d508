//! Host calls that never panic. The proxy-wasm crate panics (trapping the
//! VM) on statuses it does not expect and on header values that are not
//! UTF-8; a stats plugin must survive any header or property value, so these
//! wrappers call the ABI directly and turn every failure into `None`.

use proxy_wasm::types::{MapType, MetricType};
use std::ptr::null_mut;

const OK: u32 = 0;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    #[link_name = "proxy_get_property"]
    fn raw_get_property(path: *const u8, path_len: usize, ret: *mut *mut u8, ret_len: *mut usize) -> u32;
    #[link_name = "proxy_get_header_map_value"]
    fn raw_get_header(map: u32, key: *const u8, key_len: usize, ret: *mut *mut u8, ret_len: *mut usize) -> u32;
    #[link_name = "proxy_define_metric"]
    fn raw_define_metric(kind: u32, name: *const u8, name_len: usize, ret_id: *mut u32) -> u32;
    #[link_name = "proxy_increment_metric"]
    fn raw_increment_metric(id: u32, offset: i64) -> u32;
    #[link_name = "proxy_record_metric"]
    fn raw_record_metric(id: u32, value: u64) -> u32;
}

/// Takes ownership of a host-allocated buffer (allocated through the SDK's
/// `proxy_on_memory_allocate`, i.e. the global allocator).
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(ptr, len, len)
    }
}

/// A property's raw bytes; None if missing or on any error.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    let (mut ptr, mut len) = (null_mut(), 0usize);
    let status = unsafe { raw_get_property(joined.as_ptr(), joined.len(), &mut ptr, &mut len) };
    let data = unsafe { take(ptr, len) };
    (status == OK).then_some(data)
}

pub fn property_string(path: &[&str]) -> Option<String> {
    property(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An 8-byte little-endian integer property.
pub fn property_i64(path: &[&str]) -> Option<i64> {
    meshwasm_sdk::property::decode_i64(&property(path)?)
}

/// A header value's raw bytes; None if missing or not readable now.
pub fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    let (mut ptr, mut len) = (null_mut(), 0usize);
    let status = unsafe { raw_get_header(map as u32, name.as_ptr(), name.len(), &mut ptr, &mut len) };
    let data = unsafe { take(ptr, len) };
    (status == OK).then_some(data)
}

pub fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    let mut id = 0u32;
    let status = unsafe { raw_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32, by: u64) {
    let by = i64::try_from(by).unwrap_or(i64::MAX);
    unsafe {
        raw_increment_metric(id, by);
    }
}

pub fn record_metric(id: u32, value: u64) {
    unsafe {
        raw_record_metric(id, value);
    }
}
