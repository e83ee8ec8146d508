//! The CLI's contract: exit 0 when a scenario ran and its expectations
//! passed, 1 when an expectation failed, 2 with a clear message on bad input
//! (bad arguments included), 3 when the environment fails (no Envoy).

mod common;

use common::host_sim_env;

fn host_sim(args: &[&str]) -> (i32, String, String) {
    host_sim_env(args, &[])
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
}

#[test]
fn usage_errors_exit_2_with_the_usage() {
    for (args, says) in [
        (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
        (&["run"][..], "<SCENARIO.json>"),
        (&["run", "--engine", "nginx", "s.json"][..], "possible values: host-sim, envoy"),
        (&["run", "--format", "yaml", "s.json"][..], "possible values: json, text"),
        (&["run", "--frobnicate", "s.json"][..], "unexpected argument '--frobnicate'"),
        (&["bench", "--requests", "many", "s.json"][..], "invalid value 'many' for '--requests <N>'"),
        (&["run", "a.json", "b.json"][..], "unexpected argument 'b.json'"),
    ] {
        let (code, _, stderr) = host_sim(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(says), "{args:?}: {stderr}");
    }
    // No command at all: the help, on stderr, as a usage error.
    let (code, _, stderr) = host_sim(&[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Commands:") && stderr.contains("Exit codes:"), "{stderr}");
}

#[test]
fn help_exits_0_and_lists_the_exit_codes() {
    let (code, stdout, _) = host_sim(&["--help"]);
    assert_eq!(code, 0);
    for line in ["run ", "prometheus ", "diff ", "bench ", "wasi-run ", "  3  the environment"] {
        assert!(stdout.contains(line), "{line:?} missing: {stdout}");
    }
    let (code, stdout, _) = host_sim(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--prometheus") && stdout.contains("Exit codes:"), "{stdout}");
}

#[test]
fn envoy_missing_exits_3() {
    let wasm = wasm_file("noenvoy", PASS_THROUGH);
    let path = scenario_file("noenvoy", serde_json::json!({"plugins": [{"wasm": wasm}], "streams": []}));
    let no_envoy = [("MESHWASM_ENVOY", "/nonexistent/envoy")];
    for command in ["run", "prometheus"] {
        let (code, _, stderr) = host_sim_env(&[command, "--engine", "envoy", path.to_str().unwrap()], &no_envoy);
        assert_eq!(code, 3, "{command}: {stderr}");
        assert!(stderr.contains("envoy engine: Envoy binary /nonexistent/envoy does not exist"), "{stderr}");
    }
    let (code, _, stderr) = host_sim_env(&["diff", path.to_str().unwrap()], &no_envoy);
    assert_eq!(code, 3, "{stderr}");
    // Bad input still wins over the environment: it is found first.
    let (code, _, stderr) = host_sim_env(&["run", "--engine", "envoy", "/nonexistent/s.json"], &no_envoy);
    assert_eq!(code, 2, "{stderr}");
}

/// Defines two series of one counter (tags in Istio's `name=.=value;.;`
/// form, extracted by the default stats_tags) and counts each request once.
const COUNTING: &str = r#"(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "reporter=.=destination;.;response_code=.=200;.;cli_requests_total")
  (data (i32.const 200) "reporter=.=destination;.;response_code=.=404;.;cli_requests_total")
  (global $top (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (local $p i32) (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get 0))) (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 65) (i32.const 0)))
    (drop (call $inc (i32.load (i32.const 0)) (i64.const 2)))
    (drop (call $define (i32.const 0) (i32.const 200) (i32.const 65) (i32.const 0)))
    (drop (call $inc (i32.load (i32.const 0)) (i64.const 1)))
    (i32.const 0)))"#;

