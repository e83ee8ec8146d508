//! CEL expressions over request attributes, as Istio's extensions use them
//! (attributegen conditions, stats dimensions and metric values).
//!
//! Built on the `cel` crate (docs/cel.md has the measurements and the
//! choice). An [`Expression`] is parsed once, at configure time; evaluating
//! it fetches from the [`AttributeSource`] only the attribute paths it
//! references, each once, binds them, and runs the program against one
//! environment shared by every expression (the standard library is never
//! rebuilt per request).
//!
//! Beyond the standard library:
//! * cel-go's string extensions (`lowerAscii`, `upperAscii`, `split`,
//!   `replace`, `substring`, `trim`, `indexOf`, `lastIndexOf`, `join`,
//!   `charAt`, `reverse`, `format`, `strings.quote`), from the crate.
//! * `matches` on RE2-like regexes (regex-lite: linear time; `\d`, `\w`,
//!   `\s` and POSIX classes are ASCII, as in RE2; Unicode classes such as
//!   `\pL` are not supported). Compiled regexes are cached; a literal pattern
//!   is compiled, and checked, when the expression is.
//!
//! Attribute paths: `request.method` references `["request", "method"]`;
//! `node.metadata['MESH_ID']` references `["node", "metadata"]` (indexing
//! stops the path); `has(request.headers.x)` references
//! `["request", "headers", "x"]`. A path whose prefix is also referenced is
//! covered by the prefix and not fetched again.

use crate::attributes::{AttrValue, AttributeSource};
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelBool, CelString};
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

/// Expressions longer than this are refused (they are configuration, not
/// data).
pub const MAX_SOURCE_LEN: usize = 16 * 1024;
/// Bracket nesting deeper than this is refused before parsing.
pub const MAX_NESTING: usize = 64;

/// The environment every expression runs in: standard library, strings
/// extension, our `matches`. Built once per process (VM).
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(build_env()))
}

fn build_env() -> Env {
    let mut env = Env::stdlib();
    // Registration fails only on a name clash, which the unit tests rule out;
    // a failed extension would only make its functions unknown.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(regex::extension);
    env
}

/// Identifiers that are CEL type names or function namespaces, not
/// attributes: never fetched.
const NOT_ATTRIBUTES: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "strings",
    "optional",
    "google",
];

/// A compiled CEL expression.
pub struct Expression {
    source: String,
    program: Program,
    references: Vec<Vec<String>>,
    /// References grouped by their root identifier: (root, indexes into
    /// `references`); a root referenced alone has the single path `[root]`.
    roots: Vec<(String, Vec<usize>)>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expression").field("source", &self.source).field("references", &self.references).finish()
    }
}

impl Expression {
    /// Parses `source` (once, at configure time). The error says what is
    /// wrong and where: `1:9: Syntax error: ...`.
    pub fn compile(source: &str) -> Result<Expression, String> {
        if source.trim().is_empty() {
            return Err("empty expression".into());
        }
        if source.len() > MAX_SOURCE_LEN {
            return Err(format!("expression longer than {MAX_SOURCE_LEN} bytes"));
        }
        let mut depth = 0usize;
        for c in source.chars() {
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(format!("expression nested deeper than {MAX_NESTING} brackets"));
                    }
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let program = env().compile(source).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1 + 1, e.msg))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let expr = program.expression();
        regex::precompile(expr)?;
        let mut found = Vec::new();
        collect_paths(expr, &mut Vec::new(), &mut found);
        let references = minimal(found);
        let mut roots: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, path) in references.iter().enumerate() {
            match roots.iter_mut().find(|(r, _)| *r == path[0]) {
                Some((_, idx)) => idx.push(i),
                None => roots.push((path[0].clone(), vec![i])),
            }
        }
        Ok(Expression { source: source.to_string(), program, references, roots })
    }

    /// The text the expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The attribute paths the expression references (deduplicated, in
    /// order of first use, none covered by another's prefix).
    pub fn references(&self) -> &[Vec<String>] {
        &self.references
    }

    /// Evaluates against `attrs`, fetching each referenced path once. A
    /// missing attribute makes an expression that needs it fail (`No such
    /// key: method`, `Undeclared reference to 'x'`), as in Envoy; `has()`
    /// tests presence without failing.
    pub fn evaluate(&self, attrs: &dyn AttributeSource) -> Result<AttrValue, String> {
        let mut ctx = Context::with_env(Arc::clone(env()));
        for (root, indexes) in &self.roots {
            if let Some(value) = self.bind(root, indexes, attrs) {
                ctx.add_variable_from_value(root.as_str(), value);
            }
        }
        let result = self.program.execute(&ctx).map_err(|e| execution_error(&e))?;
        from_cel(result)
    }

    /// Evaluates and stringifies as Istio does for a dimension value:
    /// strings as they are, integers in decimal, doubles in their shortest
    /// round-trip form, bools `true`/`false`, bytes as (lossy) UTF-8,
    /// timestamps in RFC 3339, durations in seconds (`1.5s`). Null, lists
    /// and maps have no string form: an error.
    pub fn evaluate_string(&self, attrs: &dyn AttributeSource) -> Result<String, String> {
        stringify(&self.evaluate(attrs)?)
    }

    /// The value bound to `root`: the attribute itself when the expression
    /// uses it whole, else a map holding each referenced path below it.
    fn bind(&self, root: &str, indexes: &[usize], attrs: &dyn AttributeSource) -> Option<Value> {
        let first = &self.references[indexes[0]];
        if first.len() == 1 {
            return attrs.attribute(&[root]).map(to_cel);
        }
        let mut tree = Tree::default();
        for &i in indexes {
            let path = &self.references[i];
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(v) = attrs.attribute(&segments) {
                tree.insert(&path[1..], to_cel(v));
            }
        }
        Some(tree.into_value())
    }
}

