//! Tests of CEL compilation, evaluation and values.

use super::values::duration_string;
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
        ("node.metadata", AttrValue::Map(vec![("MESH_ID".into(), s("mesh1")), ("N".into(), AttrValue::Double(2.0))])),
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
    assert_eq!(refs("node.metadata['MESH_ID']"), vec![p(&["node", "metadata", "MESH_ID"])]);
    // An integer index continues the path too (Envoy resolves a list
    // element by its position); any other index stops it.
    assert_eq!(
        refs("xds.cluster_metadata.filter_metadata.istio.services[0].name"),
        vec![p(&["xds", "cluster_metadata", "filter_metadata", "istio", "services", "0", "name"])]
    );
    assert_eq!(refs("request.headers[request.method]"), vec![p(&["request", "headers"]), p(&["request", "method"])]);
    assert_eq!(refs("[1][0]"), Vec::<Vec<String>>::new());
    assert_eq!(refs("upstream_peer.istio_version"), vec![p(&["upstream_peer", "istio_version"])]);
    assert_eq!(refs("request.headers['x-user'] == 'a'"), vec![p(&["request", "headers", "x-user"])]);
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
    // Indexing by a literal continues the path: one header, one metadata key.
    assert_eq!(*counting.calls.borrow(), vec!["request.method", "request.headers.x-user", "node.metadata.MESH_ID"]);
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
    // A list element by its position (Istio's `...istio.services[0].name`):
    // the host is asked for the element's path, the value indexed by 0.
    let m = attrs(&[("xds.cluster_metadata.filter_metadata.istio.services.0.name", s("server"))]);
    assert_eq!(eval("xds.cluster_metadata.filter_metadata.istio.services[0].name", &m), Ok(s("server")));
    assert_eq!(eval("xds.cluster_metadata.filter_metadata.istio.services[0]['name']", &m), Ok(s("server")));
    assert!(eval("xds.cluster_metadata.filter_metadata.istio.services[1].name", &m).is_err());
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
    regex::clear_cache();
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
    // Matching costs the input's length times the regex's size: a big one is
    // refused, at compile time when literal, at evaluation when not.
    let e = Expression::compile("request.url_path.matches('[a-z]{1000}x')").unwrap_err();
    assert!(e.contains(&MAX_REGEX_SIZE.to_string()), "{e}");
    assert!(e.contains("size limit"), "{e}");
    let big = attrs(&[("p", s("(?:a{50}){50}x")), ("request.method", s("GET"))]);
    assert!(eval("request.method.matches(p)", &big).unwrap_err().contains("size limit"));
    assert!(Expression::compile("request.url_path.matches('^/[a-z0-9-]{1,64}/items/[0-9]+$')").is_ok());
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
    env.add_extension(crate::cel::limits::extension).unwrap();
    env.add_extension(budget::extension).unwrap();
}

/// The pre-parse scan and the AST check refuse, with the limit named, what
/// would exhaust the VM's stacks; nothing here parses deeply (native tests
/// run on a 2 MiB thread).
mod limits {
    use super::*;

    fn refused(src: &str) -> String {
        Expression::compile(src).expect_err(src)
    }

    #[test]
    fn chains_past_the_parse_depth_are_refused_before_parsing() {
        let n = MAX_PARSE_DEPTH + 1;
        for src in [
            format!("1{}", " + 1".repeat(n)),
            format!("x{}", " == x".repeat(n)),
            format!("request{}", ".a".repeat(n)),
            format!("request.headers{}", "['a']".repeat(n)),
            format!("'a'{}", ".f()".repeat(n)),
            format!("1{}", "*1".repeat(n)),
            format!("1.a{}", ".a".repeat(n)),
        ] {
            let e = refused(&src);
            assert!(e.contains(&format!("more than {MAX_PARSE_DEPTH} levels")), "{src:.40}: {e}");
        }
    }

