//! Bounds on what an expression may cost, checked at configure time so that
//! neither parsing nor evaluating it can exhaust the VM's stacks (a trap at
//! configure refuses the plugin; a trap in `on_log` fails every later request
//! on that VM with a 503).
//!
//! The `cel` crate parses (ANTLR parse tree, then a visitor building the AST)
//! and evaluates (`Value::resolve_val`) recursively: a left-recursive chain
//! (`1+1+...`, `a.b.c...`, `x['a']['a']...`, `f().g().h()...`) costs one
//! frame set per link, a bracket or a ternary one descent through the whole
//! precedence ladder. So two checks, both iterative:
//!
//! 1. [`scan`], before parsing: a lexical pass (string literals, raw and
//!    triple-quoted included, and comments are skipped) that bounds the
//!    parse depth the source can reach, in links, and the bracket nesting.
//! 2. [`check_ast`], after parsing: the AST's depth (what evaluation
//!    recurses on), its size, and how deeply comprehensions nest.
//!
//! The numbers are in docs/cel.md ("Limits"), with the measurements behind
//! them.

use super::budget;
use cel::common::ast::operators::{ADD, CONDITIONAL};
use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use cel::common::value::CowVal;
use cel::ExecutionError;

/// Sources longer than this are refused: they are configuration, not data.
pub const MAX_SOURCE_LEN: usize = 16 * 1024;
/// Brackets (`(`, `[`, `{`) nested deeper than this are refused before
/// parsing.
pub const MAX_NESTING: usize = 32;
/// The parse depth [`scan`] estimates (links of operator, member, index and
/// call chains along the deepest path, plus [`BRACKET_COST`] per bracket or
/// ternary above them) may not exceed this.
pub const MAX_PARSE_DEPTH: usize = 320;
/// What one bracket or ternary level costs the parser, in chain links: it
/// descends through every precedence level of the grammar.
pub const BRACKET_COST: usize = 8;
/// The AST may not be deeper than this (evaluation recurses once per level).
pub const MAX_AST_DEPTH: usize = 128;
/// Nor have more nodes than this (macros expand, so this is not the source
/// length).
pub const MAX_AST_NODES: usize = 10_000;
/// Comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) nested in
/// each other's loop deeper than this are refused: each level multiplies the
/// work of the ones inside it.
pub const MAX_COMPREHENSION_NESTING: usize = 2;

/// Whether the token just before could end an operand: then `-` is binary
/// and `(`/`[` continue a chain (call, index) rather than start a group or a
/// list.
#[derive(Clone, Copy, PartialEq)]
enum Prev {
    Operand,
    Operator,
}

/// One bracket level of the scan.
#[derive(Default)]
struct Frame {
    /// Chain links in the current segment (between separators at this level).
    links: usize,
    /// Ternaries opened so far at this level (each nests the rest deeper).
    ternaries: usize,
    /// The deepest bracket inside the current segment, as a cost.
    child: usize,
    /// The deepest segment of this level so far.
    max: usize,
}

impl Frame {
    fn segment(&self) -> usize {
        self.ternaries * BRACKET_COST + self.links + self.child
    }

    fn separate(&mut self) {
        self.max = self.max.max(self.segment());
        self.links = 0;
        self.child = 0;
    }

    fn finish(&self) -> usize {
        self.max.max(self.segment())
    }
}

