//! The attribute paths an expression references: what evaluation fetches.

use super::limits::children;
use super::NOT_ATTRIBUTES;
use cel::common::ast::{Expr, IdedExpr, LiteralValue};

/// The attribute path a select chain spells (`a.b.c` → `[a, b, c]`), if
/// it is rooted at an identifier. Indexing by a literal continues the path
/// (`a['b'].c` → `[a, b, c]`, `a.l[0].c` → `[a, l, 0, c]`), so only what is
/// used is fetched, as Envoy resolves such a path (a list element by its
/// position); the positions of integer indexes are returned too, so the
/// bound value can be indexed by an integer. Any other index stops the path.
fn chain(e: &IdedExpr) -> Option<(Vec<String>, Vec<usize>)> {
    let mut segments = Vec::new();
    let mut int_indexes = Vec::new();
    let mut e = e;
    loop {
        match &e.expr {
            Expr::Ident(name) => {
                segments.push(name.clone());
                segments.reverse();
                let n = segments.len();
                let mut positions: Vec<usize> = int_indexes.iter().map(|i| n - 1 - i).collect();
                positions.sort_unstable();
                return Some((segments, positions));
            }
            Expr::Select(s) => {
                segments.push(s.field.clone());
                e = &s.operand;
            }
            Expr::Call(call) if call.func_name == INDEX && call.target.is_none() && call.args.len() == 2 => {
                match &call.args[1].expr {
                    Expr::Literal(LiteralValue::String(key)) => segments.push(key.to_string()),
                    Expr::Literal(LiteralValue::Int(i)) if **i >= 0 => {
                        int_indexes.push(segments.len());
                        segments.push(i.inner().to_string());
                    }
                    _ => return None,
                }
                e = &call.args[0];
            }
            _ => return None,
        }
    }
}

/// CEL's index operator.
const INDEX: &str = "_[_]";

/// The attribute path when the whole expression is one (`request.method`,
/// `node.metadata['MESH_ID']`, `upstream_peer.istio_version`: most of
/// Istio's dimensions): a chain of field selections and string-literal
/// indexes from an attribute's name, with no `has()`, integer index or
/// absolute (`.`-prefixed) name. Evaluating it is fetching it.
pub(super) fn whole_path(e: &IdedExpr) -> Option<Vec<String>> {
    let mut link = e;
    loop {
        match &link.expr {
            Expr::Select(s) if !s.test => link = &s.operand,
            Expr::Call(call) if call.func_name == INDEX && call.target.is_none() && call.args.len() == 2 => {
                link = &call.args[0]
            }
            Expr::Ident(_) => break,
            _ => return None,
        }
    }
    let (path, int_indexes) = chain(e)?;
    let root = path[0].as_str();
    let attribute = !root.starts_with('.') && !root.starts_with('@') && !NOT_ATTRIBUTES.contains(&root);
    (int_indexes.is_empty() && attribute).then_some(path)
}

/// Collects attribute paths, skipping comprehension variables in scope.
pub(super) fn collect_paths(
    e: &IdedExpr,
    locals: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
    int_prefixes: &mut Vec<Vec<String>>,
) {
    let path_chain = match &e.expr {
        Expr::Ident(_) | Expr::Select(_) | Expr::Call(_) => chain(e),
        _ => None,
    };
    if let Some((mut path, ints)) = path_chain {
        // `.request.method` names the same attribute (absolute name).
        let root = path[0].trim_start_matches('.').to_string();
        if !locals.contains(&root) && !NOT_ATTRIBUTES.contains(&root.as_str()) && !root.starts_with('@') {
            path[0] = root;
            // `has(a.b.c)` tests for `c` in `a.b`: it needs `a.b` (whose
            // absence is an error, not false), so that is what is fetched.
            // `has(a.b)` needs only `a.b`: the root is always bound.
            if matches!(&e.expr, Expr::Select(sel) if sel.test) && path.len() > 2 {
                path.pop();
            }
            for &i in ints.iter().filter(|i| **i < path.len()) {
                int_prefixes.push(path[..=i].to_vec());
            }
            out.push(path);
        }
        return;
    }
    match &e.expr {
        Expr::Select(s) => collect_paths(&s.operand, locals, out, int_prefixes),
        Expr::Comprehension(c) => {
            collect_paths(&c.iter_range, locals, out, int_prefixes);
            collect_paths(&c.accu_init, locals, out, int_prefixes);
            let before = locals.len();
            locals.push(c.iter_var.clone());
            if let Some(v2) = &c.iter_var2 {
                locals.push(v2.clone());
            }
            locals.push(c.accu_var.clone());
            collect_paths(&c.loop_cond, locals, out, int_prefixes);
            collect_paths(&c.loop_step, locals, out, int_prefixes);
            collect_paths(&c.result, locals, out, int_prefixes);
            locals.truncate(before);
        }
        _ => {
            for child in children(e) {
                collect_paths(child, locals, out, int_prefixes);
            }
        }
    }
}

/// Deduplicates, keeping first-use order, and drops any path a shorter one
/// covers (`[request, headers, x]` under `[request, headers]`).
pub(super) fn minimal(paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for p in &paths {
        let covered = paths.iter().any(|q| q.len() < p.len() && p.starts_with(q));
        if !covered && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}