    #[test]
    fn brackets_and_ternaries_count_as_descents() {
        let deep = "(".repeat(MAX_NESTING + 1) + "1" + &")".repeat(MAX_NESTING + 1);
        assert!(refused(&deep).contains(&format!("brackets nested more than {MAX_NESTING}")));
        let at = "(".repeat(MAX_NESTING) + "1" + &")".repeat(MAX_NESTING);
        assert_eq!(eval(&at, &BTreeMap::new()), Ok(AttrValue::Int(1)));
        for open in ["[", "{'a': ", "size("] {
            let src = open.repeat(MAX_NESTING + 1);
            assert!(refused(&src).contains("brackets nested"), "{open}");
        }
        // Each ternary nests the rest of the expression one descent deeper.
        let ternaries = MAX_PARSE_DEPTH / BRACKET_COST + 1;
        let src = "true ? 1 : ".repeat(ternaries) + "0";
        assert!(refused(&src).contains("levels"), "{ternaries} ternaries");
        // A chain inside brackets adds to the brackets around it.
        let src = "(".repeat(MAX_NESTING) + "1" + &" + 1".repeat(MAX_PARSE_DEPTH) + &")".repeat(MAX_NESTING);
        assert!(refused(&src).contains("levels"));
    }

    #[test]
    fn the_ast_is_bounded_after_parsing() {
        // Parses within the scan's bound, but evaluation would recurse once
        // per `+`.
        let src = format!("1{}", " + 1".repeat(MAX_AST_DEPTH));
        assert!(refused(&src).contains(&format!("more than {MAX_AST_DEPTH} levels deep")), "{src:.40}");
        let at = format!("1{}", " + 1".repeat(MAX_AST_DEPTH - 2));
        assert_eq!(eval(&at, &BTreeMap::new()), Ok(AttrValue::Int(MAX_AST_DEPTH as i64 - 1)));
        // Macros expand: nodes are counted after expansion.
        let many = vec!["x.all(y,y)"; 1400].join(",");
        let e = refused(&format!("[{many}]"));
        assert!(e.contains(&format!("more than {MAX_AST_NODES} nodes")), "{e}");
        // Comprehensions inside comprehensions' loops multiply the work.
        let nested = "[1].all(a, [2].all(b, [3].all(c, a + b + c > 0)))";
        assert!(refused(nested).contains(&format!("nested more than {MAX_COMPREHENSION_NESTING} deep")));
        assert_eq!(eval("[1].all(a, [2].all(b, a + b > 0))", &BTreeMap::new()), Ok(AttrValue::Bool(true)));
        // Side by side, or in the range, is not nesting.
        let side = "[1].all(a, a > 0) && [2].exists(b, b > 1) && [1, 2].map(x, x * 2).filter(y, y > 2).size() == 1";
        assert_eq!(eval(side, &BTreeMap::new()), Ok(AttrValue::Bool(true)));
        assert_eq!(eval("[[1].all(a, a > 0)].all(b, b)", &BTreeMap::new()), Ok(AttrValue::Bool(true)));
        // A comprehension's range is charged through a call (one more level
        // at evaluation), so a chain of them counts two levels each.
        let maps = |k: usize| format!("[1]{}.size()", ".map(a, a)".repeat(k));
        let fits = (MAX_AST_DEPTH - 3) / 2;
        assert_eq!(eval(&maps(fits), &BTreeMap::new()), Ok(AttrValue::Int(1)));
        assert!(refused(&maps(fits + 1)).contains("levels deep"));
    }

    #[test]
    fn flat_constructs_are_not_deep() {
        let empty = BTreeMap::new();
        // `||` and `&&` chains are balanced by the parser.
        let or = vec!["x == 1"; 1000].join(" || ") + " || true";
        assert_eq!(eval(&or, &attrs(&[("x", AttrValue::Int(0))])), Ok(AttrValue::Bool(true)));
        let and = vec!["true"; 2000].join(" && ");
        assert_eq!(eval(&and, &empty), Ok(AttrValue::Bool(true)));
        // Unary runs are one node (and cancel in pairs).
        assert_eq!(eval(&format!("{}true", "!".repeat(3001)), &empty), Ok(AttrValue::Bool(false)));
        assert_eq!(eval(&format!("{}1", "-".repeat(3000)), &empty), Ok(AttrValue::Int(1)));
        assert_eq!(eval(&format!("2 - {}1", "-".repeat(999)), &empty), Ok(AttrValue::Int(3)));
        // Long lists and maps are wide, not deep.
        let list = format!("[{}].size()", vec!["1"; 4000].join(","));
        assert_eq!(eval(&list, &empty), Ok(AttrValue::Int(4000)));
        // Numbers are not member selections.
        let sum = format!("1.5{}", " + 1.5".repeat(MAX_AST_DEPTH - 2));
        assert!(Expression::compile(&sum).is_ok());
    }

