//! Per-evaluation budgets on what CEL may allocate and how long its regex
//! matching may run, so that no request (the client chooses the headers)
//! and no configuration can make one evaluation run for minutes or exhaust
//! the VM's memory (docs/cel.md, "Limits").
//!
//! The `cel` crate allocates without bounds where an output can be much
//! larger than its inputs: `s.replace('', t)` is |s|·|t| bytes, `join` and
//! `format` copy every element of a list that holds the same 60 KB header
//! thousands of times, and string or list `+` inside nested comprehensions
//! copies again on every iteration. [`super::limits::instrument`] rewrites
//! those calls at compile time into the checked overloads below, which
//! charge the size of what they are about to build to [`MAX_EVAL_BYTES`]
//! before building it; the elements a `map` or `filter` keeps are charged
//! as they are appended. Sizes are counted as if every string were copied
//! (shared ones are counted again): an upper bound on what is allocated.
//! Past the budget the call is an evaluation error, which the plugins read
//! as `unknown`/unset, like any other.

use cel::common::types::{CelBytes, CelInt, CelList, CelMap, CelString};
use cel::common::value::{CowVal, Val};
use cel::ExecutionError;
use std::cell::Cell;

/// Bytes one evaluation may build with `+`, `replace`, `join`, `format`,
/// keep in `map`/`filter` results, and read with a string function
/// (`lowerAscii`, `substring`, `size`, ...) inside a comprehension's loop,
/// counted as they are built (so what was built and dropped counts too). Far above what a dimension or a condition
/// needs (a 60 KB header copied ~70 times), far below what a VM holds.
pub const MAX_EVAL_BYTES: usize = 4 * 1024 * 1024;

/// Regex work one evaluation may do, in bytes of input times the compiled
/// regex's size class (`matches`: every match charges its input's length
/// times [`super::functions`]'s size class of its pattern, every compile of
/// a pattern not cached yet the class times 1 KiB). Matching costs up to
/// ~0.55 ns per unit natively (60,000 bytes against an 80,144-byte program
/// in 2.6 s), so this bounds an evaluation's matching at ~0.15 s natively
/// (176 ms measured under host-sim at the budget: docs/cel.md), where the
/// iteration budget alone allowed ~9,900 matches of up to half a second.
pub const MAX_MATCH_WORK: u64 = 1 << 28;

/// What a value costs beyond its bytes: an element of a list or map, a
/// scalar.
pub(super) const ELEMENT_BYTES: usize = 16;

/// What `format` may write for one scalar argument: `%f` with the largest
/// precision (100) of the largest double (309 digits), with room to spare.
const FORMATTED_SCALAR_BYTES: usize = 512;

thread_local! {
    static BYTES: Cell<usize> = const { Cell::new(0) };
    static MATCH_WORK: Cell<u64> = const { Cell::new(0) };
}

/// Starts an evaluation's budgets afresh.
pub(super) fn reset() {
    BYTES.with(|c| c.set(0));
    MATCH_WORK.with(|c| c.set(0));
}

/// Charges `n` bytes about to be built by `function`; an error past
/// [`MAX_EVAL_BYTES`].
pub(super) fn charge_bytes(function: &str, n: usize) -> Result<(), ExecutionError> {
    let total = BYTES.with(|c| {
        let total = c.get().saturating_add(n);
        c.set(total);
        total
    });
    if total > MAX_EVAL_BYTES {
        return Err(ExecutionError::function_error(
            function,
            format!("more than {MAX_EVAL_BYTES} bytes built in one evaluation"),
        ));
    }
    Ok(())
}

/// Charges regex work (see [`MAX_MATCH_WORK`]); an error past it.
pub(super) fn charge_match(work: u64) -> Result<(), ExecutionError> {
    let total = MATCH_WORK.with(|c| {
        let total = c.get().saturating_add(work);
        c.set(total);
        total
    });
    if total > MAX_MATCH_WORK {
        return Err(ExecutionError::function_error(
            "matches",
            format!(
                "more than {MAX_MATCH_WORK} units of regex work (input bytes times program size) in one evaluation"
            ),
        ));
    }
    Ok(())
}

