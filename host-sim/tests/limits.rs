//! A runaway or broken plugin cannot hang or crash a test: host-sim
//! interrupts a callback past its time limit, refuses modules Envoy would
//! refuse, and reports them as Envoy does.

use host_sim::Scenario;
use host_sim::{Proxy, VmLimits};
use std::time::{Duration, Instant};

fn module(name: &str, request_headers_body: &str) -> String {
    let wat = format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {request_headers_body}))"#
    );
    let path = std::env::temp_dir().join(format!("host-sim-limits-{}-{name}.wasm", std::process::id()));
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

fn scenario(wasm: &str, fail_open: bool) -> Scenario {
    Scenario::from_json(
        &serde_json::json!({
            "plugins": [{"name": "p", "wasm": wasm, "fail_open": fail_open}],
            "streams": [
                {"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}},
                {"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}}
            ]
        })
        .to_string(),
    )
    .unwrap()
}

#[test]
fn an_endless_loop_is_interrupted_and_fails_the_stream() {
    let s = scenario(&module("loop", "(loop $l (br $l)) (i32.const 0)"), false);
    let limits = VmLimits { callback_timeout: Duration::from_millis(200), ..Default::default() };
    let started = Instant::now();
    let mut proxy = Proxy::start(&s, limits).unwrap();
    let result = proxy.run_streams(&s);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let first = &result.streams[0];
    let failure = first.plugin_failure.as_ref().expect("reported");
    assert!(failure.message.starts_with("Function: proxy_on_request_headers failed:"), "{}", failure.message);
    assert!(failure.message.contains("time limit"), "{}", failure.message);
    assert_eq!(first.downstream_response.as_ref().unwrap().status, 503);
    assert_eq!(first.local_reply.as_ref().unwrap().details, "wasm_fail_stream");
    assert!(first.upstream_request.is_none());
    // The VM stays failed: the next stream is refused without calling it.
    let second = &result.streams[1];
    assert_eq!(second.downstream_response.as_ref().unwrap().status, 503);
}

#[test]
fn memory_growth_past_the_limit_fails_instead_of_exhausting_the_host() {
    // Asks for 2 GiB more memory; the limit (64 MiB) refuses, memory.grow
    // returns -1, and the module then traps on purpose.
    let s = scenario(
        &module(
            "grow",
            "(if (i32.eq (memory.grow (i32.const 32768)) (i32.const -1)) (then unreachable)) (i32.const 0)",
        ),
        false,
    );
    let limits = VmLimits { max_memory_bytes: 64 << 20, ..Default::default() };
    let mut proxy = Proxy::start(&s, limits).unwrap();
    let result = proxy.run_streams(&s);
    let failure = result.streams[0].plugin_failure.as_ref().expect("reported");
    assert!(failure.message.contains("unreachable"), "{}", failure.message);
}

#[test]
fn fail_open_passes_traffic_after_a_trap() {
    let s = scenario(&module("trap", "unreachable"), true);
    let mut proxy = Proxy::start(&s, VmLimits::default()).unwrap();
    let result = proxy.run_streams(&s);
    assert!(result.streams[0].plugin_failure.is_some());
    for stream in &result.streams {
        assert_eq!(stream.downstream_response.as_ref().unwrap().status, 200);
        assert!(stream.upstream_request.is_some());
    }
}

#[test]
fn modules_envoy_refuses_are_refused_with_envoys_words() {
    let no_abi = std::env::temp_dir().join(format!("host-sim-limits-{}-noabi.wasm", std::process::id()));
    std::fs::write(&no_abi, wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap()).unwrap();
    let s = scenario(no_abi.to_str().unwrap(), false);
    let result = host_sim::run(&s).unwrap();
    assert!(!result.plugins[0].configured);
    assert!(result.plugins[0].error.as_deref().unwrap().contains("Missing or unknown Proxy-Wasm ABI version"));
    assert!(result.streams.is_empty(), "Envoy serves nothing with a rejected plugin");

    let missing_import = std::env::temp_dir().join(format!("host-sim-limits-{}-import.wasm", std::process::id()));
    let wat = r#"(module (import "env" "proxy_no_such_call" (func)) (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1")) (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))"#;
    std::fs::write(&missing_import, wat::parse_str(wat).unwrap()).unwrap();
    let result = host_sim::run(&scenario(missing_import.to_str().unwrap(), false)).unwrap();
    let error = result.plugins[0].error.as_deref().unwrap();
    assert!(error.contains("Failed to load Wasm module due to a missing import: env.proxy_no_such_call"), "{error}");
}
