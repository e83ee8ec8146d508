//! `matches` on RE2-like regexes (regex-lite), with a cache.

use super::*;

/// Cached compiled regexes (or their compile errors), by pattern. Literal
/// patterns are added when their expression is compiled; patterns only
/// known at run time are added while there is room.
const CACHE_CAPACITY: usize = 256;

/// A compiled regex and its size class: the smallest of [`SIZE_CLASSES`]
/// its program fits in, what a match is charged per byte of input.
type Compiled = Result<(Rc<regex_lite::Regex>, u64), String>;

thread_local! {
    static CACHE: RefCell<HashMap<String, Compiled>> = RefCell::new(HashMap::new());
}

/// The size limits a pattern is compiled under, smallest first (regex-lite
/// does not report a program's size, only whether it fits): a typical
/// pattern compiles once, the largest four times.
const SIZE_CLASSES: [usize; 4] = [512, 2048, 8192, MAX_REGEX_SIZE];

/// The largest compiled regex (regex-lite's size, in bytes) `matches`
/// accepts. Matching is linear in the input and also in this size: measured
/// natively on a 60,000-byte input with patterns that keep many states live,
/// ~33 µs per byte of size (`[a-z]{100}x`, 4,144 bytes: 80 ms;
/// `[a-z]{1000}x`, 40,144 bytes: 1.0 s; `(?:a{50}){50}x`, 80,144 bytes:
/// 2.6 s), so this bounds one match at about half a second there, and
/// [`super::MAX_MATCH_WORK`] all of an evaluation's matches together. Real
/// patterns fit (Istio's seed `^/shelves/[[:alnum:]]*/books/[[:alnum:]]*$`:
/// 880 bytes; a UUID path pattern with `[^/]{1,128}`: 13,600) and anchored
/// ones fail fast. Envoy's own CEL is stricter (RE2 program size 100).
pub const MAX_REGEX_SIZE: usize = 16 * 1024;

fn compile(pattern: &str) -> Compiled {
    let mut last = String::new();
    for class in SIZE_CLASSES {
        match regex_lite::RegexBuilder::new(pattern).size_limit(class).build() {
            Ok(re) => return Ok((Rc::new(re), class as u64)),
            Err(e) => {
                let why = e.to_string().replace('\n', " ");
                if !why.contains("size limit") {
                    return Err(format!("invalid regex '{pattern}': {why}"));
                }
                last = why;
            }
        }
    }
    Err(format!("invalid regex '{pattern}': {last} of {MAX_REGEX_SIZE} bytes (matching time grows with it)"))
}

/// The compiled regex for `pattern`, from the cache when it is there. A
/// compile at run time (`pin` false) is charged to the evaluation's regex
/// work, as matching 1 KiB with it would be.
pub(super) fn get(pattern: &str, pin: bool) -> Result<Compiled, ExecutionError> {
    CACHE.with(|cache| {
        if let Some(hit) = cache.borrow().get(pattern) {
            return Ok(hit.clone());
        }
        let compiled = compile(pattern);
        if !pin {
            let class = compiled.as_ref().map_or(MAX_REGEX_SIZE as u64, |(_, c)| *c);
            super::budget::charge_match(class * 1024)?;
        }
        let mut cache = cache.borrow_mut();
        if pin || cache.len() < CACHE_CAPACITY {
            cache.insert(pattern.to_string(), compiled.clone());
        }
        Ok(compiled)
    })
}

#[cfg(test)]
pub(super) fn cached(pattern: &str) -> bool {
    CACHE.with(|c| c.borrow().contains_key(pattern))
}

/// Empties this thread's cache: inside wasm every test runs on one thread,
/// so earlier tests may have filled it to capacity.
#[cfg(test)]
pub(super) fn clear_cache() {
    CACHE.with(|c| c.borrow_mut().clear());
}

/// Compiles (and caches) every literal `matches` pattern, so a bad one
/// is a configuration error.
pub(super) fn precompile(e: &IdedExpr) -> Result<(), String> {
    let mut result = Ok(());
    visit(e, &mut |call_args: &[&IdedExpr]| {
        if let Some(IdedExpr { expr: Expr::Literal(LiteralValue::String(p)), .. }) = call_args.last() {
            if let Ok(Err(err)) = get(p.inner(), true) {
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
    });
    result
}

/// Calls `f` with the arguments (target first) of every `matches` call.
fn visit(e: &IdedExpr, f: &mut dyn FnMut(&[&IdedExpr])) {
    if let Expr::Call(c) = &e.expr {
        if c.func_name == "matches" {
            let args: Vec<&IdedExpr> = c.target.as_deref().into_iter().chain(c.args.iter()).collect();
            if args.len() == 2 {
                f(&args);
            }
        }
    }
    for c in super::limits::children(e) {
        visit(c, f);
    }
}

fn matches(this: &CelString, re: &CelString) -> Result<CelBool, ExecutionError> {
    match get(re.inner(), false)? {
        Ok((compiled, class)) => {
            // Charged before matching: a match costs its input times the
            // program's size (MAX_REGEX_SIZE).
            super::budget::charge_match((this.inner().len() as u64).max(1).saturating_mul(class))?;
            Ok(CelBool::from(compiled.is_match(this.inner())))
        }
        Err(message) => Err(ExecutionError::FunctionError { function: "matches".into(), message }),
    }
}

/// Registers `matches(string, string)` and `string.matches(string)`.
pub(super) fn extension(env: &mut Env) -> Result<(), cel::DeclarationError> {
    cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches")?;
    cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>)?;
    Ok(())
}
