//! `matches` on RE2-like regexes (regex-lite), with a cache.

use super::*;

/// Cached compiled regexes (or their compile errors), by pattern. Literal
/// patterns are added when their expression is compiled; patterns only
/// known at run time are added while there is room.
const CACHE_CAPACITY: usize = 256;

type Compiled = Result<Rc<regex_lite::Regex>, String>;

thread_local! {
    static CACHE: RefCell<HashMap<String, Compiled>> = RefCell::new(HashMap::new());
}

/// The largest compiled regex (regex-lite's size, in bytes) `matches`
/// accepts. Matching is linear in the input and also in this size: measured
/// natively on a 60,000-byte input with patterns that keep many states live,
/// ~33 µs per byte of size (`[a-z]{100}x`, 4,144 bytes: 80 ms;
/// `[a-z]{1000}x`, 40,144 bytes: 1.0 s; `(?:a{50}){50}x`, 80,144 bytes:
/// 2.6 s), so this bounds one match at about half a second there. Real
/// patterns fit (Istio's seed `^/shelves/[[:alnum:]]*/books/[[:alnum:]]*$`:
/// 880 bytes; a UUID path pattern with `[^/]{1,128}`: 13,600) and anchored
/// ones fail fast. Envoy's own CEL is stricter (RE2 program size 100).
pub const MAX_REGEX_SIZE: usize = 16 * 1024;

fn compile(pattern: &str) -> Compiled {
    regex_lite::RegexBuilder::new(pattern).size_limit(MAX_REGEX_SIZE).build().map(Rc::new).map_err(|e| {
        let why = e.to_string().replace('\n', " ");
        if why.contains("size limit") {
            format!("invalid regex '{pattern}': {why} of {MAX_REGEX_SIZE} bytes (matching time grows with it)")
        } else {
            format!("invalid regex '{pattern}': {why}")
        }
    })
}

/// The compiled regex for `pattern`, from the cache when it is there.
pub(super) fn get(pattern: &str, pin: bool) -> Compiled {
    CACHE.with(|cache| {
        if let Some(hit) = cache.borrow().get(pattern) {
            return hit.clone();
        }
        let compiled = compile(pattern);
        let mut cache = cache.borrow_mut();
        if pin || cache.len() < CACHE_CAPACITY {
            cache.insert(pattern.to_string(), compiled.clone());
        }
        compiled
    })
}

#[cfg(test)]
pub(super) fn cached(pattern: &str) -> bool {
    CACHE.with(|c| c.borrow().contains_key(pattern))
}

/// Compiles (and caches) every literal `matches` pattern, so a bad one
/// is a configuration error.
pub(super) fn precompile(e: &IdedExpr) -> Result<(), String> {
    let mut result = Ok(());
    visit(e, &mut |call_args: &[&IdedExpr]| {
        if let Some(IdedExpr { expr: Expr::Literal(LiteralValue::String(p)), .. }) = call_args.last() {
            if let Err(err) = get(p.inner(), true) {
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
    let mut children: Vec<&IdedExpr> = Vec::new();
    match &e.expr {
        Expr::Call(c) => {
            if c.func_name == "matches" {
                let args: Vec<&IdedExpr> = c.target.as_deref().into_iter().chain(c.args.iter()).collect();
                if args.len() == 2 {
                    f(&args);
                }
            }
            children.extend(c.target.as_deref());
            children.extend(c.args.iter());
        }
        Expr::Select(s) => children.push(&s.operand),
        Expr::Comprehension(c) => children.extend([&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]),
        Expr::List(l) => children.extend(l.elements.iter()),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    children.push(&me.key);
                    children.push(&me.value);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(fe) => children.push(&fe.value),
                    EntryExpr::MapEntry(me) => children.extend([&me.key, &me.value]),
                }
            }
        }
        _ => {}
    }
    for c in children {
        visit(c, f);
    }
}

fn matches(this: &CelString, re: &CelString) -> Result<CelBool, ExecutionError> {
    match get(re.inner(), false) {
        Ok(compiled) => Ok(CelBool::from(compiled.is_match(this.inner()))),
        Err(message) => Err(ExecutionError::FunctionError { function: "matches".into(), message }),
    }
}

/// Registers `matches(string, string)` and `string.matches(string)`.
pub(super) fn extension(env: &mut Env) -> Result<(), cel::DeclarationError> {
    cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches")?;
    cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>)?;
    Ok(())
}
