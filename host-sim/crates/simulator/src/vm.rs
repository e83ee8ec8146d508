//! One plugin VM: a wasmtime instance with its host state, started the way
//! Envoy starts it, and a trap-safe way to call its exports.

use super::host::VmHost;
use crate::abi::AbiVersion;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use wasmtime::{Caller, Engine, Func, Instance, Linker, Module, Store, TypedFunc, Val};

/// Epoch ticks come every `EPOCH_TICK`; a callback may run this many before
/// it is interrupted, so a runaway plugin cannot hang a test.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Clone, Copy, Debug)]
pub struct VmLimits {
    /// Wall-clock budget of one callback.
    pub callback_timeout: std::time::Duration,
    /// Largest linear memory a VM may grow to.
    pub max_memory_bytes: usize,
    /// Count what each callback costs: wasm instructions (wasmtime fuel)
    /// and host calls, per export, in [`Vm::meter`]. Uses a separate engine
    /// ([`metered_engine`]): fuel changes the compiled code and slows it, so
    /// only `host-sim bench` turns it on.
    pub metered: bool,
}

impl Default for VmLimits {
    fn default() -> Self {
        Self { callback_timeout: std::time::Duration::from_secs(5), max_memory_bytes: 1 << 30, metered: false }
    }
}

/// The engine every VM of this process shares, so compiled modules can be
/// reused across runs; a background thread advances its epoch.
pub fn shared_engine() -> wasmtime::Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    engine_once(&ENGINE, false)
}

/// Like [`shared_engine`], with fuel consumption on: every VM of it counts
/// the wasm operators it executes ([`VmLimits::metered`]).
pub fn metered_engine() -> wasmtime::Result<Engine> {
    engine_once(&METERED_ENGINE, true)
}

static METERED_ENGINE: OnceLock<Engine> = OnceLock::new();

fn is_metered(engine: &Engine) -> bool {
    METERED_ENGINE.get().is_some_and(|m| Engine::same(m, engine))
}

/// The engine for VMs with these limits.
pub fn engine_for(limits: &VmLimits) -> wasmtime::Result<Engine> {
    if limits.metered {
        metered_engine()
    } else {
        shared_engine()
    }
}

fn engine_once(cell: &OnceLock<Engine>, fuel: bool) -> wasmtime::Result<Engine> {
    if let Some(e) = cell.get() {
        return Ok(e.clone());
    }
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    // `MESHWASM_PERFMAP=1`: write /tmp/perf-<pid>.map, so `perf record`
    // and `perf report` name the plugins' functions (docs/host-sim.md,
    // "Profiling a plugin"). Off by default: it costs a file write per
    // compiled function.
    if std::env::var_os("MESHWASM_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    let engine = cell.get_or_init(|| {
        let ticking = engine.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticking.increment_epoch();
        });
        engine
    });
    Ok(engine.clone())
}

/// `--no-module-cache`: set once by the CLI, before any module is loaded.
static CACHE_DISABLED: AtomicBool = AtomicBool::new(false);

/// Turns the persistent module cache off for this process (the CLI's
/// `--no-module-cache`; `MESHWASM_MODULE_CACHE=off` does the same).
pub fn disable_module_cache() {
    CACHE_DISABLED.store(true, Ordering::Relaxed);
}

/// Where compiled modules are kept between processes, or `None` when the
/// cache is off: `$MESHWASM_MODULE_CACHE` (`off`, `0` or empty: no cache),
/// else `$XDG_CACHE_HOME/meshwasm/modules`, else `~/.cache/meshwasm/modules`.
pub fn module_cache_dir() -> Option<PathBuf> {
    if CACHE_DISABLED.load(Ordering::Relaxed) {
        return None;
    }
    cache_dir_from(
        std::env::var_os("MESHWASM_MODULE_CACHE"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn cache_dir_from(
    setting: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(s) = setting {
        let off = s.is_empty() || s == "off" || s == "0" || s == "false" || s == "no";
        return if off { None } else { Some(PathBuf::from(s)) };
    }
    if let Some(x) = xdg.filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("meshwasm").join("modules"));
    }
    home.filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache").join("meshwasm").join("modules"))
}

/// Feeds `Hash` implementations into SHA-256, so the engine fingerprint is
/// stable across processes (std's `DefaultHasher` promises no such thing).
struct Sha256Hasher(ring::digest::Context);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // never used: the digest is taken from the context
    }
}

