//! The attribute paths an expression references: what evaluation fetches.

use super::limits::children;
use super::NOT_ATTRIBUTES;
use cel::common::ast::{Expr, IdedExpr};

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
pub(super) fn collect_paths(e: &IdedExpr, locals: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
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
        _ => {
            for child in children(e) {
                collect_paths(child, locals, out);
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