/// The iterative pre-parse check: refuses sources nested deeper than
/// [`MAX_NESTING`] brackets or whose estimated parse depth exceeds
/// [`MAX_PARSE_DEPTH`]. Never recurses, so any input is safe to scan.
pub fn scan(source: &str) -> Result<(), String> {
    let b = source.as_bytes();
    let n = b.len();
    let mut frames: Vec<Frame> = vec![Frame::default()];
    let mut prev = Prev::Operator;
    // The unary operator of the run being read (0: none). CEL's grammar
    // has runs of `!` or of `-`, never both (`!-a` is a syntax error in
    // cel-go and cel-cpp); the Pratt parser we use would accept a mix, so
    // the mix is refused here (test: `parsers_agree`).
    let mut unary_run = 0u8;
    let mut i = 0;
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    while i < n {
        let c = b[i];
        let unary = (c == b'!' && at(i + 1) != b'=') || (c == b'-' && prev == Prev::Operator);
        let blank = matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0c) || (c == b'/' && at(i + 1) == b'/');
        if !unary && !blank {
            unary_run = 0;
        }
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => i += 1,
            // Not whitespace in CEL's grammar, though the Pratt parser skips it.
            0x0b => return Err(format!("Syntax error: a vertical tab (U+000B) at byte {i} is not CEL whitespace")),
            b'/' if at(i + 1) == b'/' => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' | b'"' => {
                i = skip_string(b, i, false)?;
                prev = Prev::Operand;
            }
            b'0'..=b'9' => {
                i = skip_number(b, i);
                prev = Prev::Operand;
            }
            b'.' if at(i + 1).is_ascii_digit() && prev == Prev::Operator => {
                i = skip_number(b, i);
                prev = Prev::Operand;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &b[start..i];
                if matches!(at(i), b'\'' | b'"') && is_string_prefix(word) {
                    let raw = word.iter().any(|&c| c == b'r' || c == b'R');
                    i = skip_string(b, i, raw)?;
                    prev = Prev::Operand;
                } else if word == b"in" {
                    top(&mut frames).links += 1;
                    prev = Prev::Operator;
                } else {
                    prev = Prev::Operand;
                }
            }
            b'`' => {
                // An escaped identifier (`a.`b-c``) is one token; a malformed
                // one would be read as code after a lexer error.
                let body = b[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || b"_.-/ ".contains(c)).count();
                if body == 0 || at(i + 1 + body) != b'`' {
                    return Err("malformed escaped identifier".into());
                }
                i += body + 2;
                prev = Prev::Operand;
            }
            b'(' | b'[' | b'{' => {
                if prev == Prev::Operand && c != b'{' {
                    // A call or an index continues the chain on its left.
                    top(&mut frames).links += 1;
                }
                if frames.len() > MAX_NESTING {
                    return Err(format!("expression too deep: brackets nested more than {MAX_NESTING} levels"));
                }
                frames.push(Frame::default());
                prev = Prev::Operator;
                i += 1;
            }
            b')' | b']' | b'}' => {
                if frames.len() > 1 {
                    close(&mut frames);
                }
                prev = Prev::Operand;
                i += 1;
            }
            b'|' | b'&' if at(i + 1) == c => {
                top(&mut frames).separate();
                prev = Prev::Operator;
                i += 2;
            }
            b',' | b':' => {
                top(&mut frames).separate();
                prev = Prev::Operator;
                i += 1;
            }
            b'?' => {
                i += 1;
                if prev == Prev::Operator {
                    // Optional syntax (`a.?b`, `x[?0]`, `[?e]`, `{?k: v}`):
                    // part of the token after it. A ternary's `?` follows an
                    // operand.
                    continue;
                }
                let f = top(&mut frames);
                f.separate();
                f.ternaries += 1;
                prev = Prev::Operator;
            }
            b'!' | b'-' if unary => {
                // Unary `!`/`-` runs are one parse-tree node (and collapse in
                // pairs): no link.
                if unary_run != 0 && unary_run != c {
                    return Err(format!("Syntax error: `!` and `-` mixed in one run of unary operators at byte {i}"));
                }
                unary_run = c;
                i += 1;
            }
            _ => {
                // A binary operator (`+ - * / % < <= > >= == !=`) or a member
                // selection: one link. Anything else is for the parser to
                // refuse; counting it as a link only errs on the safe side.
                top(&mut frames).links += 1;
                let two = matches!((c, at(i + 1)), (b'<' | b'>' | b'=' | b'!', b'='));
                i += if two { 2 } else { 1 };
                prev = Prev::Operator;
            }
        }
    }
    while frames.len() > 1 {
        close(&mut frames);
    }
    let depth = frames[0].finish();
    if depth > MAX_PARSE_DEPTH {
        return Err(format!(
            "expression too deep: more than {MAX_PARSE_DEPTH} levels of operators, member selections, \
             indexes and calls (a bracket or ternary counts {BRACKET_COST})"
        ));
    }
    Ok(())
}

fn top(frames: &mut [Frame]) -> &mut Frame {
    let last = frames.len() - 1;
    &mut frames[last]
}

/// Pops the innermost frame into its parent's current segment.
fn close(frames: &mut Vec<Frame>) {
    if let Some(inner) = frames.pop() {
        let cost = BRACKET_COST + inner.finish();
        let parent = top(frames);
        parent.child = parent.child.max(cost);
    }
}