/// The key of a compiled module: SHA-256 over a format tag, this crate's
/// version, the engine's compatibility fingerprint (wasmtime's
/// `precompile_compatibility_hash`: target, Cranelift flags, tunables such
/// as fuel and epochs, wasm features, and wasmtime's own version) and the
/// module's bytes. Hex, usable as a file name.
fn module_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut h = Sha256Hasher(ring::digest::Context::new(&ring::digest::SHA256));
    h.write(b"meshwasm-module-cache-v1\0");
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    h.write(b"\0");
    engine.precompile_compatibility_hash().hash(&mut h);
    h.write(&(bytes.len() as u64).to_le_bytes());
    h.write(bytes);
    h.0.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles `bytes`, or loads them compiled from `cache_dir` when an entry
/// for this module and engine is there. A missing, corrupt, truncated or
/// incompatible entry is recompiled and replaced; a cache that cannot be
/// written is skipped. Only compiling the module itself can fail.
pub(crate) fn compile_cached(engine: &Engine, bytes: &[u8], cache_dir: Option<&Path>) -> wasmtime::Result<Module> {
    let Some(dir) = cache_dir else { return Module::new(engine, bytes) };
    let key = module_key(engine, bytes);
    let file = dir.join(format!("{key}.cwasm"));
    if file.is_file() {
        // SAFETY: `deserialize_file` trusts the file to be wasmtime's own
        // serialization of a module, unchanged while the module lives.
        // Entries are only ever written by `store_entry` below, from
        // `Engine::precompile_module` output, under a name derived from the
        // module's bytes and this engine's compatibility fingerprint; they
        // are written to a temporary file and renamed into place, never
        // modified in place, so a mapped entry never changes under us (a
        // replacement is a new inode). wasmtime itself checks the header:
        // an artifact of another wasmtime version or engine configuration,
        // or a file that is not an artifact or is cut short, is an `Err`,
        // which we treat as a miss. What it cannot detect is a valid-looking
        // artifact tampered with by someone who can write the cache
        // directory, which is the user's own (as with any build cache).
        match unsafe { Module::deserialize_file(engine, &file) } {
            Ok(m) => return Ok(m),
            Err(_) => { /* stale or damaged: recompile and overwrite */ }
        }
    }
    let compiled = engine.precompile_module(bytes)?;
    // SAFETY: the bytes were produced just now by this engine.
    let module = unsafe { Module::deserialize(engine, &compiled) }.or_else(|_| Module::new(engine, bytes))?;
    store_entry(dir, &file, &compiled);
    Ok(module)
}

/// Writes a cache entry atomically: a unique temporary file in the same
/// directory, then a rename, so parallel processes never see a partial
/// entry. Errors are ignored (the cache is an optimisation).
fn store_entry(dir: &Path, file: &Path, compiled: &[u8]) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".tmp-{}-{}-{nanos}.cwasm", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let written = std::fs::File::create_new(&tmp).and_then(|mut f| {
        f.write_all(compiled)?;
        f.sync_data()
    });
    if written.is_err() || std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Compiles a module once per process and file version, and through the
/// persistent cache ([`module_cache_dir`]) once per machine: compiling a
/// large plugin takes seconds, and test suites start hundreds of proxies.
pub fn load_module(engine: &Engine, path: &Path) -> anyhow::Result<Module> {
    // Keyed by path, size, modification time and engine: a rebuilt plugin
    // is a new entry, and the metered engine has its own.
    type Key = (PathBuf, u64, Option<SystemTime>, bool);
    static CACHE: OnceLock<Mutex<HashMap<Key, Module>>> = OnceLock::new();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read plugin {}: {e}", path.display()))?;
    let metered = shared_engine().map(|e| !Engine::same(&e, engine)).unwrap_or(true);
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok(), metered);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if Engine::same(m.engine(), engine) {
            return Ok(m.clone());
        }
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read plugin {}: {e}", path.display()))?;
    let module = compile_cached(engine, &bytes, module_cache_dir().as_deref())
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