    #[test]
    fn literals_and_comments_are_skipped() {
        let empty = BTreeMap::new();
        let parens = "(".repeat(200);
        let dots = ".a".repeat(2000);
        for (src, want) in [
            (format!("'{parens}'.size()"), 200),
            (format!("\"{parens}\".size()"), 200),
            (format!("'''{parens}\n{parens}'''.size()"), 401),
            (format!("\"\"\"x'{dots}\"\"\".size()"), 4002),
            (format!("b'{parens}'.size()"), 200),
            // A raw string's backslash escapes nothing: `r'\'` is one
            // backslash, and the `(` run is in the next literal.
            (format!("r'\\'.size() + '{parens}'.size()"), 201),
            (format!("R\"\\\".size() + bR'{parens}'.size()"), 201),
            (format!("'\\'{parens}'.size()"), 201),
            (format!("// {parens}\n'x'.size() // {dots}"), 1),
        ] {
            assert_eq!(eval(&src, &empty), Ok(AttrValue::Int(want)), "{src:.60}");
        }
        // Unterminated literals and stray closers do not upset the scan; the
        // parser refuses them.
        for src in ["'((((", "'''((((", "r'\\", ")))", "]]]1", "`a", "`a$`"] {
            assert!(Expression::compile(src).is_err(), "{src}");
        }
        // A literal the lexer would reject is refused by the scan: after a
        // lexer error the rest would be parsed as code, unscanned.
        for (src, why) in [
            (format!("'\\q{parens}'"), "invalid escape"),
            (format!("'\\x4{parens}'"), "invalid escape"),
            (format!("'a\n{parens}'"), "unterminated"),
            (format!("r'{parens}"), "unterminated"),
            (format!("`a$`{parens}"), "escaped identifier"),
        ] {
            let e = refused(&src);
            assert!(e.contains(why), "{src:.20}: {e}");
        }
        assert_eq!(eval("'\\x41\\101\\u0041\\U00000041\\n'.size()", &empty), Ok(AttrValue::Int(5)));
    }
}

