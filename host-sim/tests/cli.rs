//! The CLI's contract: exit 0 when a scenario ran and its expectations
//! passed, 1 when an expectation failed, 2 with a clear message on bad input.

use std::process::Command;

fn host_sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host-sim")).args(args).output().expect("run host-sim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scenario_file(name: &str, body: serde_json::Value) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("host-sim-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scenario.json");
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

/// A minimal proxy-wasm module in WAT: passes every request through.
const PASS_THROUGH: &str = r#"(module
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (local $p i32) (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get 0))) (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#;

fn wasm_file(name: &str, wat: &str) -> String {
    let path = std::env::temp_dir().join(format!("host-sim-cli-{}-{name}.wasm", std::process::id()));
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_scenario_that_runs_and_passes_exits_0() {
    let wasm = wasm_file("ok", PASS_THROUGH);
    let path = scenario_file(
        "ok",
        serde_json::json!({
            "plugins": [{"wasm": wasm}],
            "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}, "upstream": {"status": 204}}],
            "expect": [{"pointer": "/streams/0/downstream_response/status", "equals": 204}]
        }),
    );
    let (code, stdout, _) = host_sim(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["expectations"][0]["passed"], true);
}

#[test]
fn a_failed_expectation_exits_1_and_shows_what_was_found() {
    let wasm = wasm_file("fail", PASS_THROUGH);
    let path = scenario_file(
        "fail",
        serde_json::json!({
            "plugins": [{"wasm": wasm}],
            "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}, "upstream": {"status": 204}}],
            "expect": [{"pointer": "/streams/0/downstream_response/status", "equals": 200}]
        }),
    );
    let (code, stdout, _) = host_sim(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["expectations"][0]["passed"], false);
    assert_eq!(result["expectations"][0]["actual"], 204);
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let typo =
        scenario_file("typo", serde_json::json!({"plugins": [{"wasm": "x.wasm", "rootid": "x"}], "streams": []}));
    let (code, _, stderr) = host_sim(&["run", typo.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("plugins[0]") && stderr.contains("rootid"), "{stderr}");

    let (code, _, stderr) = host_sim(&["run", "/nonexistent/scenario.json"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read scenario /nonexistent/scenario.json"), "{stderr}");

    let missing_wasm =
        scenario_file("nowasm", serde_json::json!({"plugins": [{"wasm": "/nonexistent/p.wasm"}], "streams": []}));
    let (code, _, stderr) = host_sim(&["run", missing_wasm.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read plugin /nonexistent/p.wasm"), "{stderr}");

    let not_json = scenario_file("notjson", serde_json::json!("just a string"));
    let (code, _, stderr) = host_sim(&["run", not_json.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");

    let (code, _, stderr) = host_sim(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown command"), "{stderr}");
}
