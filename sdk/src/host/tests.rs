//! Tests of the host-call layer: status mapping, serialization, decoding,
//! and the answers of the empty host outside wasm.

use super::*;

#[test]
fn statuses_map_to_errors() {
    assert_eq!(check(0), Ok(()));
    assert_eq!(check(1), Err(Error::Status(Status::NotFound)));
    assert_eq!(check(8), Err(Error::Status(Status::CasMismatch)));
    assert_eq!(check(5), Err(Error::Raw(5)), "5 is not an ABI status");
    assert_eq!(check(u32::MAX), Err(Error::Raw(u32::MAX)));
    assert_eq!(Error::from_raw(12).raw(), 12);
    assert_eq!(Error::Raw(99).raw(), 99);
    assert_eq!(Error::Raw(99).status(), None);
    assert!(Error::from_raw(1).is_not_found());
    assert!(!Error::from_raw(2).is_not_found());
    assert_eq!(found(0), Ok(true));
    assert_eq!(found(1), Ok(false));
    assert_eq!(found(2), Err(Error::Status(Status::BadArgument)));
    assert_eq!(Error::from(Status::Empty), Error::Status(Status::Empty));
    assert_eq!(Error::Raw(42).to_string(), "host status 42 (not an ABI status)");
    assert_eq!(Error::from_raw(1).to_string(), "host status NotFound (1)");
}

#[test]
fn paths_and_sizes_serialize() {
    assert_eq!(serialize_path(&["request", "url_path"]), b"request\0url_path");
    assert_eq!(serialize_path(&["plugin_name"]), b"plugin_name");
    assert_eq!(serialize_path(&[]), b"");
    assert_eq!(saturate_u32(5), 5);
    assert_eq!(saturate_u32(u128::from(u64::MAX)), u32::MAX);
}

#[test]
fn host_answers_decode_or_fail_without_panic() {
    let enc = meshwasm_wire::pairs::encode(&[(&b":path"[..], &b"/"[..]), (b"x-bin", b"\xff")]);
    let pairs = decode_pairs(&enc);
    assert_eq!(pairs, Ok(vec![(b":path".to_vec(), b"/".to_vec()), (b"x-bin".to_vec(), b"\xff".to_vec())]));
    assert_eq!(decode_pairs(&enc[..enc.len() - 1]), Err(UNDECODABLE));
    assert_eq!(lossy(b"a\xffb".to_vec()), "a\u{fffd}b");
    assert_eq!(lossy(b"ok".to_vec()), "ok");
    assert_eq!(utf8(b"ok".to_vec()), Ok("ok".to_string()));
    assert_eq!(utf8(b"\xc3\x28".to_vec()), Err(Error::Status(Status::SerializationFailure)));
    // A buffer the host did not fill is empty, not a null-pointer Vec.
    assert_eq!(HostBuffer::new().take(), Vec::<u8>::new());
}

/// Outside wasm there is no proxy: reads find nothing, actions are
/// NOT_FOUND, logging goes nowhere.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn no_proxy_outside_wasm() {
    let nf: Result<()> = Err(Error::Status(Status::NotFound));
    let not_found = Error::Status(Status::NotFound);
    assert_eq!(log(LogLevel::Info, "x"), Ok(()));
    assert_eq!(get_log_level(), Err(not_found));
    assert_eq!(get_property(&["request", "method"]), Ok(None));
    assert_eq!(set_property(&["x"], b"1"), nf);
    // No configuration (NOT_FOUND) is an empty one, not a failure.
    assert_eq!(plugin_configuration_or_log("p"), Some(Vec::new()));
    assert_eq!(get_header(MapType::RequestHeaders, ":path"), Ok(None));
    assert_eq!(get_header_lossy(MapType::RequestHeaders, ":path"), Ok(None));
    assert_eq!(get_header_utf8(MapType::ResponseTrailers, "grpc-status"), Ok(None));
    assert_eq!(get_headers(MapType::RequestHeaders), Ok(Vec::new()));
    assert_eq!(get_headers_lossy(MapType::ResponseHeaders), Ok(Vec::new()));
    assert_eq!(set_headers::<&str, &str>(MapType::RequestHeaders, &[]), nf);
    assert_eq!(add_header(MapType::RequestHeaders, "a", b"b"), nf);
    assert_eq!(replace_header(MapType::ResponseHeaders, "a", b"b"), nf);
    assert_eq!(remove_header(MapType::RequestTrailers, "a"), nf);
    assert_eq!(get_buffer(BufferType::HttpRequestBody, 0, 10), Ok(None));
    assert_eq!(get_plugin_configuration(), Ok(None));
    assert_eq!(get_vm_configuration(), Ok(None));
    assert_eq!(set_buffer(BufferType::DownstreamData, 0, 0, b"x"), nf);
    assert_eq!(define_metric(MetricType::Counter, "c"), Err(not_found));
    assert_eq!(increment_metric(1, 1), nf);
    assert_eq!(record_metric(1, 1), nf);
    assert_eq!(get_metric(1), Err(not_found));
    assert_eq!(get_shared_data("k"), Ok(None));
    assert_eq!(set_shared_data("k", b"v", None), nf);
    assert_eq!(register_shared_queue("q"), Err(not_found));
    assert_eq!(resolve_shared_queue("", "q"), Ok(None));
    assert_eq!(enqueue_shared_queue(1, b"x"), nf);
    assert_eq!(dequeue_shared_queue(1), Err(not_found));
    let h: &[(&str, &str)] = &[(":method", "GET")];
    assert_eq!(dispatch_http_call("c", h, b"", &[], Duration::from_secs(1)), Err(not_found));
    assert_eq!(get_http_call_response_headers(), Ok(Vec::new()));
    assert_eq!(get_http_call_response_header("a"), Ok(None));
    assert_eq!(get_http_call_response_trailers(), Ok(Vec::new()));
    assert_eq!(get_http_call_response_body(0, 10), Ok(None));
    assert_eq!(set_tick_period(Duration::from_millis(10)), nf);
    assert_eq!(get_current_time_nanos(), Err(not_found));
    assert_eq!(get_current_time(), Err(not_found));
    assert_eq!(send_local_response::<&str, &str>(403, "denied", &[], b"no", None), nf);
    assert_eq!(continue_stream(StreamType::Request), nf);
    assert_eq!(close_stream(StreamType::Downstream), nf);
    assert_eq!(set_effective_context(3), nf);
    assert_eq!(done(), nf);
}

/// Inside wasm (host-sim's command runner links the proxy-wasm host):
/// calls outside any context answer with a status, never a trap.
#[cfg(target_arch = "wasm32")]
#[test]
fn host_calls_outside_a_context_do_not_trap() {
    let _ = log(LogLevel::Debug, "host-call layer test");
    // In wasm under `host-sim wasi-run` there is no plugin: no property exists.
    assert!(matches!(get_property(&["no", "such", "property"]), Ok(None)));
    let _ = get_header(MapType::RequestHeaders, ":path");
    let _ = get_headers(MapType::ResponseTrailers);
    let _ = get_buffer(BufferType::HttpRequestBody, 0, 10);
    let _ = get_current_time();
    let _ = dequeue_shared_queue(12345);
}