/// The most parameters (or results) an export may have to be called: the
/// proxy-wasm callbacks have at most 5 (`proxy_on_http_call_response`).
const MAX_EXPORT_VALUES: usize = 8;

/// An export and what calling it needs: how many parameters and results,
/// and which parameters are i64 (the rest are i32).
#[derive(Clone)]
struct Export {
    func: Func,
    params: usize,
    results: usize,
    i64_params: u8,
    /// The same function typed, for the proxy-wasm callbacks' own shape
    /// (i32 parameters, no result or one i32): a typed call skips the
    /// per-call type check `Func::call` makes (about a fifth of host-sim's
    /// time in a `noop` request, per its profile).
    typed: Option<Typed>,
}

/// An export typed by its shape: up to 5 i32 parameters, then no result
/// (`V`) or one i32 (`I`).
#[derive(Clone)]
enum Typed {
    V0(TypedFunc<(), ()>),
    V1(TypedFunc<i32, ()>),
    V2(TypedFunc<(i32, i32), ()>),
    V3(TypedFunc<(i32, i32, i32), ()>),
    I1(TypedFunc<i32, i32>),
    I2(TypedFunc<(i32, i32), i32>),
    I3(TypedFunc<(i32, i32, i32), i32>),
    I4(TypedFunc<(i32, i32, i32, i32), i32>),
    I5(TypedFunc<(i32, i32, i32, i32, i32), i32>),
}

impl Typed {
    fn of(func: Func, store: &Store<VmHost>) -> Option<Typed> {
        Some(match (func.ty(store).params().len(), func.ty(store).results().len()) {
            (0, 0) => Typed::V0(func.typed(store).ok()?),
            (1, 0) => Typed::V1(func.typed(store).ok()?),
            (2, 0) => Typed::V2(func.typed(store).ok()?),
            (3, 0) => Typed::V3(func.typed(store).ok()?),
            (1, 1) => Typed::I1(func.typed(store).ok()?),
            (2, 1) => Typed::I2(func.typed(store).ok()?),
            (3, 1) => Typed::I3(func.typed(store).ok()?),
            (4, 1) => Typed::I4(func.typed(store).ok()?),
            (5, 1) => Typed::I5(func.typed(store).ok()?),
            _ => return None,
        })
    }

    /// Calls with `a` (missing arguments are 0); the result, if any.
    fn call(&self, store: &mut Store<VmHost>, a: &[i32]) -> wasmtime::Result<Option<i32>> {
        let arg = |i: usize| a.get(i).copied().unwrap_or(0);
        Ok(match self {
            Typed::V0(f) => f.call(store, ()).map(|()| None)?,
            Typed::V1(f) => f.call(store, arg(0)).map(|()| None)?,
            Typed::V2(f) => f.call(store, (arg(0), arg(1))).map(|()| None)?,
            Typed::V3(f) => f.call(store, (arg(0), arg(1), arg(2))).map(|()| None)?,
            Typed::I1(f) => Some(f.call(store, arg(0))?),
            Typed::I2(f) => Some(f.call(store, (arg(0), arg(1)))?),
            Typed::I3(f) => Some(f.call(store, (arg(0), arg(1), arg(2)))?),
            Typed::I4(f) => Some(f.call(store, (arg(0), arg(1), arg(2), arg(3)))?),
            Typed::I5(f) => Some(f.call(store, (arg(0), arg(1), arg(2), arg(3), arg(4)))?),
        })
    }
}

impl Export {
    /// None for a signature the host cannot call (too many values).
    fn of(func: Func, store: &Store<VmHost>) -> Option<Export> {
        let ty = func.ty(store);
        let (params, results) = (ty.params().len(), ty.results().len());
        if params > MAX_EXPORT_VALUES || results > MAX_EXPORT_VALUES {
            return None;
        }
        let i64_params = ty
            .params()
            .enumerate()
            .filter(|(_, t)| matches!(t, wasmtime::ValType::I64))
            .fold(0u8, |m, (i, _)| m | 1 << i);
        Some(Export { func, params, results, i64_params, typed: Typed::of(func, store) })
    }
}