/// CEL's string prefixes (`STRING` may be raw, `BYTES` is `b` then a
/// `STRING`): `r`, `b`, `br` in either case. Any other word before a quote
/// is an identifier (`rb'x'` is `rb` then `'x'`).
fn is_string_prefix(word: &[u8]) -> bool {
    let lower: Vec<u8> = word.iter().map(u8::to_ascii_lowercase).collect();
    matches!(lower.as_slice(), b"r" | b"b" | b"br")
}

/// The index just past the string literal opening at `i` (single, double or
/// triple quotes; escapes unless raw), exactly as CEL's lexer reads it. A
/// literal the lexer would not accept (unterminated, a bad escape, a line
/// break in a one-line literal) is refused here: the lexer would skip a
/// character and read the rest as code, which this scan must not mistake for
/// text.
fn skip_string(b: &[u8], mut i: usize, raw: bool) -> Result<usize, String> {
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    i += if triple { 3 } else { 1 };
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && !raw {
            i += escape_len(&b[i..])
                .ok_or_else(|| format!("invalid escape sequence in a string literal at byte {i}"))?;
            continue;
        }
        if triple {
            if c == q && b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q) {
                return Ok(i + 3);
            }
        } else if c == q {
            return Ok(i + 1);
        } else if c == b'\n' || c == b'\r' {
            break;
        }
        i += 1;
    }
    Err("unterminated string literal".into())
}