/// Comprehensions share one budget of iterations per evaluation (cel-cpp's
/// default, which Istio's stats filter runs with); past it the evaluation is
/// an error, not a stall.
#[test]
fn comprehension_iterations_are_budgeted() {
    let list = |n: usize| format!("[{}]", (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    let empty = BTreeMap::new();
    // 100 outer iterations, each running 99 inner ones: exactly the budget.
    let at = Expression::compile(&format!("{}.all(x, {}.all(y, y >= 0))", list(100), list(99))).unwrap();
    assert_eq!(at.evaluate(&empty), Ok(AttrValue::Bool(true)));
    assert_eq!(at.evaluate(&empty), Ok(AttrValue::Bool(true)), "the budget is per evaluation");
    let over = Expression::compile(&format!("{}.all(x, {}.all(y, y >= 0))", list(100), list(100))).unwrap();
    let e = over.evaluate(&empty).unwrap_err();
    assert!(e.contains(&format!("more than {MAX_ITERATIONS} comprehension iterations")), "{e}");
    // Side by side comprehensions share it; map and filter count too.
    let side = Expression::compile("xs.map(x, x).size() + xs.filter(x, x > 0).size()").unwrap();
    let half = |n: usize| attrs(&[("xs", AttrValue::List(vec![AttrValue::Int(1); n]))]);
    assert_eq!(side.evaluate(&half(5000)), Ok(AttrValue::Int(10_000)));
    assert!(side.evaluate(&half(5001)).unwrap_err().contains("iterations"));
    // Ranges from attributes are charged by their size at run time.
    let e = Expression::compile("xs.exists(x, x == 1)").unwrap();
    let small = attrs(&[("xs", AttrValue::List(vec![AttrValue::Int(1); 10]))]);
    assert_eq!(e.evaluate(&small), Ok(AttrValue::Bool(true)));
    let big = attrs(&[("xs", AttrValue::List(vec![AttrValue::Int(0); MAX_ITERATIONS + 1]))]);
    assert!(e.evaluate(&big).unwrap_err().contains("iterations"));
    let e = Expression::compile("m.all(k, k != '')").unwrap();
    let map =
        attrs(&[("m", AttrValue::Map((0..MAX_ITERATIONS + 1).map(|i| (i.to_string(), AttrValue::Null)).collect()))]);
    assert!(e.evaluate(&map).unwrap_err().contains("iterations"));
    assert_eq!(eval("size(xs) > 0", &big), Ok(AttrValue::Bool(true)), "only comprehensions are charged");
}

/// A deterministic xorshift generator: `next(n)` is in `0..n`.
fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

/// Random token soup, biased towards deep chains and brackets, never gets
/// past the limits into a stack overflow (this test would crash the test
/// binary: unoptimized native frames are larger than the release wasm ones
/// the limits were measured on) and never panics.
#[test]
fn random_token_soup_is_refused_or_bounded() {
    const TOKENS: &[&str] = &[
        "a",
        ".b",
        "['k']",
        "[0]",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        " + 1",
        " == x",
        " in m",
        "?",
        ":",
        " || ",
        " && ",
        ", ",
        "'s'",
        "'''t'''",
        "r'\\'",
        "b'\\x41'",
        "!",
        "-",
        "size(",
        ".f(",
        "x.all(y, ",
        "1.5",
        "//c\n",
        "\"q\\\"\"",
        "`e.f`",
        "?.g",
        "1.a",
    ];
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let a = request("GET", "/x");
    let (mut compiled, mut refused_deep) = (0, 0);
    for round in 0..400 {
        let len = 50 + next(4000);
        // Runs of one token make chains and nesting; mixing makes the rest.
        let mut src = String::new();
        while src.len() < len {
            let t = TOKENS[next(TOKENS.len())];
            for _ in 0..1 + next(if round % 2 == 0 { 4 } else { 400 }) {
                src.push_str(t);
            }
        }
        match Expression::compile(&src) {
            Ok(e) => {
                compiled += 1;
                let _ = e.evaluate(&a);
            }
            Err(e) if e.contains("too deep") || e.contains("too large") || e.contains("too costly") => {
                refused_deep += 1
            }
            Err(_) => {}
        }
    }
    assert!(refused_deep > 50, "the soup reaches the limits ({refused_deep} refused as too deep)");
    println!("soup: {compiled} compiled, {refused_deep} refused as too deep or large, of 400");
}

/// A 60,000-byte `Host` (Envoy's default header limit is 60 KiB): what a
/// client can send to every expression that reads it.
fn big_host() -> BTreeMap<String, AttrValue> {
    attrs(&[("request.host", s(&"a".repeat(60_000))), ("request.method", s("GET"))])
}

fn range(n: usize) -> String {
    format!("[{}]", (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(","))
}

/// Evaluates within `secs` seconds (natively, unoptimized), with the error.
fn fails_fast(src: &str, a: &dyn AttributeSource, secs: f64) -> String {
    let e = Expression::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let start = std::time::Instant::now();
    let err = e.evaluate(a).expect_err(src);
    let took = start.elapsed().as_secs_f64();
    assert!(took < secs, "{src}: {took:.2} s");
    err
}

/// The checked overloads `instrument` substitutes compute what the strings
/// extension and the interpreter did.
#[test]
fn checked_overloads_keep_their_meaning() {
    let a = request("GET", "/api/catalog");
    for (src, want) in [
        ("'aaa'.replace('a', 'b')", s("bbb")),
        ("'aaa'.replace('a', 'b', 2)", s("bba")),
        ("'aaa'.replace('a', 'b', -1)", s("bbb")),
        ("'aaa'.replace('a', 'b', 0)", s("aaa")),
        ("'abc'.replace('', '-')", s("-a-b-c-")),
        ("'héllo'.replace('é', 'e')", s("hello")),
        ("['a', 'b'].join('-')", s("a-b")),
        ("[].join(',')", s("")),
        ("['x'].join()", s("x")),
        ("'%s-%d'.format(['a', 1])", s("a-1")),
        ("'a' + 'b' + request.method", s("abGET")),
        ("b'a' + b'b' == b'ab'", AttrValue::Bool(true)),
        ("1 + 2", AttrValue::Int(3)),
        ("1u + 2u == 3u", AttrValue::Bool(true)),
        ("1.5 + 1.0", AttrValue::Double(2.5)),
        ("[1] + [2, 3] == [1, 2, 3]", AttrValue::Bool(true)),
        ("duration('1s') + duration('500ms') == duration('1.5s')", AttrValue::Bool(true)),
        (
            "timestamp('2024-01-01T00:00:00Z') + duration('1h') == timestamp('2024-01-01T01:00:00Z')",
            AttrValue::Bool(true),
        ),
        ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", AttrValue::Bool(true)),
        ("[1, 2, 3].filter(x, x > 1) == [2, 3]", AttrValue::Bool(true)),
        ("[1, 2, 3].map(x, x > 1, [x]) == [[2], [3]]", AttrValue::Bool(true)),
        ("{'k': 'v'}.map(k, k + '!') == ['k!']", AttrValue::Bool(true)),
    ] {
        assert_eq!(eval(src, &a), Ok(want), "{src}");
    }
    for (src, why) in [
        ("9223372036854775807 + 1", "Overflow"),
        ("1 + 'a'", ""),
        ("[1].join()", "string"),
        ("'a'.replace(1, 'b')", ""),
    ] {
        let e = eval(src, &a).expect_err(src);
        assert!(e.contains(why), "{src}: {e}");
    }
    // `+` keeps the meaning the interpreter gave it on every type pair.
    assert!(eval("{'a': 1} + {'b': 2}", &a).is_err(), "maps do not add");
}

/// What the review found unbounded: each would build gigabytes or run for
/// minutes from one request; each now fails that evaluation (the plugins'
/// `unknown`/unset) within the byte or regex-work budget, quickly.
#[test]
fn evaluation_memory_and_regex_work_are_budgeted() {
    let host = big_host();
    // |h|·|h| bytes (3.6 GB) from one call.
    let e = fails_fast("request.host.replace('', request.host)", &host, 1.0);
    assert!(e.contains(&format!("more than {MAX_EVAL_BYTES} bytes")), "{e}");
    // 99 × 99 copies of the host: ~1.2 GB through join.
    let e = fails_fast(&format!("{r}.map(x, {r}.map(y, request.host).join()).join()", r = range(99)), &host, 5.0);
    assert!(e.contains("bytes built"), "{e}");
    // String + in nested comprehensions, kept by map: 9,801 × 120 KB.
    let e = fails_fast(&format!("{r}.map(x, {r}.map(y, request.host + request.host))", r = range(99)), &host, 5.0);
    assert!(e.contains("bytes built"), "{e}");
    // A linear function kept by map is charged as it is kept.
    let e = fails_fast(&format!("{r}.map(x, {r}.map(y, request.host.lowerAscii()))", r = range(99)), &host, 5.0);
    assert!(e.contains("bytes built"), "{e}");
    // format of a list that holds the host 99 times.
    let e = fails_fast(&format!("'%s'.format([{r}.map(y, request.host)])", r = range(99)), &host, 5.0);
    assert!(e.contains("bytes built"), "{e}");
    // List + of such lists, nested.
    let e = fails_fast(
        &format!("{r}.all(x, ({r}.map(y, request.host) + [request.host]).size() > 0)", r = range(99)),
        &host,
        5.0,
    );
    assert!(e.contains("bytes built"), "{e}");
    // ~9,900 matches of a 60 KB header: minutes before, now the regex work
    // budget stops it within the first few.
    let e = fails_fast(
        &format!("{r}.all(x, {r}.all(y, request.host.matches('[a-z]{{100}}x') == false))", r = range(99)),
        &host,
        5.0,
    );
    assert!(e.contains(&format!("more than {MAX_MATCH_WORK} units of regex work")), "{e}");
    // Patterns known only at run time: every compile is charged too.
    let e = fails_fast(
        &format!("{r}.all(x, {r}.all(y, !request.method.matches(string(x) + '-' + string(y))))", r = range(99)),
        &host,
        10.0,
    );
    assert!(e.contains("regex work"), "{e}");
    // Functions that read the whole string, in loops: each call charged its
    // length (before: 1.2 s for lowerAscii, 4.5 s for substring per request
    // under host-sim).
    for call in ["lowerAscii()", "substring(1)", "size()", "charAt(5)", "indexOf('b')", "split('.')"] {
        let src = format!("{r}.all(x, {r}.all(y, string(request.host.{call}) != ''))", r = range(99));
        let e = fails_fast(&src, &host, 5.0);
        assert!(e.contains("bytes built"), "{call}: {e}");
    }
    let e = fails_fast(&format!("{r}.all(x, {r}.all(y, size(request.host) > 0))", r = range(99)), &host, 5.0);
    assert!(e.contains("bytes built"), "{e}");
    let e = fails_fast(&format!("{r}.exists(x, strings.quote(request.host) == '')", r = range(99)), &host, 5.0);
    assert!(e.contains("bytes built"), "{e}");
    // Within the budgets, the same shapes evaluate: a small host, the same
    // expressions, and one full-size replace.
    let small = attrs(&[("request.host", s("reviews")), ("request.method", s("GET"))]);
    let ok = |src: &str, a: &dyn AttributeSource| Expression::compile(src).unwrap().evaluate(a);
    assert!(ok(&format!("{r}.map(x, {r}.map(y, request.host).join()).join()", r = range(30)), &small).is_ok());
    assert!(ok(&format!("{r}.all(x, {r}.all(y, request.host.matches('^rev')))", r = range(99)), &small).is_ok());
    assert_eq!(
        ok(
            &format!("{r}.all(x, {r}.all(y, request.host.lowerAscii().substring(1).size() == 6))", r = range(99)),
            &small
        ),
        Ok(AttrValue::Bool(true))
    );
    assert_eq!(ok("request.host.lowerAscii().size()", &host), Ok(AttrValue::Int(60_000)), "outside loops: free");
    assert_eq!(
        ok("request.host.replace('a', 'bb').size()", &host),
        Ok(AttrValue::Int(120_000)),
        "one full-size call fits"
    );
    assert_eq!(ok("request.host.matches('^a+$')", &host), Ok(AttrValue::Bool(true)));
    // The budgets are per evaluation.
    let e = Expression::compile("(request.host + request.host).size()").unwrap();
    for _ in 0..100 {
        assert_eq!(e.evaluate(&host), Ok(AttrValue::Int(120_000)));
    }
}

/// What `check_ast` bounds is the instrumented AST that evaluation recurses
/// on: for the largest expressions of each shape that compile, the depth
/// after `instrument` (budget calls added) stays within `MAX_AST_DEPTH`.
#[test]
fn instrumented_depth_stays_within_the_limit() {
    fn depth(e: &IdedExpr) -> usize {
        1 + crate::cel::limits::children(e).into_iter().map(depth).max().unwrap_or(0)
    }
    let shapes: Vec<Box<dyn Fn(usize) -> String>> = vec![
        Box::new(|k| format!("'A'{}", ".lowerAscii()".repeat(k))),
        Box::new(|k| format!("[1].all(x, 'A'{} == 'a')", ".lowerAscii()".repeat(k))),
        Box::new(|k| format!("[1].map(x, 'A'{})", ".substring(0)".repeat(k))),
        Box::new(|k| format!("[1].all(x, size(x{}) > 0)", " + 1".repeat(k))),
        Box::new(|k| format!("[1].map(x, '%s'{})", ".format([x])".repeat(k))),
        Box::new(|k| format!("['a'].filter(x, x{} != '')", ".replace('a', 'b')".repeat(k))),
        Box::new(|k| format!("[1]{}.size()", ".map(a, [a]).map(a, a.size())".repeat(k))),
        Box::new(|k| format!("[[1]].all(x, x.all(y, string(y){} != ''))", ".lowerAscii()".repeat(k))),
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let largest = (0..200).take_while(|&k| Expression::compile(&shape(k)).is_ok()).last();
        let k = largest.unwrap_or_else(|| panic!("shape {i}: nothing compiles: {:?}", Expression::compile(&shape(0))));
        let e = Expression::compile(&shape(k)).unwrap();
        let d = depth(&e.expr);
        assert!(d <= MAX_AST_DEPTH, "shape {i} with {k}: instrumented depth {d}");
        assert!(k > 10, "shape {i}: only {k} fit");
    }
}

/// We parse with the crate's Pratt parser; its ANTLR parser is the one
/// cel-go's grammar is generated into, so it is the reference: both must
/// accept and refuse the same sources and build the same AST (node ids
/// aside, which only number the nodes). Set `MESHWASM_CEL_CORPUS` to a
/// directory of sources (e.g. the fuzz corpus) to compare those too.
#[test]
fn parsers_agree() {
    fn ast(src: &str, pratt: bool) -> Result<String, ()> {
        let parsed = if pratt {
            cel::parser::PrattParser::new().enable_optional_syntax(true).parse(src)
        } else {
            env().parser().parse(src)
        };
        let ids = regex_lite::Regex::new(r"\bid: \d+").unwrap();
        parsed.map(|e| ids.replace_all(&format!("{e:?}"), "id: _").into_owned()).map_err(|_| ())
    }
    let mut sources: Vec<String> = [
        "request.method.startsWith('GET') ? 1 : 0",
        "request.url_path == '/api/catalog' && request.method == 'GET'",
        "has(request.headers['x-user']) || !(a in [1, 2u, 3.5, -4, 0x1F, 1e3, .5])",
        "request.headers['x-b3-sampled'] == '1' ? 'yes' : 'no'",
        "upstream_peer.labels['app'].value",
        "filter_state['wasm.upstream_peer'].workload",
        "node.metadata['istio.io/metadata'].x[0]",
        "xs.all(x, x > 0) && xs.exists(x, x == 1) && xs.exists_one(x, x == 2)",
        "xs.map(x, x * 2).filter(y, y % 3 != 0).size() <= 10",
        "m.map(k, v, k + v)",
        "{'a': 1, 'b': [true, false, null]}['a'] == 1",
        "google.protobuf.Duration{seconds: 1}",
        ".root.x",
        "a.?b.c[?'d']",
        "[?a, b]",
        "r'raw\\n' + '''triple\n''' + \"\\u00e9\\x41\\101\" + b'\\xff'.string()",
        "'%s=%d'.format(['a', 1])",
        "-(-1) - -2 * 3 / 4 % 5",
        "!!true == !false",
        "a ? b ? c : d : e",
        "timestamp('2020-01-01T00:00:00Z') + duration('1h30m')",
        "size('abc') == 3u && int('5') == 5",
        "`escaped.ident`",
        "1 + ",
        "a.b(",
        "'unterminated",
        "[1, 2,]",
        "{'a': 1,}",
        "1..2",
        "a.1",
        "in",
        "x.all(1, y)",
        "has(a)",
        "18446744073709551615u + 18446744073709551616u",
        "9223372036854775808",
        "-9223372036854775808",
        "!-a",
        "-!a",
        "a - !b",
        "a != -b",
        "!!a && --b > 0",
        "! // c\n -a",
        "a\u{b}== b",
        "'\u{b}' == b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Short random token sequences: mostly well-formed-ish, all shallow.
    const TOKENS: &[&str] = &[
        "a",
        ".b",
        "['k']",
        "[0]",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        " + 1",
        " - ",
        " * 2",
        " == x",
        " != ",
        " < ",
        " >= ",
        " in m",
        " ? ",
        " : ",
        " || ",
        " && ",
        ", ",
        "'s'",
        "'''t'''",
        "r'\\'",
        "b'\\x41'",
        "!",
        "-",
        "size(",
        ".f(",
        "x.all(y, ",
        "x.map(y, ",
        "has(",
        "1.5",
        "2u",
        "//c\n",
        "\"q\\\"\"",
        "`e.f`",
        ".?g",
        "[?0]",
        "null",
        "true",
        "T{f: 1}",
    ];
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..40_000 {
        let tokens = 1 + next(12);
        sources.push((0..tokens).map(|_| TOKENS[next(TOKENS.len())]).collect());
    }
    if let Ok(dir) = std::env::var("MESHWASM_CEL_CORPUS") {
        for entry in std::fs::read_dir(dir).unwrap() {
            if let Ok(s) = String::from_utf8(std::fs::read(entry.unwrap().path()).unwrap()) {
                sources.push(s);
            }
        }
    }
    let (mut accepted, mut compared, mut differ) = (0, 0, Vec::new());
    for src in &sources {
        // What the depth limits refuse never reaches a parser; the scan's
        // syntax checks stand in for the ANTLR grammar where the Pratt
        // parser is more lenient, so they are compared too.
        let scanned = crate::cel::limits::scan(src);
        if src.len() > MAX_SOURCE_LEN || matches!(&scanned, Err(e) if e.contains("too deep")) {
            continue;
        }
        compared += 1;
        let (antlr, pratt) = (ast(src, false), scanned.map_err(|_| ()).and_then(|()| ast(src, true)));
        match (&antlr, &pratt) {
            (Ok(a), Ok(p)) if a == p => accepted += 1,
            (Err(()), Err(())) => {}
            (Ok(_), Ok(_)) => differ.push(format!("different ASTs: {src:?}")),
            _ => differ.push(format!("accepted by {} only: {src:?}", if antlr.is_ok() { "antlr" } else { "pratt" })),
        }
    }
    differ.sort();
    differ.dedup();
    assert!(differ.is_empty(), "{} disagreements:\n{}", differ.len(), differ.join("\n"));
    println!("parsers agree on {compared} sources, {accepted} of them accepted");
    assert!(accepted > 1_500, "the random sources reach the parsers ({accepted} accepted)");
}

/// A whole-path expression is evaluated by fetching the attribute; the
/// result must be what CEL gives for the same attributes, value or error.
#[test]
fn whole_paths_evaluate_as_cel_does() {
    let a = attrs(&[
        ("request.method", s("GET")),
        ("request.size", AttrValue::Int(-3)),
        ("response.code", AttrValue::Uint(200)),
        ("x.ratio", AttrValue::Double(0.5)),
        ("x.flag", AttrValue::Bool(true)),
        ("x.raw", AttrValue::Bytes(vec![0xff, 0])),
        ("x.none", AttrValue::Null),
        ("x.when", AttrValue::Timestamp(1_600_000_000_000_000_000)),
        ("x.list", AttrValue::List(vec![s("a"), s("b")])),
        ("node.metadata", AttrValue::Map(vec![("MESH_ID".into(), s("mesh1")), ("é".into(), s("ü\n"))])),
        ("upstream_peer.istio_version", s("1.16.0")),
    ]);
    let cases = [
        ("request.method", true),
        ("request.size", true),
        ("response.code", true),
        ("x.ratio", true),
        ("x.flag", true),
        ("x.raw", true),
        ("x.none", true),
        ("x.when", true),
        ("x.list", true),
        ("node.metadata['MESH_ID']", true),
        ("node.metadata['é']", true),
        ("node.metadata['NOPE']", true),
        ("node.metadata", true),
        ("upstream_peer.istio_version", true),
        ("upstream_peer.nope", true),
        ("nope", true),
        ("has(request.method)", false),
        ("x.list[0]", false),
        (".request.method", false),
        ("int.x", false),
        ("request.method + ''", false),
        ("[1].map(m, m.x)", false),
    ];
    for (src, whole) in cases {
        let e = Expression::compile(src).unwrap();
        assert_eq!(e.whole_path.is_some(), whole, "{src}");
        assert_eq!(e.evaluate(&a), e.evaluate_cel(&a), "{src}");
    }
    let value = |src: &str| Expression::compile(src).unwrap().evaluate(&a);
    assert_eq!(value("node.metadata['MESH_ID']"), Ok(s("mesh1")));
    assert_eq!(value("upstream_peer.istio_version"), Ok(s("1.16.0")));
    assert!(value("node.metadata['NOPE']").unwrap_err().contains("NOPE"));
}