pub struct Vm {
    pub store: Store<VmHost>,
    pub instance: Instance,
    /// Set once the VM trapped: Envoy never calls a failed VM again.
    pub failed: Option<String>,
    /// What each export cost so far, when the VM is metered.
    pub meter: Option<Meter>,
    limits: VmLimits,
    /// Exports looked up so far, with their signatures: reading a
    /// function's type on every call cost about a third of a `noop`
    /// request.
    exports: HashMap<&'static str, Option<Export>>,
}

/// The cost of the calls into one export: deterministic counts, the same
/// in every run of the same scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCost {
    /// Calls of the export.
    pub calls: u64,
    /// Fuel consumed: wasmtime charges about one unit per wasm operator
    /// executed (a few operators such as `nop` and `drop` are free), the
    /// plugin's allocator called back by the host included.
    pub instructions: u64,
    /// Host functions the plugin called (proxy-wasm and WASI imports).
    pub host_calls: u64,
}

impl HookCost {
    pub fn add(&mut self, other: &HookCost) {
        self.calls += other.calls;
        self.instructions += other.instructions;
        self.host_calls += other.host_calls;
    }
}

/// A metered VM's counters ([`VmLimits::metered`]).
pub struct Meter {
    /// Incremented by the store's call hook on every wasm-to-host call.
    host_calls: Arc<AtomicU64>,
    /// Per export, in the order of first call.
    pub hooks: Vec<(&'static str, HookCost)>,
}

impl Meter {
    /// Forgets what was counted so far (after a warm-up).
    pub fn reset(&mut self) {
        self.hooks.clear();
    }
}

/// Fuel a metered store starts with and is topped up to: far more than any
/// callback may use in its time limit, so it never runs out.
const FUEL: u64 = 1 << 62;

/// Builds the linker with every host function for this ABI version.
pub fn linker(engine: &Engine, abi: AbiVersion) -> wasmtime::Result<Linker<VmHost>> {
    let mut linker = Linker::new(engine);
    super::host::add_to_linker(&mut linker, abi)?;
    super::wasi::add_to_linker(&mut linker)?;
    if is_metered(engine) {
        add_seeded_random(&mut linker)?;
    }
    Ok(linker)
}

/// On metered VMs, WASI `random_get` returns a fixed pseudo-random sequence
/// (one per linker, i.e. per plugin group of a proxy) instead of the OS's
/// randomness: Rust's `HashMap` seeds its hasher from it, and a different
/// seed per run changes the work a plugin does (probe lengths, resizes), so
/// the counts would differ from run to run.
fn add_seeded_random(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let state = Arc::new(AtomicU64::new(0x6d65_7368_7761_736d));
    linker.allow_shadowing(true);
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        let state = state.clone();
        linker.func_wrap(module, "random_get", move |mut c: Caller<'_, VmHost>, buf: i32, len: i32| -> i32 {
            let len = len as u32 as usize;
            if len > 65536 {
                return 28; // EINVAL, as the unmetered random_get
            }
            let mut bytes = Vec::with_capacity(len + 8);
            while bytes.len() < len {
                // splitmix64
                let mut z = state.fetch_add(GOLDEN, Ordering::Relaxed).wrapping_add(GOLDEN);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
            }
            bytes.truncate(len);
            match super::host::write_bytes(&mut c, buf, &bytes) {
                Ok(()) => 0,
                Err(_) => 21, // EFAULT
            }
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
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
        let meter = if limits.metered {
            store.set_fuel(FUEL).map_err(|e| format!("cannot meter the VM: {e}"))?;
            let host_calls = Arc::new(AtomicU64::new(0));
            let counter = host_calls.clone();
            store.call_hook(move |_, hook| {
                if let wasmtime::CallHook::CallingHost = hook {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            Some(Meter { host_calls, hooks: Vec::new() })
        } else {
            None
        };
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
        let mut vm = Vm { store, instance, failed: None, meter, limits, exports: HashMap::new() };
        vm.store.data_mut().starting = true;
        let started = if vm.has_export("_initialize") {
            match vm.call("_initialize", &[]) {
                CallOutcome::Trapped(e) => Err(e),
                _ if vm.has_export("main") => match vm.call("main", &[0, 0]) {
                    CallOutcome::Trapped(e) => Err(e),
                    _ => Ok(()),
                },
                _ => Ok(()),
            }
        } else if vm.has_export("_start") {
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

    /// Looks an export up once, with its signature.
    fn load_export(&mut self, name: &'static str) {
        if !self.exports.contains_key(name) {
            let e = self.instance.get_func(&mut self.store, name).and_then(|func| Export::of(func, &self.store));
            self.exports.insert(name, e);
        }
    }

    /// Whether the module exports `name` with a signature the host can call.
    fn has_export(&mut self, name: &'static str) -> bool {
        self.load_export(name);
        matches!(self.exports.get(name), Some(Some(_)))
    }

    /// Calls an export with i32 arguments (the proxy-wasm callbacks take no
    /// other kind). A trap marks the VM failed.
    pub fn call(&mut self, name: &'static str, args: &[i32]) -> CallOutcome {
        self.load_export(name);
        // Borrowed, not cloned: cloning a typed function clones its type.
        let Some(Some(export)) = self.exports.get(name) else { return CallOutcome::Missing };
        self.store.set_epoch_deadline(deadline_ticks(self.limits));
        let before = self.meter.as_ref().map(|m| self.counters(m));
        let called = match &export.typed {
            Some(typed) => typed.call(&mut self.store, args).map(|r| r.map(i64::from)),
            None => Self::call_untyped(&mut self.store, export, args),
        };
        if let (Some(before), Some(m)) = (before, self.meter.as_ref()) {
            let after = self.counters(m);
            let cost = HookCost {
                calls: 1,
                instructions: before.0.saturating_sub(after.0),
                host_calls: after.1.saturating_sub(before.1),
            };
            if after.0 < FUEL / 2 {
                let _ = self.store.set_fuel(FUEL);
            }
            if let Some(m) = self.meter.as_mut() {
                match m.hooks.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => c.add(&cost),
                    None => m.hooks.push((name, cost)),
                }
            }
        }
        match called {
            Ok(result) => CallOutcome::Returned(result),
            Err(e) => {
                let msg = describe_trap(name, &e);
                self.failed = Some(msg.clone());
                CallOutcome::Trapped(msg)
            }
        }
    }
}

impl Vm {
    /// Calls an export of any other shape through `Func::call`: its first
    /// result, if any.
    fn call_untyped(store: &mut Store<VmHost>, export: &Export, args: &[i32]) -> wasmtime::Result<Option<i64>> {
        let mut params = [Val::I32(0); MAX_EXPORT_VALUES];
        for (i, p) in params.iter_mut().enumerate().take(export.params) {
            let a = args.get(i).copied().unwrap_or(0);
            *p = if export.i64_params & (1 << i) != 0 { Val::I64(a as i64) } else { Val::I32(a) };
        }
        let mut results = [Val::I32(0); MAX_EXPORT_VALUES];
        let results = &mut results[..export.results];
        export.func.call(store, &params[..export.params], results)?;
        Ok(results.first().and_then(|v| v.i32().map(i64::from).or_else(|| v.i64())))
    }

    /// (fuel left, host calls so far) of a metered VM.
    fn counters(&self, meter: &Meter) -> (u64, u64) {
        (self.store.get_fuel().unwrap_or(0), meter.host_calls.load(Ordering::Relaxed))
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

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshwasm-module-cache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn engine(fuel: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(fuel);
        Engine::new(&config).unwrap()
    }

    fn add(engine: &Engine, module: &Module) -> i32 {
        let mut store = Store::new(engine, ());
        let _ = store.set_fuel(1_000); // an error without fuel: nothing to set

        let instance = Instance::new(&mut store, module, &[]).unwrap();
        let f = instance.get_typed_func::<(i32, i32), i32>(&mut store, "add").unwrap();
        f.call(&mut store, (2, 3)).unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_second_compile_loads_the_cached_module() {
        let dir = temp_dir("hit");
        let engine = engine(false);
        let bytes = wat::parse_str(WAT).unwrap();
        let first = compile_cached(&engine, &bytes, Some(&dir)).unwrap();
        assert_eq!(add(&engine, &first), 5);
        let files = entries(&dir);
        assert_eq!(files.len(), 1, "one entry, no temporary file left: {files:?}");
        let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
        let second = compile_cached(&engine, &bytes, Some(&dir)).unwrap();
        assert_eq!(add(&engine, &second), 5);
        assert_eq!(entries(&dir), files);
        assert_eq!(std::fs::metadata(&files[0]).unwrap().modified().unwrap(), written, "a hit does not rewrite");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_truncated_or_incompatible_entries_are_replaced() {
        let dir = temp_dir("corrupt");
        let engine = engine(false);
        let bytes = wat::parse_str(WAT).unwrap();
        compile_cached(&engine, &bytes, Some(&dir)).unwrap();
        let file = entries(&dir).remove(0);
        let good = std::fs::read(&file).unwrap();
        let fueled = engine_with_fuel_artifact(&bytes);
        for bad in [b"not a module".to_vec(), good[..good.len() / 2].to_vec(), Vec::new(), fueled] {
            std::fs::write(&file, &bad).unwrap();
            let m = compile_cached(&engine, &bytes, Some(&dir)).unwrap();
            assert_eq!(add(&engine, &m), 5);
            assert_eq!(std::fs::read(&file).unwrap(), good, "the bad entry was overwritten");
            assert_eq!(entries(&dir).len(), 1);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A valid artifact, but of an engine with other settings (fuel on).
    fn engine_with_fuel_artifact(bytes: &[u8]) -> Vec<u8> {
        engine(true).precompile_module(bytes).unwrap()
    }

    #[test]
    fn engine_settings_and_module_bytes_are_part_of_the_key() {
        let bytes = wat::parse_str(WAT).unwrap();
        let (plain, fuel) = (engine(false), engine(true));
        assert_eq!(module_key(&plain, &bytes), module_key(&engine(false), &bytes));
        assert_ne!(module_key(&plain, &bytes), module_key(&fuel, &bytes));
        let other = wat::parse_str(WAT.replace("i32.add", "i32.sub")).unwrap();
        assert_ne!(module_key(&plain, &bytes), module_key(&plain, &other));
        let dir = temp_dir("engines");
        let a = compile_cached(&plain, &bytes, Some(&dir)).unwrap();
        let b = compile_cached(&fuel, &bytes, Some(&dir)).unwrap();
        assert_eq!((add(&plain, &a), add(&fuel, &b)), (5, 5));
        assert_eq!(entries(&dir).len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_disabled_cache_writes_nothing() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        for off in ["off", "0", ""] {
            assert_eq!(cache_dir_from(os(off), os("/xdg"), os("/home/u")), None);
        }
        assert_eq!(cache_dir_from(os("/c"), os("/xdg"), None), Some(PathBuf::from("/c")));
        assert_eq!(cache_dir_from(None, os("/xdg"), os("/h")), Some(PathBuf::from("/xdg/meshwasm/modules")));
        assert_eq!(cache_dir_from(None, None, os("/h")), Some(PathBuf::from("/h/.cache/meshwasm/modules")));
        assert_eq!(cache_dir_from(None, None, None), None);
        let dir = temp_dir("off");
        std::fs::create_dir_all(&dir).unwrap();
        let engine = engine(false);
        let m = compile_cached(&engine, &wat::parse_str(WAT).unwrap(), None).unwrap();
        assert_eq!(add(&engine, &m), 5);
        assert!(entries(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_cache_is_skipped() {
        let dir = temp_dir("unwritable");
        std::fs::write(&dir, b"a file, not a directory").unwrap();
        let engine = engine(false);
        let m = compile_cached(&engine, &wat::parse_str(WAT).unwrap(), Some(&dir.join("modules"))).unwrap();
        assert_eq!(add(&engine, &m), 5);
        let _ = std::fs::remove_file(&dir);
    }
}
