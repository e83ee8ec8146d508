//! One plugin VM: a wasmtime instance with its host state, started the way
//! Envoy starts it, and a trap-safe way to call its exports.

use super::host::VmHost;
use crate::abi::AbiVersion;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;
use wasmtime::{Engine, Func, Instance, Linker, Module, Store, Val};

/// Epoch ticks come every `EPOCH_TICK`; a callback may run this many before
/// it is interrupted, so a runaway plugin cannot hang a test.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Clone, Copy, Debug)]
pub struct VmLimits {
    /// Wall-clock budget of one callback.
    pub callback_timeout: std::time::Duration,
    /// Largest linear memory a VM may grow to.
    pub max_memory_bytes: usize,
}

impl Default for VmLimits {
    fn default() -> Self {
        Self { callback_timeout: std::time::Duration::from_secs(5), max_memory_bytes: 1 << 30 }
    }
}

/// The engine every VM of this process shares, so compiled modules can be
/// reused across runs; a background thread advances its epoch.
pub fn shared_engine() -> wasmtime::Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(e) = ENGINE.get() {
        return Ok(e.clone());
    }
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let engine = ENGINE.get_or_init(|| {
        let ticking = engine.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticking.increment_epoch();
        });
        engine
    });
    Ok(engine.clone())
}

/// Compiles a module once per process and file version: compiling a large
/// plugin takes seconds, and test suites start hundreds of proxies.
pub fn load_module(engine: &Engine, path: &Path) -> anyhow::Result<Module> {
    // Keyed by path, size and modification time: a rebuilt plugin is a new entry.
    type Key = (PathBuf, u64, Option<SystemTime>);
    static CACHE: OnceLock<Mutex<HashMap<Key, Module>>> = OnceLock::new();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read plugin {}: {e}", path.display()))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(m.clone());
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read plugin {}: {e}", path.display()))?;
    let module = Module::new(engine, &bytes)
        .map_err(|e| anyhow::anyhow!("Failed to load Wasm code {}: {e:#}", path.display()))?;
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, module.clone());
    Ok(module)
}

/// How a call into the plugin ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// The export returned (its first result, if any).
    Returned(Option<i64>),
    /// The module does not export this callback.
    Missing,
    /// The plugin trapped; the message is what Envoy would log.
    Trapped(String),
}

pub struct Vm {
    pub store: Store<VmHost>,
    pub instance: Instance,
    /// Set once the VM trapped: Envoy never calls a failed VM again.
    pub failed: Option<String>,
    limits: VmLimits,
    exports: HashMap<&'static str, Option<Func>>,
}

/// Builds the linker with every host function for this ABI version.
pub fn linker(engine: &Engine, abi: AbiVersion) -> wasmtime::Result<Linker<VmHost>> {
    let mut linker = Linker::new(engine);
    super::host::add_to_linker(&mut linker, abi)?;
    super::wasi::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The ABI version a module declares, or Envoy's error when it declares none.
pub fn abi_version(module: &Module) -> Result<AbiVersion, String> {
    AbiVersion::from_exports(module.exports().map(|e| e.name()))
        .ok_or_else(|| "Missing or unknown Proxy-Wasm ABI version".to_string())
}

impl Vm {
    /// Instantiates the module and runs its start functions (`_initialize`,
    /// then `main`, or `_start`), as Envoy does before any proxy callback.
    pub fn instantiate(
        engine: &Engine,
        module: &Module,
        linker: &Linker<VmHost>,
        mut host: VmHost,
        limits: VmLimits,
    ) -> Result<Vm, String> {
        host.limits = wasmtime::StoreLimitsBuilder::new().memory_size(limits.max_memory_bytes).build();
        let mut store = Store::new(engine, host);
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(deadline_ticks(limits));
        for import in module.imports() {
            if linker.get(&mut store, import.module(), import.name()).is_err() {
                return Err(format!(
                    "Failed to load Wasm module due to a missing import: {}.{}",
                    import.module(),
                    import.name()
                ));
            }
        }
        let instance =
            linker.instantiate(&mut store, module).map_err(|e| format!("Failed to load Wasm code: {e:#}"))?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate"))
            .ok();
        if alloc.is_none() {
            return Err("Wasm module is missing malloc function.".into());
        }
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        let mut vm = Vm { store, instance, failed: None, limits, exports: HashMap::new() };
        vm.store.data_mut().starting = true;
        let started = if vm.export("_initialize").is_some() {
            match vm.call("_initialize", &[]) {
                CallOutcome::Trapped(e) => Err(e),
                _ => match vm.export("main") {
                    Some(_) => match vm.call("main", &[0, 0]) {
                        CallOutcome::Trapped(e) => Err(e),
                        _ => Ok(()),
                    },
                    None => Ok(()),
                },
            }
        } else if vm.export("_start").is_some() {
            match vm.call("_start", &[]) {
                CallOutcome::Trapped(e) => Err(e),
                _ => Ok(()),
            }
        } else {
            Ok(())
        };
        vm.store.data_mut().starting = false;
        started.map_err(|e| format!("Failed to initialize Wasm code: {e}"))?;
        Ok(vm)
    }

    fn export(&mut self, name: &'static str) -> Option<Func> {
        if let Some(f) = self.exports.get(name) {
            return *f;
        }
        let f = self.instance.get_func(&mut self.store, name);
        self.exports.insert(name, f);
        f
    }

    /// Calls an export with i32 arguments (the proxy-wasm callbacks take no
    /// other kind). A trap marks the VM failed.
    pub fn call(&mut self, name: &'static str, args: &[i32]) -> CallOutcome {
        let Some(func) = self.export(name) else { return CallOutcome::Missing };
        let ty = func.ty(&self.store);
        let params: Vec<Val> = ty
            .params()
            .zip(args.iter().copied().chain(std::iter::repeat(0)))
            .map(|(t, a)| match t {
                wasmtime::ValType::I64 => Val::I64(a as i64),
                _ => Val::I32(a),
            })
            .collect();
        let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
        self.store.set_epoch_deadline(deadline_ticks(self.limits));
        match func.call(&mut self.store, &params, &mut results) {
            Ok(()) => CallOutcome::Returned(results.first().and_then(|v| v.i32().map(i64::from).or_else(|| v.i64()))),
            Err(e) => {
                let msg = describe_trap(name, &e);
                self.failed = Some(msg.clone());
                CallOutcome::Trapped(msg)
            }
        }
    }
}

fn deadline_ticks(limits: VmLimits) -> u64 {
    (limits.callback_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Envoy's report of a failed callback: `Function: <export> failed: <why>`,
/// then the in-VM backtrace.
pub fn describe_trap(export: &str, e: &wasmtime::Error) -> String {
    let why = match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "wasm trap: interrupted: the callback ran past its time limit".to_string(),
        // wasmtime's Display already reads "wasm trap: ...".
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    let mut msg = format!("Function: {export} failed: {why}");
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = bt
            .frames()
            .iter()
            .enumerate()
            .map(|(i, f)| format!("  {i}: {}", f.func_name().unwrap_or("<unknown>")))
            .collect();
        if !frames.is_empty() {
            msg.push_str("\nProxy-Wasm plugin in-VM backtrace:\n");
            msg.push_str(&frames.join("\n"));
        }
    }
    msg
}