/// The length of the escape sequence at the start of `s` (`\n`, `\x41`,
/// `\101`, `\u00e9`, `\U0001F600`), if CEL's lexer accepts it.
fn escape_len(s: &[u8]) -> Option<usize> {
    let hex = |from: usize, n: usize| s.get(from..from + n).is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit));
    match s.get(1)? {
        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`' => Some(2),
        b'0'..=b'3' => {
            let oct = s.get(2..4).is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
            oct.then_some(4)
        }
        b'x' | b'X' => hex(2, 2).then_some(4),
        b'u' => hex(2, 4).then_some(6),
        b'U' => hex(2, 8).then_some(10),
        _ => None,
    }
}

/// The index just past the number literal at `i`, as CEL's lexer reads it:
/// `0x1F`, `12`, `12u`, `1.5`, `.5`, `1e-3`, `2.0E+5`. A `.` not followed by a
/// digit is not part of the number (`1.a` is a member selection).
fn skip_number(b: &[u8], mut i: usize) -> usize {
    let digits = |b: &[u8], mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
    } else {
        i = digits(b, i);
        if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i = digits(b, i + 1);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            if b.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
                i = digits(b, i + 1 + sign);
            }
        }
    }
    if matches!(b.get(i), Some(b'u' | b'U')) {
        i += 1;
    }
    i
}

/// The children of an AST node, in evaluation order (comprehension parts
/// first to last). Every walk over the AST goes through this or
/// [`children_mut`], so a new node kind is handled in one place.
pub(super) fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    let mut out: Vec<&IdedExpr> = Vec::new();
    match &e.expr {
        Expr::Call(c) => {
            out.extend(c.target.as_deref());
            out.extend(c.args.iter());
        }
        Expr::Select(s) => out.push(&s.operand),
        Expr::Comprehension(c) => out.extend([&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]),
        Expr::List(l) => out.extend(l.elements.iter()),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    out.extend([&me.key, &me.value]);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(fe) => out.push(&fe.value),
                    EntryExpr::MapEntry(me) => out.extend([&me.key, &me.value]),
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    out
}

/// [`children`], mutably.
pub(super) fn children_mut(e: &mut IdedExpr) -> Vec<&mut IdedExpr> {
    let mut out: Vec<&mut IdedExpr> = Vec::new();
    match &mut e.expr {
        Expr::Call(c) => {
            out.extend(c.target.as_deref_mut());
            out.extend(c.args.iter_mut());
        }
        Expr::Select(s) => out.push(&mut s.operand),
        Expr::Comprehension(c) => {
            out.extend([&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result])
        }
        Expr::List(l) => out.extend(l.elements.iter_mut()),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let EntryExpr::MapEntry(me) = &mut entry.expr {
                    out.extend([&mut me.key, &mut me.value]);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                match &mut entry.expr {
                    EntryExpr::StructField(fe) => out.push(&mut fe.value),
                    EntryExpr::MapEntry(me) => out.extend([&mut me.key, &mut me.value]),
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    out
}

/// The iterative post-parse check: AST depth ([`MAX_AST_DEPTH`]), size
/// ([`MAX_AST_NODES`]) and comprehension nesting
/// ([`MAX_COMPREHENSION_NESTING`]).
pub fn check_ast(root: &IdedExpr) -> Result<(), String> {
    // (node, depth, comprehensions whose loop it is in)
    let mut stack: Vec<(&IdedExpr, usize, usize)> = vec![(root, 1, 0)];
    let mut nodes = 0usize;
    while let Some((e, depth, loops)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_AST_NODES {
            return Err(format!("expression too large: more than {MAX_AST_NODES} nodes once macros are expanded"));
        }
        if depth > MAX_AST_DEPTH {
            return Err(format!("expression too deep: its syntax tree is more than {MAX_AST_DEPTH} levels deep"));
        }
        if let Expr::Comprehension(c) = &e.expr {
            let inner = loops + 1;
            if inner > MAX_COMPREHENSION_NESTING {
                return Err(format!(
                    "expression too costly: comprehensions (all, exists, exists_one, map, filter) nested more \
                     than {MAX_COMPREHENSION_NESTING} deep"
                ));
            }
            // The range and the initial accumulator run once; the loop
            // condition and step run inside this comprehension. The range
            // sits one level lower once `instrument` wraps it in [`CHARGE`].
            stack.extend([(&c.iter_range, depth + 2, loops), (&c.accu_init, depth + 1, loops)]);
            // The step sits one level lower too: `instrument` wraps what a
            // `map`/`filter` appends in [`budget::RETAIN`] (counted for
            // every step, which errs on the safe side).
            stack.extend([(&c.loop_cond, depth + 1, inner), (&c.loop_step, depth + 2, inner)]);
            stack.push((&c.result, depth + 1, loops));
            continue;
        }
        // `format`'s argument list is wrapped in [`budget::FORMAT_ARGS`], the
        // string a scanning function reads in a loop in [`budget::READ`].
        let below = match &e.expr {
            Expr::Call(c) if c.func_name == "format" && c.target.is_some() => 2,
            Expr::Call(c) if loops > 0 && reads_its_string(c) => 2,
            _ => 1,
        };
        for child in children(e) {
            stack.push((child, depth + below, loops));
        }
    }
    Ok(())
}

/// Comprehension iterations one evaluation may run, all comprehensions and
/// nesting levels together: cel-cpp's default `comprehension_max_iterations`
/// (eval/public/cel_options.h), which Istio's stats filter runs with.
pub const MAX_ITERATIONS: usize = 10_000;

/// The function every comprehension's range is wrapped in (not callable
/// from source: `@` cannot start an identifier).
pub(super) const CHARGE: &str = "@meshwasm_iterations";

thread_local! {
    static ITERATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Starts an evaluation's iteration budget afresh.
pub(super) fn reset_iterations() {
    ITERATIONS.with(|c| c.set(0));
}

/// Rewrites the parsed expression so that evaluating it stays within its
/// budgets: every comprehension's range is wrapped in [`CHARGE`] (charged to
/// the iteration budget before the loop runs); `_+_`, `replace` and `join`
/// become their checked overloads and `format`'s arguments are charged
/// (`budget`); what a `map`/`filter` appends is charged as it is kept.
/// Recursive: called only after [`check_ast`] bounded the depth, which
/// counts the levels added here.
pub(super) fn instrument(e: &mut IdedExpr) {
    instrument_in(e, false);
}

/// Functions whose work is linear in the string they are called on (they
/// copy it, or convert code-point indexes): inside a comprehension's loop
/// the string is charged to the byte budget on every call, so 10,000
/// iterations over a 60 KB header cannot take seconds (measured before:
/// `lowerAscii` 1.2 s, `substring` 4.5 s per request under host-sim).
const READS_ITS_STRING: &[&str] = &[
    "lowerAscii",
    "upperAscii",
    "trim",
    "reverse",
    "substring",
    "charAt",
    "split",
    "indexOf",
    "lastIndexOf",
    "contains",
    "size",
    "quote",
    "string",
    "bytes",
];

fn reads_its_string(c: &CallExpr) -> bool {
    READS_ITS_STRING.contains(&c.func_name.as_str()) && (c.target.is_some() || c.args.len() == 1)
}

fn wrap(name: &str, inner: IdedExpr) -> IdedExpr {
    IdedExpr {
        id: inner.id,
        expr: Expr::Call(CallExpr { target: None, func_name: name.to_string(), args: vec![inner] }),
    }
}

fn instrument_in(e: &mut IdedExpr, in_loop: bool) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            let range = std::mem::take(&mut c.iter_range);
            c.iter_range = wrap(CHARGE, range);
            retain_appended(&mut c.loop_step, &c.accu_var);
            for part in [&mut c.iter_range, &mut c.accu_init, &mut c.result] {
                instrument_in(part, in_loop);
            }
            for part in [&mut c.loop_cond, &mut c.loop_step] {
                instrument_in(part, true);
            }
            return;
        }
        Expr::Call(c) => {
            if in_loop && reads_its_string(c) {
                // `strings.quote(s)` names its namespace in the target: the
                // string is the argument, as in `size(s)` and `string(s)`.
                let read = match c.target.as_deref_mut() {
                    Some(t) if c.func_name != "quote" => t,
                    _ => &mut c.args[0],
                };
                let inner = std::mem::take(read);
                *read = wrap(budget::READ, inner);
            }
            match (c.func_name.as_str(), c.target.is_some(), c.args.len()) {
                // `@result + [x]` (the step of `map` and `filter`) is left as
                // it is: the interpreter appends it in place, and
                // `retain_appended` charged `x`.
                (ADD, false, 2) if !matches!(&c.args[0].expr, Expr::Ident(n) if n.starts_with('@')) => {
                    c.func_name = budget::ADD.to_string();
                }
                ("replace", true, 2 | 3) | ("join", true, 0 | 1) => {
                    // A member call becomes a global one, the target first:
                    // the same depth.
                    let checked = if c.func_name == "replace" { budget::REPLACE } else { budget::JOIN };
                    if let Some(target) = c.target.take() {
                        c.args.insert(0, *target);
                    }
                    c.func_name = checked.to_string();
                }
                ("format", true, 1) => {
                    let list = std::mem::take(&mut c.args[0]);
                    c.args[0] = wrap(budget::FORMAT_ARGS, list);
                }
                _ => {}
            }
        }
        _ => {}
    }
    for child in children_mut(e) {
        instrument_in(child, in_loop);
    }
}

/// Wraps each element a comprehension step appends to its accumulator
/// (`@result + [x]`, possibly under the filter's `cond ? ... : @result`) in
/// [`budget::RETAIN`].
fn retain_appended(step: &mut IdedExpr, accu: &str) {
    if let Expr::Call(c) = &mut step.expr {
        if c.func_name == ADD && c.target.is_none() && c.args.len() == 2 {
            let is_accu = matches!(&c.args[0].expr, Expr::Ident(n) if n == accu);
            if let (true, Expr::List(l)) = (is_accu, &mut c.args[1].expr) {
                for el in &mut l.elements {
                    let inner = std::mem::take(el);
                    *el = wrap(budget::RETAIN, inner);
                }
            }
        } else if c.func_name == CONDITIONAL && c.args.len() == 3 {
            for branch in &mut c.args[1..] {
                retain_appended(branch, accu);
            }
        }
    }
}

/// [`CHARGE`]: the range itself, once its size fits the budget; an error
/// (which the caller reads as `unknown`/unset) once the evaluation has run
/// [`MAX_ITERATIONS`].
fn charge<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let range = args.pop().ok_or_else(|| ExecutionError::function_error(CHARGE, "no range"))?;
    let mut size = 0usize;
    if let Some(iterable) = range.as_iterable() {
        let mut items = iterable.iter();
        while items.next().is_some() {
            size += 1;
        }
    }
    let total = ITERATIONS.with(|c| {
        let total = c.get().saturating_add(size);
        c.set(total);
        total
    });
    if total > MAX_ITERATIONS {
        return Err(ExecutionError::function_error(
            "comprehension",
            format!("more than {MAX_ITERATIONS} comprehension iterations in one evaluation"),
        ));
    }
    Ok(range)
}

/// Registers [`CHARGE`] for any range type.
pub(super) fn extension(env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    env.add_overload(CHARGE, CHARGE, vec![cel::common::types::DYN_TYPE], charge)
}