#[test]
fn text_format_shows_metrics_as_a_table_and_the_prometheus_text_only_when_asked() {
    let wasm = wasm_file("count", COUNTING);
    let path = scenario_file(
        "count",
        serde_json::json!({
            "plugins": [{"wasm": wasm}],
            "streams": [{"name": "one", "request": {"headers": [[":method", "GET"], [":path", "/x"], [":authority", "a"]]}, "upstream": {"status": 204}}],
            "expect": [{"prometheus": "cli_requests_total{reporter=\"destination\",response_code=\"404\"} 1"}]
        }),
    );
    let (code, stdout, stderr) = host_sim(&["run", "--format", "text", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stream 0 \"one\": GET a/x -> 204"), "{stdout}");
    assert!(stdout.contains("expectations: 1 of 1 passed"), "{stdout}");
    // The family once, its shared label once, then only what differs.
    let table: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("cli_requests_total (counter, 2 series)"))
        .skip(1)
        .take(4)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        table,
        vec![vec!["reporter=\"destination\""], vec!["response_code", "value"], vec!["200", "2"], vec!["404", "1"]],
        "{stdout}"
    );
    assert!(!stdout.contains("# TYPE") && !stdout.contains("cli_requests_total{"), "{stdout}");

    let (code, stdout, _) = host_sim(&["run", "--format", "text", "--prometheus", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("# TYPE cli_requests_total counter\n"), "{stdout}");
    assert!(stdout.contains("cli_requests_total{reporter=\"destination\",response_code=\"200\"} 2\n"), "{stdout}");

    // --output writes the same text to a file.
    let out = path.with_file_name("summary.txt");
    let (code, stdout, _) =
        host_sim(&["run", "--format", "text", "--output", out.to_str().unwrap(), path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.is_empty());
    assert!(std::fs::read_to_string(&out).unwrap().contains("response_code  value"));
}

/// A WASI command: writes its arguments (NUL-separated) to stdout and exits
/// with their count.
const ECHO_ARGS: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 4096)))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (call $exit (i32.load (i32.const 0)))))"#;

#[test]
fn wasi_run_passes_every_argument_after_the_module_through() {
    let wasm = wasm_file("echo", ECHO_ARGS);
    let args = ["--help", "-q", "--test-threads", "1", "--", "plain", "--version"];
    let mut argv = vec!["wasi-run", wasm.as_str()];
    argv.extend(args);
    let (code, stdout, stderr) = host_sim(&argv);
    assert_eq!(code, 1 + args.len() as i32, "the module's exit code: {stderr}");
    let seen: Vec<&str> = stdout.trim_end_matches('\0').split('\0').collect();
    assert_eq!(seen[1..], args, "{stdout:?}");

    // Nothing before it: the help is host-sim's.
    let (code, stdout, _) = host_sim(&["wasi-run", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("Usage: host-sim wasi-run <MODULE.wasm> [ARGS]..."), "{stdout}");

    let (code, _, stderr) = host_sim(&["wasi-run", "/nonexistent/t.wasm"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read plugin /nonexistent/t.wasm"), "{stderr}");
}

#[test]
fn a_two_proxy_scenario_prints_both_proxies_and_refuses_what_it_does_not_model() {
    let wasm = wasm_file("two", PASS_THROUGH);
    let get = serde_json::json!({"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]},
        "upstream": {"status": 204}});
    let path = scenario_file(
        "two",
        serde_json::json!({
            "direction": "outbound",
            "plugins": [{"wasm": wasm, "name": "client-filter"}],
            "server_proxy": {"plugins": [{"wasm": wasm, "name": "server-filter"}]},
            "streams": [get],
            "expect": [{"pointer": "/streams/0/upstream_request/body", "equals": "", "server_proxy": true}]
        }),
    );
    let (code, stdout, stderr) = host_sim(&["run", "--format", "text", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (client, server) = stdout.split_once("=== server proxy ===").expect("a server proxy section");
    assert!(client.contains("plugin client-filter") && !client.contains("server-filter"), "{stdout}");
    assert!(server.contains("plugin server-filter") && server.contains("-> 204"), "{stdout}");

    let tcp = scenario_file(
        "two-tcp",
        serde_json::json!({"plugins": [{"wasm": wasm}], "server_proxy": {},
            "connections": [{"upstream_unreachable": true}]}),
    );
    let (code, _, stderr) = host_sim(&["run", tcp.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("`connections[0].upstream_unreachable`"), "{stderr}");
}