/// An upper bound on the bytes `v` takes once copied or printed: strings and
/// bytes by length, containers by their elements plus [`ELEMENT_BYTES`]
/// each. Stops counting once past `cap` (the caller fails anyway). Recursive
/// on the value's nesting, which the AST depth bounds (values nest only as
/// deeply as the literals and comprehensions that built them).
pub(super) fn deep_size(v: &dyn Val, cap: usize) -> usize {
    if let Some(s) = v.downcast_ref::<CelString>() {
        return s.inner().len();
    }
    if let Some(b) = v.downcast_ref::<CelBytes>() {
        return b.inner().len();
    }
    let mut total = ELEMENT_BYTES;
    if let Some(l) = v.downcast_ref::<CelList>() {
        for item in l.inner() {
            total = total.saturating_add(ELEMENT_BYTES + deep_size(item.as_ref(), cap));
            if total > cap {
                break;
            }
        }
    } else if let Some(m) = v.downcast_ref::<CelMap>() {
        for (k, item) in m.inner() {
            let entry = deep_size(k.inner(), cap).saturating_add(deep_size(item.as_ref(), cap));
            total = total.saturating_add(2 * ELEMENT_BYTES + entry);
            if total > cap {
                break;
            }
        }
    }
    total
}

/// The checked `_+_`: strings, bytes and lists charge their sum before it
/// is built; every other type adds as the interpreter does.
pub(super) const ADD: &str = "@meshwasm_add";
/// The checked `string.replace(from, to[, n])`.
pub(super) const REPLACE: &str = "@meshwasm_replace";
/// The checked `list.join([sep])`.
pub(super) const JOIN: &str = "@meshwasm_join";
/// Wraps `format`'s argument list: charges what the arguments can print to.
pub(super) const FORMAT_ARGS: &str = "@meshwasm_format_args";
/// Wraps each element a `map`/`filter` appends to its result: charges it.
pub(super) const RETAIN: &str = "@meshwasm_retain";
/// Wraps, inside a comprehension's loop, the string a function that reads
/// all of it is called on (`lowerAscii`, `substring`, `size`, ...): charges
/// its length.
pub(super) const READ: &str = "@meshwasm_read";

fn function_error(function: &str, message: &str) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

fn add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [lhs, rhs]: [CowVal<'b, 'v>; 2] = args.try_into().map_err(|_| function_error("_+_", "two operands"))?;
    let grows = |v: &dyn Val| {
        v.downcast_ref::<CelString>().is_some()
            || v.downcast_ref::<CelBytes>().is_some()
            || v.downcast_ref::<CelList>().is_some()
    };
    if grows(lhs.as_ref()) {
        let n = deep_size(lhs.as_ref(), MAX_EVAL_BYTES).saturating_add(deep_size(rhs.as_ref(), MAX_EVAL_BYTES));
        charge_bytes("_+_", n)?;
    }
    let adder = lhs.as_adder().ok_or_else(|| {
        let value = |v: &dyn Val| cel::Value::try_from(v).unwrap_or(cel::Value::Null);
        ExecutionError::UnsupportedBinaryOperator("add", value(lhs.as_ref()), value(rhs.as_ref()))
    })?;
    let sum = adder.add(rhs.as_ref())?.into_owned();
    Ok(CowVal::Owned(sum))
}

fn string_arg<'a, 'v>(v: &'a CowVal<'_, 'v>, function: &str) -> Result<&'a str, ExecutionError> {
    match v.downcast_ref::<CelString>() {
        Some(s) => Ok(s.inner()),
        None => {
            Err(ExecutionError::function_error(function, format!("expected a string, got {}", v.get_type().name())))
        }
    }
}

fn replace<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (this, from, to) = match args.as_slice() {
        [t, f, to] | [t, f, to, _] => {
            (string_arg(t, "replace")?, string_arg(f, "replace")?, string_arg(to, "replace")?)
        }
        _ => return Err(function_error("replace", "expected 2 or 3 arguments")),
    };
    // As the strings extension: the first n occurrences, all when n < 0.
    let limit = match args.get(3) {
        Some(n) => {
            let n = n.downcast_ref::<CelInt>().ok_or_else(|| function_error("replace", "expected an int count"))?;
            usize::try_from(*n.inner()).ok()
        }
        None => None,
    };
    // An empty pattern matches at every character boundary.
    let occurrences = if from.is_empty() { this.chars().count() + 1 } else { this.matches(from).count() };
    let count = limit.map_or(occurrences, |n| n.min(occurrences));
    let out = this.len().saturating_add(count.saturating_mul(to.len())).saturating_sub(count * from.len());
    charge_bytes("replace", out)?;
    let replaced = match limit {
        Some(n) => this.replacen(from, to, n),
        None => this.replace(from, to),
    };
    Ok(CowVal::owned(CelString::from(replaced)))
}

