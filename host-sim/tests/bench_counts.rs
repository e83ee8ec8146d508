//! `host-sim bench`'s deterministic counts (wasm instructions as wasmtime
//! fuel, host calls) and the persistent module cache, through the CLI.

use serde_json::Value;
use std::path::{Path, PathBuf};
mod common;

use common::host_sim_env as host_sim;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("host-sim-bench-counts-{}-{name}", std::process::id()))
}

/// The common exports of the two test plugins; `$headers` is the body of
/// `proxy_on_request_headers`.
fn plugin(headers: &str) -> String {
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (global $top (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (local $p i32) (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get 0))) (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
    {headers}
    (i32.const 0)))"#
    )
}

const IDLE: &str = "";
/// 100 loop iterations and two host calls.
const BUSY: &str = r#"
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
    (drop (call $log (i32.const 2) (i32.const 16) (i32.const 5)))
    (drop (call $log (i32.const 2) (i32.const 16) (i32.const 5)))"#;

/// As many loop iterations as a random byte says: the count is the same in
/// every run only if `random_get` is seeded on metered VMs (plugins' hash
/// maps are seeded from it).
const RANDOM: &str = r#"
    (drop (call $random (i32.const 64) (i32.const 1)))
    (local.set $i (i32.const 0))
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.load8_u (i32.const 64)))))"#;

fn scenario(name: &str, headers: &str) -> PathBuf {
    let dir = temp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("plugin.wasm");
    std::fs::write(&wasm, wat::parse_str(plugin(headers)).unwrap()).unwrap();
    let body = serde_json::json!({
        "plugins": [{"wasm": wasm}],
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}, "upstream": {"status": 200}}]
    });
    let path = dir.join("scenario.json");
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

fn bench(path: &Path, cache: &str) -> Value {
    let (code, out, err) =
        host_sim(&["bench", "--requests", "50", path.to_str().unwrap()], &[("MESHWASM_MODULE_CACHE", cache)]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn hook<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["counts"]["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn the_counts_are_the_same_in_every_run() {
    let path = scenario("same", &format!("{BUSY}{RANDOM}"));
    let cache = temp("same-cache");
    let cache = cache.to_str().unwrap();
    let (a, b) = (bench(&path, cache), bench(&path, "off"));
    assert!(a["counts"]["per_request"]["instructions"].as_f64().unwrap() > 0.0, "{a}");
    assert_eq!(a["counts"], b["counts"], "the counts differ between two runs");
    // A cached module counts the same as a freshly compiled one.
    assert_eq!(bench(&path, cache)["counts"], a["counts"]);
    let _ = std::fs::remove_dir_all(cache);
}

/// Our real plugins (when built): metadata_exchange in front of stats,
/// whose CEL and hash maps make the work depend on the hasher's seed.
#[test]
fn the_counts_of_real_plugins_are_the_same_in_every_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("examples/metadata_exchange.json");
    for wasm in ["metadata_exchange.wasm", "stats.wasm"] {
        if !root.join("target/wasm32-wasip1/release").join(wasm).is_file() {
            eprintln!("skipped: {wasm} is not built (cargo build --target wasm32-wasip1 --release)");
            return;
        }
    }
    let cache = temp("real-cache");
    let cache = cache.to_str().unwrap();
    let (a, b) = (bench(&example, cache), bench(&example, cache));
    assert!(a["counts"]["per_request"]["host_calls"].as_f64().unwrap() > 10.0, "{a}");
    assert_eq!(a["counts"], b["counts"], "the counts differ between two runs");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn more_work_counts_more_instructions_and_host_calls() {
    let (idle, busy) = (bench(&scenario("idle", IDLE), "off"), bench(&scenario("busy", BUSY), "off"));
    let (i, b) = (hook(&idle, "proxy_on_request_headers"), hook(&busy, "proxy_on_request_headers"));
    assert_eq!((i["calls_per_request"].as_f64(), b["calls_per_request"].as_f64()), (Some(1.0), Some(1.0)));
    assert_eq!((i["host_calls_per_request"].as_f64(), b["host_calls_per_request"].as_f64()), (Some(0.0), Some(2.0)));
    let (ii, bi) = (i["instructions_per_call"].as_f64().unwrap(), b["instructions_per_call"].as_f64().unwrap());
    assert!(bi >= ii + 500.0, "100 iterations of 6 operators: {ii} vs {bi}");
    let per_request = |r: &Value, k: &str| r["counts"]["per_request"][k].as_f64().unwrap();
    assert!(per_request(&busy, "instructions") > per_request(&idle, "instructions"));
    assert_eq!(per_request(&busy, "host_calls") - per_request(&idle, "host_calls"), 2.0);
    // The root hooks are counted apart, at startup (once per VM: the main
    // thread's and each worker's).
    let startup = busy["counts"]["startup"].as_array().unwrap();
    assert!(startup.iter().any(|h| h["hook"] == "proxy_on_configure" && h["calls"].as_u64() >= Some(1)), "{busy}");
    assert!(busy["counts"]["hooks"].as_array().unwrap().iter().all(|h| h["hook"] != "proxy_on_configure"));
}

#[test]
fn the_text_format_has_a_row_per_callback() {
    let path = scenario("text", BUSY);
    let (code, out, err) = host_sim(
        &["bench", "--requests", "20", "--format", "text", path.to_str().unwrap()],
        &[("MESHWASM_MODULE_CACHE", "off")],
    );
    assert_eq!(code, 0, "{err}");
    for needle in ["µs/request", "instructions", "host calls", "proxy_on_request_headers", "startup (once)"] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    let (code, out, _) = host_sim(
        &["bench", "--requests", "20", "--no-counts", path.to_str().unwrap()],
        &[("MESHWASM_MODULE_CACHE", "off")],
    );
    assert_eq!(code, 0);
    assert!(!out.contains("\"counts\""), "{out}");
}

#[test]
fn run_fills_the_module_cache_unless_it_is_off() {
    let path = scenario("cache", IDLE);
    let entries = |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let cache = temp("cache-dir");
    let _ = std::fs::remove_dir_all(&cache);
    let run = |extra: &[&str], cache: &str| {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        let (code, out, err) = host_sim(&args, &[("MESHWASM_MODULE_CACHE", cache)]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let off = run(&["--no-module-cache"], cache.to_str().unwrap());
    assert_eq!(entries(&cache), 0, "--no-module-cache wrote to the cache");
    let cold = run(&[], cache.to_str().unwrap());
    assert_eq!(entries(&cache), 1);
    let warm = run(&[], cache.to_str().unwrap());
    assert_eq!(entries(&cache), 1);
    assert_eq!(cold["streams"], warm["streams"]);
    assert_eq!(off["streams"], warm["streams"]);
    // A damaged entry is recompiled and replaced, never an error.
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let good = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &good[..good.len() / 3]).unwrap();
    assert_eq!(run(&[], cache.to_str().unwrap())["streams"], warm["streams"]);
    assert_eq!(std::fs::read(&entry).unwrap(), good);
    let _ = std::fs::remove_dir_all(&cache);
}
