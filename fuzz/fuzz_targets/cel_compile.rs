//! CEL sources as plugin configurations carry them (stats dimensions,
//! attributegen conditions). Asserts: compiling returns Ok or Err, never
//! panics nor overflows the stack (the SDK bounds depth and size before the
//! parser recurses, sdk/src/cel/limits.rs); a compiled expression's source
//! is the input; evaluating it against no attributes and against a small
//! request returns (Ok or Err) without panicking, within the run-time
//! budgets (a slow input shows up as a libFuzzer timeout).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_sdk::attributes::AttrValue;
use meshwasm_sdk::cel::Expression;
use std::collections::BTreeMap;

fn request() -> BTreeMap<String, AttrValue> {
    let mut m = BTreeMap::new();
    m.insert("request.method".to_string(), AttrValue::String("GET".into()));
    m.insert("request.path".to_string(), AttrValue::String("/ratings/1?x=y".into()));
    m.insert("request.host".to_string(), AttrValue::String("ratings.default.svc".into()));
    m.insert("request.headers".to_string(), AttrValue::Map(vec![("x-user".into(), AttrValue::String("alice".into()))]));
    m.insert("response.code".to_string(), AttrValue::Int(200));
    m.insert("connection.mtls".to_string(), AttrValue::Bool(true));
    m
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    let Ok(expr) = Expression::compile(source) else { return };
    assert_eq!(expr.source(), source);
    assert!(expr.references().iter().all(|path| !path.is_empty()));
    let empty: BTreeMap<String, AttrValue> = BTreeMap::new();
    let _ = expr.evaluate(&empty);
    let _ = expr.evaluate_string(&request());
});
