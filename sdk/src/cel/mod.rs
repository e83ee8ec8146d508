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
//! `node.metadata['MESH_ID']` references `["node", "metadata", "MESH_ID"]`
//! and `xds.cluster_metadata.filter_metadata.istio.services[0].name`
//! `[..., "services", "0", "name"]` (indexing by a literal continues the
//! path; any other index stops it); `has(request.headers.x)` references
//! `["request", "headers", "x"]`. A path whose prefix is also referenced is
//! covered by the prefix and not fetched again.
//!
//! Every expression is bounded at compile time (source length, bracket
//! nesting, parse depth, AST depth and size, comprehension nesting: the
//! `limits` module, docs/cel.md "Limits"), so neither parsing nor
//! evaluation can exhaust the VM's stacks; and every evaluation within
//! budgets (comprehension iterations, bytes built, regex work: `limits`
//! and `budget`), so none can run for long or exhaust its memory.
//!
//! Submodules: `limits` (those bounds, and the AST rewrite that enforces
//! the budgets), `budget` (the per-evaluation budgets), `paths` (the attribute paths an expression references),
//! `values` (attribute values to and from CEL, re-exported here),
//! `functions` (our `matches`).

mod budget;
mod functions;
mod limits;
mod paths;
mod values;

pub use budget::{MAX_EVAL_BYTES, MAX_MATCH_WORK};
pub use functions::MAX_REGEX_SIZE;
pub use values::{from_cel, stringify, to_cel};

use crate::attributes::{AttrValue, AttributeSource};
use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelBool, CelString};
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Value};
use functions as regex;
use paths::{collect_paths, minimal};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

pub use limits::{
    BRACKET_COST, MAX_AST_DEPTH, MAX_AST_NODES, MAX_COMPREHENSION_NESTING, MAX_ITERATIONS, MAX_NESTING,
    MAX_PARSE_DEPTH, MAX_SOURCE_LEN,
};

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
    let _ = env.add_extension(limits::extension);
    let _ = env.add_extension(budget::extension);
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
    /// The parsed expression, every comprehension's range charged to the
    /// iteration budget (`limits::instrument`).
    expr: IdedExpr,
    references: Vec<Vec<String>>,
    /// References grouped by their root identifier: (root, indexes into
    /// `references`); a root referenced alone has the single path `[root]`.
    roots: Vec<(String, Vec<usize>)>,
    /// Path prefixes that end in an integer index (`[a, l, 0]` for
    /// `a.l[0].c`): that segment is bound as an integer key, so CEL's
    /// `l[0]` finds it.
    int_indexes: Vec<Vec<String>>,
    /// When the whole expression is an attribute path
    /// ([`paths::whole_path`]): evaluation fetches it without building a
    /// CEL context (about 25,000 wasm instructions less per evaluation).
    whole_path: Option<Vec<String>>,
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
        // Before parsing: the parser recurses, so what it would recurse on is
        // bounded first, by a scan that does not (docs/cel.md, "Limits").
        limits::scan(source)?;
        // The crate's Pratt parser, not `env().compile` (its ANTLR parser):
        // the same ASTs (tests: `parsers_agree`) for a fraction of the code
        // and instructions. Configured as `Env::stdlib().parser()` is: the
        // standard macros (our extensions add none) and optional syntax.
        let parsed = cel::parser::PrattParser::new().enable_optional_syntax(true).parse(source).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1 + 1, e.msg))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        // Evaluation recurses on the AST: bounded before anything else walks
        // it (the walks below recurse too).
        limits::check_ast(&parsed)?;
        let mut expr = parsed;
        limits::instrument(&mut expr);
        regex::precompile(&expr)?;
        let (mut found, mut int_indexes) = (Vec::new(), Vec::new());
        collect_paths(&expr, &mut Vec::new(), &mut found, &mut int_indexes);
        let references = minimal(found);
        let mut roots: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, path) in references.iter().enumerate() {
            match roots.iter_mut().find(|(r, _)| *r == path[0]) {
                Some((_, idx)) => idx.push(i),
                None => roots.push((path[0].clone(), vec![i])),
            }
        }
        let whole_path = paths::whole_path(&expr).filter(|p| references.len() == 1 && references[0] == *p);
        Ok(Expression { source: source.to_string(), expr, references, roots, int_indexes, whole_path })
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
        if let Some(path) = &self.whole_path {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            // What CEL would return for the same binding, as the value it
            // was bound with: scalars convert both ways unchanged. A
            // missing attribute, a map or a list takes the general path (the
            // same fetch again), so errors and conversions stay CEL's.
            if let Some(
                v @ (AttrValue::Null
                | AttrValue::Bool(_)
                | AttrValue::Int(_)
                | AttrValue::Uint(_)
                | AttrValue::Double(_)
                | AttrValue::String(_)
                | AttrValue::Bytes(_)),
            ) = attrs.attribute(&segments)
            {
                return Ok(v);
            }
        }
        self.evaluate_cel(attrs)
    }

    /// Evaluates with the CEL interpreter, whatever the expression.
    fn evaluate_cel(&self, attrs: &dyn AttributeSource) -> Result<AttrValue, String> {
        let mut ctx = Context::with_env(Arc::clone(env()));
        for (root, indexes) in &self.roots {
            if let Some(value) = self.bind(root, indexes, attrs) {
                ctx.add_variable_from_value(root.as_str(), value);
            }
        }
        limits::reset_iterations();
        budget::reset();
        let result = Value::resolve(&self.expr, &ctx).map_err(|e| execution_error(&e))?;
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
            let int_key = |depth: usize| self.int_indexes.iter().any(|p| p.len() == depth + 1 && path.starts_with(p));
            match attrs.attribute(&segments) {
                Some(v) => tree.insert(&path[1..], 1, &int_key, to_cel(v)),
                // The maps above a missing attribute exist, so the error
                // names what is missing (`No such key: NOPE` for
                // `node.metadata['NOPE']`), as when the whole map is bound.
                None => tree.insert_parents(&path[1..], 1, &int_key),
            }
        }
        Some(tree.into_value())
    }
}

