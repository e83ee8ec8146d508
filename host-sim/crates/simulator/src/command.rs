//! Command mode: runs a WASI command module (`_start`), such as a test binary
//! built by `cargo test --target wasm32-wasip1`, with the proxy-wasm and WASI
//! host functions linked, the terminal as stdout/stderr and real clocks.

use super::host::VmHost;
use super::state::ProxyState;
use super::wasi::Exit;
use super::SimFacts;
use std::cell::RefCell;
use std::rc::Rc;

/// Runs `_start` and returns the process exit code (101 on a trap, as a
/// panicking native test binary would).
pub fn run_command(wasm: &std::path::Path, args: Vec<String>) -> anyhow::Result<i32> {
    let engine = super::vm::shared_engine()?;
    let module = super::vm::load_module(&engine, wasm)?;
    let abi = super::vm::abi_version(&module).unwrap_or(crate::abi::AbiVersion::V0_2_1);
    let mut linker = super::vm::linker(&engine, abi)?;
    // Test binaries may import WASI calls Envoy lacks; they trap if called.
    linker.define_unknown_imports_as_traps(&module)?;
    let facts = Rc::new(SimFacts {
        node: Default::default(),
        node_proto: Vec::new(),
        direction: Default::default(),
        clusters: Vec::new(),
        upstream_cluster: String::new(),
        route_name: String::new(),
        upstream_host_metadata: Default::default(),
        upstream_cluster_metadata: Default::default(),
        upstream_tls: None,
    });
    let mut host = VmHost::new(
        Rc::new(RefCell::new(ProxyState::default())),
        facts,
        0,
        Vec::new(),
        std::env::vars().filter(|(k, _)| k.starts_with("RUST_")).collect(),
    );
    host.args = args;
    host.passthrough_stdio = true;
    let mut store = wasmtime::Store::new(&engine, host);
    // Tests may run long: no epoch deadline in command mode.
    store.set_epoch_deadline(1 << 40);
    let instance = linker.instantiate(&mut store, &module)?;
    store.data_mut().memory = instance.get_memory(&mut store, "memory");
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(e) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return Ok(*code);
            }
            eprintln!("{}", super::vm::describe_trap("_start", &e));
            Ok(101)
        }
    }
}