fn join<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (list, sep) = match args.as_slice() {
        [l] => (l, ""),
        [l, s] => (l, string_arg(s, "join")?),
        _ => return Err(function_error("join", "expected 0 or 1 arguments")),
    };
    let list = list.downcast_ref::<CelList>().ok_or_else(|| function_error("join", "expected a list"))?;
    let mut parts: Vec<&str> = Vec::with_capacity(list.inner().len());
    for item in list.inner() {
        match item.downcast_ref::<CelString>() {
            Some(s) => parts.push(s.inner()),
            None => {
                return Err(ExecutionError::function_error(
                    "join",
                    format!("expected a list of strings, found {}", item.get_type().name()),
                ))
            }
        }
    }
    // Saturating: on wasm32 thousands of references to one large string can
    // sum past usize.
    let n = parts
        .iter()
        .fold(0usize, |n, p| n.saturating_add(p.len()))
        .saturating_add(parts.len().saturating_sub(1).saturating_mul(sep.len()));
    charge_bytes("join", n)?;
    Ok(CowVal::owned(CelString::from(parts.join(sep))))
}

/// `format`'s arguments, unchanged, once what they can print to is charged:
/// each at most twice its size (`%x` of a string) or
/// [`FORMATTED_SCALAR_BYTES`].
fn format_args<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let list = args.pop().ok_or_else(|| function_error("format", "no arguments"))?;
    let mut n = 0usize;
    if let Some(l) = list.downcast_ref::<CelList>() {
        for item in l.inner() {
            n = n.saturating_add(FORMATTED_SCALAR_BYTES + 2 * deep_size(item.as_ref(), MAX_EVAL_BYTES));
            if n > MAX_EVAL_BYTES {
                break;
            }
        }
    }
    charge_bytes("format", n)?;
    Ok(list)
}

/// An element a `map` or `filter` keeps, unchanged, once charged.
fn retain<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let item = args.pop().ok_or_else(|| function_error("map", "no element"))?;
    charge_bytes("map", ELEMENT_BYTES + deep_size(item.as_ref(), MAX_EVAL_BYTES))?;
    Ok(item)
}

/// A string or bytes a function is about to read whole, unchanged, once
/// its length is charged; any other value passes free.
fn read<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let item = args.pop().ok_or_else(|| function_error("read", "no value"))?;
    let n = match (item.downcast_ref::<CelString>(), item.downcast_ref::<CelBytes>()) {
        (Some(s), _) => s.inner().len(),
        (_, Some(b)) => b.inner().len(),
        _ => 0,
    };
    if n > 0 {
        charge_bytes("string function", n)?;
    }
    Ok(item)
}

/// Registers the checked overloads (their names cannot be written in CEL
/// source: `@` cannot start an identifier).
pub(super) fn extension(env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    use cel::common::types::{DYN_TYPE, INT_TYPE, LIST_TYPE, STRING_TYPE};
    env.add_overload(ADD, ADD, vec![DYN_TYPE, DYN_TYPE], add)?;
    env.add_overload(REPLACE, "replace3", vec![STRING_TYPE, STRING_TYPE, STRING_TYPE], replace)?;
    env.add_overload(REPLACE, "replace4", vec![STRING_TYPE, STRING_TYPE, STRING_TYPE, INT_TYPE], replace)?;
    env.add_overload(JOIN, "join1", vec![LIST_TYPE], join)?;
    env.add_overload(JOIN, "join2", vec![LIST_TYPE, STRING_TYPE], join)?;
    env.add_overload(FORMAT_ARGS, FORMAT_ARGS, vec![DYN_TYPE], format_args)?;
    env.add_overload(RETAIN, RETAIN, vec![DYN_TYPE], retain)?;
    env.add_overload(READ, READ, vec![DYN_TYPE], read)?;
    Ok(())
}