/// Nested maps under one root identifier; a segment that was an integer
/// index in the expression is an integer key.
#[derive(Default)]
struct Tree {
    leaf: Option<Value>,
    children: BTreeMap<(String, bool), Tree>,
}

impl Tree {
    /// Inserts `value` at `path`, whose first segment is at `depth` in the
    /// whole path; `int_key(depth)` says whether that segment is an index.
    fn insert(&mut self, path: &[String], depth: usize, int_key: &dyn Fn(usize) -> bool, value: Value) {
        match path.split_first() {
            None => self.leaf = Some(value),
            Some((head, rest)) => {
                self.children.entry((head.clone(), int_key(depth))).or_default().insert(rest, depth + 1, int_key, value)
            }
        }
    }

    /// The maps leading to `path`, without its last segment.
    fn insert_parents(&mut self, path: &[String], depth: usize, int_key: &dyn Fn(usize) -> bool) {
        if let [head, rest @ ..] = path {
            if !rest.is_empty() {
                self.children.entry((head.clone(), int_key(depth))).or_default().insert_parents(
                    rest,
                    depth + 1,
                    int_key,
                );
            }
        }
    }

    fn into_value(self) -> Value {
        if let Some(v) = self.leaf {
            return v;
        }
        let map: HashMap<Key, Value> = self
            .children
            .into_iter()
            .map(|((k, int), t)| {
                let key = match k.parse::<i64>() {
                    Ok(i) if int => Key::Int(i),
                    _ => Key::String(Arc::new(k)),
                };
                (key, t.into_value())
            })
            .collect();
        Value::Map(Map { map: Arc::new(map) })
    }
}

fn execution_error(e: &ExecutionError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests;