/// Nested maps under one root identifier.
#[derive(Default)]
struct Tree {
    leaf: Option<Value>,
    children: BTreeMap<String, Tree>,
}

impl Tree {
    fn insert(&mut self, path: &[String], value: Value) {
        match path.split_first() {
            None => self.leaf = Some(value),
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest, value),
        }
    }

    fn into_value(self) -> Value {
        if let Some(v) = self.leaf {
            return v;
        }
        let map: HashMap<Key, Value> =
            self.children.into_iter().map(|(k, t)| (Key::String(Arc::new(k)), t.into_value())).collect();
        Value::Map(Map { map: Arc::new(map) })
    }
}

/// The attribute path a select chain spells (`a.b.c` → `[a, b, c]`), if
/// it is rooted at an identifier.
fn chain(e: &IdedExpr) -> Option<Vec<String>> {
    let mut segments = Vec::new();
    let mut e = e;
    loop {
        match &e.expr {
            Expr::Ident(name) => {
                segments.push(name.clone());
                segments.reverse();
                return Some(segments);
            }
            Expr::Select(s) => {
                segments.push(s.field.clone());
                e = &s.operand;
            }
            _ => return None,
        }
    }
}

/// Collects attribute paths, skipping comprehension variables in scope.
fn collect_paths(e: &IdedExpr, locals: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match &e.expr {
        Expr::Ident(_) | Expr::Select(_) => {
            if let Some(mut path) = chain(e) {
                // `.request.method` names the same attribute (absolute name).
                let root = path[0].trim_start_matches('.').to_string();
                if !locals.contains(&root) && !NOT_ATTRIBUTES.contains(&root.as_str()) && !root.starts_with('@') {
                    path[0] = root;
                    // `has(a.b.c)` tests for `c` in `a.b`: it needs `a.b`
                    // (whose absence is an error, not false), so that is
                    // what is fetched. `has(a.b)` needs only `a.b`: the root
                    // is always bound.
                    if matches!(&e.expr, Expr::Select(sel) if sel.test) && path.len() > 2 {
                        path.pop();
                    }
                    out.push(path);
                }
            } else if let Expr::Select(s) = &e.expr {
                collect_paths(&s.operand, locals, out);
            }
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                collect_paths(t, locals, out);
            }
            for a in &c.args {
                collect_paths(a, locals, out);
            }
        }
        Expr::Comprehension(c) => {
            collect_paths(&c.iter_range, locals, out);
            collect_paths(&c.accu_init, locals, out);
            let before = locals.len();
            locals.push(c.iter_var.clone());
            if let Some(v2) = &c.iter_var2 {
                locals.push(v2.clone());
            }
            locals.push(c.accu_var.clone());
            collect_paths(&c.loop_cond, locals, out);
            collect_paths(&c.loop_step, locals, out);
            collect_paths(&c.result, locals, out);
            locals.truncate(before);
        }
        Expr::List(l) => {
            for el in &l.elements {
                collect_paths(el, locals, out);
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    collect_paths(&me.key, locals, out);
                    collect_paths(&me.value, locals, out);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => collect_paths(&f.value, locals, out),
                    EntryExpr::MapEntry(me) => {
                        collect_paths(&me.key, locals, out);
                        collect_paths(&me.value, locals, out);
                    }
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Deduplicates, keeping first-use order, and drops any path a shorter one
/// covers (`[request, headers, x]` under `[request, headers]`).
fn minimal(paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for p in &paths {
        let covered = paths.iter().any(|q| q.len() < p.len() && p.starts_with(q));
        if !covered && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

fn execution_error(e: &ExecutionError) -> String {
    e.to_string()
}

// ------------------------------------------------------------ values

/// An attribute as a CEL value. Timestamps and durations out of chrono's
/// range become null (never a panic).
pub fn to_cel(v: AttrValue) -> Value {
    match v {
        AttrValue::Null => Value::Null,
        AttrValue::Bool(b) => Value::Bool(b),
        AttrValue::Int(i) => Value::Int(i),
        AttrValue::Uint(u) => Value::UInt(u),
        AttrValue::Double(d) => Value::Float(d),
        AttrValue::String(s) => Value::String(Arc::new(s)),
        AttrValue::Bytes(b) => Value::Bytes(Arc::new(b)),
        AttrValue::Timestamp(ns) => Value::Timestamp(chrono::DateTime::from_timestamp_nanos(ns).fixed_offset()),
        AttrValue::Duration(ns) => Value::Duration(chrono::Duration::nanoseconds(ns)),
        AttrValue::Map(entries) => {
            let mut map: HashMap<Key, Value> = HashMap::with_capacity(entries.len());
            for (k, v) in entries {
                // The first entry for a key wins, as with AttrValue::get.
                map.entry(Key::String(Arc::new(k))).or_insert_with(|| to_cel(v));
            }
            Value::Map(Map { map: Arc::new(map) })
        }
        AttrValue::List(items) => Value::List(Arc::new(items.into_iter().map(to_cel).collect())),
    }
}

/// A CEL result as an attribute value.
pub fn from_cel(v: Value) -> Result<AttrValue, String> {
    Ok(match v {
        Value::Null => AttrValue::Null,
        Value::Bool(b) => AttrValue::Bool(b),
        Value::Int(i) => AttrValue::Int(i),
        Value::UInt(u) => AttrValue::Uint(u),
        Value::Float(d) => AttrValue::Double(d),
        Value::String(s) => AttrValue::String(Arc::unwrap_or_clone(s)),
        Value::Bytes(b) => AttrValue::Bytes(Arc::unwrap_or_clone(b)),
        Value::Timestamp(t) => {
            AttrValue::Timestamp(t.timestamp_nanos_opt().ok_or("timestamp out of the int64 nanosecond range")?)
        }
        Value::Duration(d) => {
            AttrValue::Duration(d.num_nanoseconds().ok_or("duration out of the int64 nanosecond range")?)
        }
        Value::List(items) => AttrValue::List(items.iter().cloned().map(from_cel).collect::<Result<Vec<_>, _>>()?),
        Value::Map(m) => {
            let mut entries = Vec::with_capacity(m.map.len());
            for (k, v) in m.map.iter() {
                let key = match k {
                    Key::String(s) => s.to_string(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                entries.push((key, from_cel(v.clone())?));
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            AttrValue::Map(entries)
        }
        other => return Err(format!("unsupported result type {}", other.type_of())),
    })
}

/// Istio's string form of a dimension value (see
/// [`Expression::evaluate_string`]).
pub fn stringify(v: &AttrValue) -> Result<String, String> {
    Ok(match v {
        AttrValue::String(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Uint(u) => u.to_string(),
        AttrValue::Double(d) => d.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        AttrValue::Timestamp(ns) => {
            chrono::DateTime::from_timestamp_nanos(*ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }
        AttrValue::Duration(ns) => duration_string(*ns),
        AttrValue::Null => return Err("null has no string value".into()),
        AttrValue::List(_) => return Err("a list has no string value".into()),
        AttrValue::Map(_) => return Err("a map has no string value".into()),
    })
}

/// Seconds with the fraction trimmed: `1.5s`, `-0.000000001s`, `3s`.
fn duration_string(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    let (secs, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        format!("{sign}{secs}s")
    } else {
        let digits = format!("{frac:09}");
        format!("{sign}{secs}.{}s", digits.trim_end_matches('0'))
    }
}

// ------------------------------------------------------------ matches

mod regex {
    use super::*;

    /// Cached compiled regexes (or their compile errors), by pattern. Literal
    /// patterns are added when their expression is compiled; patterns only
    /// known at run time are added while there is room.
    const CACHE_CAPACITY: usize = 256;

    type Compiled = Result<Rc<regex_lite::Regex>, String>;

    thread_local! {
        static CACHE: RefCell<HashMap<String, Compiled>> = RefCell::new(HashMap::new());
    }

    fn compile(pattern: &str) -> Compiled {
        regex_lite::Regex::new(pattern)
            .map(Rc::new)
            .map_err(|e| format!("invalid regex '{pattern}': {}", e.to_string().replace('\n', " ")))
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
            Expr::Comprehension(c) => {
                children.extend([&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result])
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn attrs(pairs: &[(&str, AttrValue)]) -> BTreeMap<String, AttrValue> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn s(v: &str) -> AttrValue {
        AttrValue::String(v.into())
    }

    fn request(method: &str, path: &str) -> BTreeMap<String, AttrValue> {
        attrs(&[
            ("request.method", s(method)),
            ("request.url_path", s(path)),
            ("request.headers", AttrValue::Map(vec![("x-user".into(), s("alice")), (":method".into(), s(method))])),
            (
                "node.metadata",
                AttrValue::Map(vec![("MESH_ID".into(), s("mesh1")), ("N".into(), AttrValue::Double(2.0))]),
            ),
            ("upstream_peer.istio_version", s("1.22.0")),
            ("response.code", AttrValue::Int(200)),
            ("request.time", AttrValue::Timestamp(1_767_225_600_000_000_000)),
            ("request.duration", AttrValue::Duration(1_500_000_000)),
            ("istio_operationId", s("ListCatalog")),
        ])
    }

    fn eval(src: &str, a: &dyn AttributeSource) -> Result<AttrValue, String> {
        Expression::compile(src)?.evaluate(a)
    }

    fn eval_str(src: &str) -> Result<String, String> {
        Expression::compile(src)?.evaluate_string(&request("GET", "/api/catalog"))
    }

    #[test]
    fn seed_expressions() {
        let get = request("GET", "/api/catalog");
        let post = request("POST", "/api/catalog");
        let e = Expression::compile("request.method.startsWith('GET') ? 1 : 0").unwrap();
        assert_eq!(e.evaluate(&get), Ok(AttrValue::Int(1)));
        assert_eq!(e.evaluate(&post), Ok(AttrValue::Int(0)));
        assert_eq!(e.source(), "request.method.startsWith('GET') ? 1 : 0");
        let c = Expression::compile("request.url_path == '/api/catalog' && request.method == 'GET'").unwrap();
        assert_eq!(c.evaluate(&get), Ok(AttrValue::Bool(true)));
        assert_eq!(c.evaluate(&post), Ok(AttrValue::Bool(false)));
        assert_eq!(c.evaluate(&request("GET", "/other")), Ok(AttrValue::Bool(false)));
        assert_eq!(eval("(request.method.startsWith('GET') ? 1 : 0)", &get), Ok(AttrValue::Int(1)));
    }

    #[test]
    fn references_are_the_attribute_paths() {
        let refs = |src: &str| Expression::compile(src).unwrap().references().to_vec();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            refs("request.url_path == '/a' && request.method == 'GET' && request.method != 'X'"),
            vec![p(&["request", "url_path"]), p(&["request", "method"])]
        );
        assert_eq!(refs("node.metadata['MESH_ID']"), vec![p(&["node", "metadata"])]);
        assert_eq!(refs("upstream_peer.istio_version"), vec![p(&["upstream_peer", "istio_version"])]);
        assert_eq!(refs("request.headers['x-user'] == 'a'"), vec![p(&["request", "headers"])]);
        assert_eq!(refs("request.headers.x == 'y'"), vec![p(&["request", "headers", "x"])]);
        assert_eq!(refs("has(request.headers.x) && request.headers.x == 'y'"), vec![p(&["request", "headers"])]);
        assert_eq!(refs("has(response.code)"), vec![p(&["response", "code"])]);
        assert_eq!(
            refs("has(request.headers.x) || request.headers['y'] == ''"),
            vec![p(&["request", "headers"])],
            "a prefix covers the longer path"
        );
        assert_eq!(refs("istio_operationId"), vec![p(&["istio_operationId"])]);
        assert_eq!(
            refs("[1, 2].exists(x, x == response.code) && ['a'].map(m, m + request.method).size() == 1"),
            vec![p(&["response", "code"]), p(&["request", "method"])],
            "comprehension variables are not attributes"
        );
        assert_eq!(refs("type(1) == int && string(1) == '1' && strings.quote('a') != ''"), Vec::<Vec<String>>::new());
        assert_eq!(refs("{'k': request.id}.k"), vec![p(&["request", "id"])]);
        assert_eq!(refs("1 + 2"), Vec::<Vec<String>>::new());
    }

    /// Counts fetches, to check each referenced path is fetched once and
    /// nothing else is.
    struct Counting<'a> {
        inner: &'a dyn AttributeSource,
        calls: RefCell<Vec<String>>,
        n: Cell<usize>,
    }

    impl AttributeSource for Counting<'_> {
        fn attribute(&self, path: &[&str]) -> Option<AttrValue> {
            self.n.set(self.n.get() + 1);
            self.calls.borrow_mut().push(path.join("."));
            self.inner.attribute(path)
        }
    }

    #[test]
    fn binds_only_referenced_paths_once() {
        let base = request("GET", "/api/catalog");
        let counting = Counting { inner: &base, calls: RefCell::new(Vec::new()), n: Cell::new(0) };
        let e = Expression::compile(
            "request.method == 'GET' && request.method.size() == 3 && request.headers['x-user'] == 'alice' && \
             node.metadata['MESH_ID'] == 'mesh1'",
        )
        .unwrap();
        assert_eq!(e.evaluate(&counting), Ok(AttrValue::Bool(true)));
        assert_eq!(*counting.calls.borrow(), vec!["request.method", "request.headers", "node.metadata"]);
    }

    #[test]
    fn map_indexing_and_has() {
        let a = request("GET", "/api/catalog");
        assert_eq!(eval("node.metadata['MESH_ID']", &a), Ok(s("mesh1")));
        assert_eq!(eval("node.metadata.MESH_ID", &a), Ok(s("mesh1")));
        assert_eq!(eval("request.headers['x-user']", &a), Ok(s("alice")));
        assert!(eval("has(request.headers.x-user)", &a).is_err(), "`-` is subtraction, not a name");
        assert_eq!(eval("'x-user' in request.headers", &a), Ok(AttrValue::Bool(true)));
        assert_eq!(eval("has(request.method)", &a), Ok(AttrValue::Bool(true)));
        assert_eq!(eval("has(request.query)", &a), Ok(AttrValue::Bool(false)));
        assert_eq!(eval("has(response.code) ? response.code : 200", &a), Ok(AttrValue::Int(200)));
        assert_eq!(eval("has(response.code) ? response.code : 0", &BTreeMap::new()), Ok(AttrValue::Int(0)));
        assert_eq!(eval("has(node.metadata.NOPE)", &a), Ok(AttrValue::Bool(false)));
        assert_eq!(eval("has(node.metadata.MESH_ID)", &a), Ok(AttrValue::Bool(true)));
        assert_eq!(eval("has(request.headers.nope) ? 'y' : 'n'", &a), Ok(s("n")));
        assert!(eval("has(request.headers.x) ? 'y' : 'n'", &BTreeMap::new()).is_err(), "no headers at all");
        assert!(eval("node.metadata['NOPE']", &a).unwrap_err().contains("NOPE"));
        assert_eq!(eval("upstream_peer.istio_version", &a), Ok(s("1.22.0")));
        assert_eq!(eval("node.metadata['N'] == 2.0", &a), Ok(AttrValue::Bool(true)));
        assert_eq!(eval("istio_operationId == 'ListCatalog'", &a), Ok(AttrValue::Bool(true)));
    }

    #[test]
    fn missing_attributes_are_errors() {
        let empty: BTreeMap<String, AttrValue> = BTreeMap::new();
        let e = eval("request.method == 'GET'", &empty).unwrap_err();
        assert!(e.contains("method"), "{e}");
        let e = eval("istio_operationId == 'x'", &empty).unwrap_err();
        assert!(e.contains("istio_operationId"), "{e}");
        // Logical operators absorb errors as CEL specifies.
        assert_eq!(eval("false && request.method == 'GET'", &empty), Ok(AttrValue::Bool(false)));
        assert_eq!(eval("true || request.method == 'GET'", &empty), Ok(AttrValue::Bool(true)));
    }

    #[test]
    fn compile_errors_say_what_is_wrong() {
        let e = Expression::compile("request.method ==").unwrap_err();
        assert!(e.starts_with("1:"), "{e}");
        assert!(Expression::compile("").unwrap_err().contains("empty"));
        assert!(Expression::compile("a.b(").is_err());
        assert!(Expression::compile("'unterminated").is_err());
        let e = Expression::compile("request.url_path.matches('[')").unwrap_err();
        assert!(e.contains("invalid regex '['"), "{e}");
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert!(Expression::compile(&deep).unwrap_err().contains("nested"));
        assert!(Expression::compile(&"1 + ".repeat(10_000)).is_err());
        let long = "a".repeat(MAX_SOURCE_LEN + 1);
        assert!(Expression::compile(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn odd_inputs_never_panic() {
        let a = request("GET", "/x");
        for src in [
            "1 / 0",
            "1 % 0",
            "9223372036854775807 + 1",
            "-9223372036854775808 - 1",
            "[1][5]",
            "{}['a']",
            "'a'[0]",
            "int('x')",
            "uint(-1)",
            "double('nan') == double('nan')",
            "timestamp('bad')",
            "duration('1x')",
            "request.time + duration('87600000h')",
            "b'\\xff'.size()",
            "'\\uD800'",
            "size(request)",
            "request[1]",
            "request.method.substring(5)",
            "request.method.charAt(-1)",
            "'a'.split('')",
            "'%d'.format(['x'])",
            "request.url_path.matches(request.method)",
            "dyn(1) == dyn('1')",
            "[1, 'a'] == [1, 'a']",
            "{1: 'a', 1u: 'b'}",
            "a.b.c.d.e.f",
            ".request.method",
            "request.duration / 0",
        ] {
            let _ = Expression::compile(src).map(|e| e.evaluate(&a));
        }
    }

    #[test]
    fn string_extensions() {
        for (src, want) in [
            ("'TacoCat'.lowerAscii()", "tacocat"),
            ("request.method.lowerAscii()", "get"),
            ("'abc'.upperAscii()", "ABC"),
            ("'a,b,c'.split(',')[1]", "b"),
            ("'a,b,c'.split(',').join('-')", "a-b-c"),
            ("'/api/v1'.replace('/', '.')", ".api.v1"),
            ("'tacocat'.substring(4)", "cat"),
            ("'tacocat'.substring(0, 4)", "taco"),
            ("'  x  '.trim()", "x"),
            ("string('abc'.indexOf('c'))", "2"),
            ("string('abcabc'.lastIndexOf('b'))", "4"),
            ("string(request.url_path.startsWith('/api'))", "true"),
            ("string('abc'.endsWith('bc') && 'abc'.contains('b'))", "true"),
            ("['x', 'y'].join()", "xy"),
            ("'abc'.charAt(1)", "b"),
        ] {
            assert_eq!(eval_str(src), Ok(want.to_string()), "{src}");
        }
    }

    #[test]
    fn matches_uses_cached_regexes() {
        let a = request("GET", "/shelves/s1/books/b2");
        let src = "request.url_path.matches('^/shelves/[[:alnum:]]*/books/[[:alnum:]]*$') && request.method == 'GET'";
        let e = Expression::compile(src).unwrap();
        assert!(regex::cached("^/shelves/[[:alnum:]]*/books/[[:alnum:]]*$"), "literal compiled at compile time");
        assert_eq!(e.evaluate(&a), Ok(AttrValue::Bool(true)));
        assert_eq!(e.evaluate(&request("GET", "/shelves/s1/books/b-2")), Ok(AttrValue::Bool(false)));
        assert_eq!(eval("matches('abc', 'b')", &a), Ok(AttrValue::Bool(true)), "unanchored, global form");
        assert_eq!(eval("'a1'.matches('^\\\\w\\\\d$')", &a), Ok(AttrValue::Bool(true)));
        // A pattern known only at run time: compiled once, then cached.
        let dynamic = attrs(&[("p", s("^G.T$")), ("request.method", s("GET"))]);
        assert_eq!(eval("request.method.matches(p)", &dynamic), Ok(AttrValue::Bool(true)));
        assert!(regex::cached("^G.T$"));
        let bad = attrs(&[("p", s("(")), ("request.method", s("GET"))]);
        assert!(eval("request.method.matches(p)", &bad).unwrap_err().contains("invalid regex"));
    }

    #[test]
    fn evaluate_string_follows_istio() {
        assert_eq!(eval_str("request.method"), Ok("GET".into()));
        assert_eq!(eval_str("response.code"), Ok("200".into()));
        assert_eq!(eval_str("-5"), Ok("-5".into()));
        assert_eq!(eval_str("5u"), Ok("5".into()));
        assert_eq!(eval_str("2.5"), Ok("2.5".into()));
        assert_eq!(eval_str("1.0"), Ok("1".into()));
        assert_eq!(eval_str("0.1 + 0.2"), Ok("0.30000000000000004".into()));
        assert_eq!(eval_str("true"), Ok("true".into()));
        assert_eq!(eval_str("b'ab\\xff'"), Ok("ab\u{fffd}".into()));
        assert_eq!(eval_str("request.time"), Ok("2026-01-01T00:00:00Z".into()));
        assert_eq!(eval_str("request.duration"), Ok("1.5s".into()));
        assert!(eval_str("null").is_err());
        assert!(eval_str("[1]").is_err());
        assert!(eval_str("{'a': 1}").is_err());
        assert_eq!(duration_string(-1), "-0.000000001s");
        assert_eq!(duration_string(3_000_000_000), "3s");
    }

    #[test]
    fn values_round_trip() {
        let a = request("GET", "/x");
        assert_eq!(eval("request.headers", &a).unwrap().get("x-user"), Some(&s("alice")));
        assert_eq!(
            eval("[1, 'a', 2u, 1.5, true, null]", &a),
            Ok(AttrValue::List(vec![
                AttrValue::Int(1),
                s("a"),
                AttrValue::Uint(2),
                AttrValue::Double(1.5),
                AttrValue::Bool(true),
                AttrValue::Null,
            ]))
        );
        assert_eq!(eval("request.time", &a), Ok(AttrValue::Timestamp(1_767_225_600_000_000_000)));
        assert_eq!(eval("request.duration > duration('1s')", &a), Ok(AttrValue::Bool(true)));
        assert_eq!(eval("request.duration", &a), Ok(AttrValue::Duration(1_500_000_000)));
        assert_eq!(eval("request.time.getFullYear()", &a), Ok(AttrValue::Int(2026)));
        assert_eq!(eval("request.time.getHours('+02:00')", &a), Ok(AttrValue::Int(2)));
        assert_eq!(eval("request.time.getHours('UTC')", &a), Ok(AttrValue::Int(0)));
        // Only UTC is built into the plugins (docs/cel.md); a native build
        // without CHRONO_TZ_TIMEZONE_FILTER knows every zone. Never a panic.
        let _ = eval("request.time.getHours('America/New_York')", &a);
        assert_eq!(eval("b'a'", &a), Ok(AttrValue::Bytes(b"a".to_vec())));
        assert_eq!(eval("type(1)", &a), Ok(s("int")), "a type reads as its name");
    }

    /// The shared environment makes evaluation cheap: building the standard
    /// library per request would cost far more than an evaluation (see
    /// docs/cel.md for the numbers). Run with `--nocapture` to see them.
    #[test]
    fn evaluation_reuses_the_environment() {
        let a = request("GET", "/api/catalog");
        let n = 2000u32;
        for src in [
            "request.method.startsWith('GET') ? 1 : 0",
            "request.url_path == '/api/catalog' && request.method == 'GET'",
            "node.metadata['MESH_ID']",
        ] {
            let t = std::time::Instant::now();
            for _ in 0..20 {
                std::hint::black_box(Expression::compile(src).unwrap());
            }
            let per_compile = t.elapsed() / 20;
            let e = Expression::compile(src).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(e.evaluate(&a).unwrap());
            }
            let per_eval = t.elapsed() / n;
            println!("cel: {src:?}: {per_eval:?} per evaluation, {per_compile:?} per compile");
        }
        let t = std::time::Instant::now();
        for _ in 0..20 {
            std::hint::black_box(build_env());
        }
        println!("cel: {:?} per environment build (what sharing it saves per request)", t.elapsed() / 20);
        assert!(Arc::ptr_eq(env(), env()));
    }

    #[test]
    fn environment_registers_cleanly() {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings).unwrap();
        env.add_extension(regex::extension).unwrap();
    }
}
