//! Reading Envoy's own log: plugin log lines (`wasm log <prefix>: <msg>`),
//! the `wasm` component's trace of every ABI call (used to tell which plugin
//! sent a local reply, made a call or failed), and start-up errors.
//!
//! Envoy is run with `--log-format` [`LOG_FORMAT`] so lines look like
//! `[2026-11-28 09:17:25.564][3673][info][wasm] [context.cc:1151] wasm log my_plugin root vm: text`.
//! Messages spanning several lines (a panic message) continue on lines
//! without that header.

use crate::abi::LogLevel;
use crate::result::LogLine;
use regex::Regex;
use std::sync::OnceLock;

/// The `--log-format` the engine passes to Envoy.
pub const LOG_FORMAT: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v";

/// One log entry (continuation lines folded into `message`).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyLine {
    /// Byte offset of the entry in the log file.
    pub offset: usize,
    pub level: String,
    pub component: String,
    pub message: String,
}

fn header_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^\[[0-9][^\]]*\]\[\d+\]\[(\w+)\]\[([\w.\-]+)\] \[[^\]]*\] ?(.*)$").unwrap())
}

/// Splits log text (starting at byte `base` of the file) into entries. A
/// trailing line without a newline is left for later: it may be half
/// written. Returns the entries and the number of bytes consumed.
pub fn parse(text: &str, base: usize) -> (Vec<EnvoyLine>, usize) {
    let mut out: Vec<EnvoyLine> = Vec::new();
    let mut pos = 0;
    for raw in text.split_inclusive('\n') {
        if !raw.ends_with('\n') {
            break;
        }
        let line = raw.trim_end_matches(['\n', '\r']);
        if let Some(c) = header_re().captures(line) {
            out.push(EnvoyLine {
                offset: base + pos,
                level: c[1].to_string(),
                component: c[2].to_string(),
                message: c[3].to_string(),
            });
        } else if let Some(last) = out.last_mut() {
            last.message.push('\n');
            last.message.push_str(line);
        }
        pos += raw.len();
    }
    (out, pos)
}

/// Envoy's level names to the ABI's.
pub fn level(name: &str) -> LogLevel {
    match name {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warning" | "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Critical,
    }
}

/// What a log entry tells about the plugins.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `proxy_log` output: `wasm log<prefix>: <message>`.
    PluginLog {
        level: LogLevel,
        prefix: String,
        message: String,
    },
    /// `[host->vm] proxy_on_<hook>(args)`: Envoy calls into a plugin.
    HookCall {
        hook: String,
        args: Vec<i64>,
    },
    /// `[host<-vm] proxy_on_<hook> return: ...`.
    HookReturn {
        hook: String,
    },
    /// `[vm->host] env.<fn>(args)`: a plugin calls the host.
    HostCall {
        func: String,
        args: Vec<i64>,
    },
    /// `[vm<-host] env.<fn> return: <value>`.
    HostReturn {
        func: String,
        value: String,
    },
    /// `Function: proxy_on_<hook> failed: <why>`: the plugin trapped.
    Failure {
        message: String,
    },
    Other,
}

fn args(text: &str) -> Vec<i64> {
    text.split(',').filter_map(|a| a.trim().parse().ok()).collect()
}

fn trace_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\[(host->vm|host<-vm|vm->host|vm<-host)\] (?:env\.)?([A-Za-z0-9_]+)(?:\((.*)\)| return: ?(.*))$")
            .unwrap()
    })
}

fn wasm_log_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?s)^wasm log( [^:\n]*)?: (.*)$").unwrap())
}

pub fn event(line: &EnvoyLine) -> Event {
    if line.component != "wasm" {
        return Event::Other;
    }
    if let Some(c) = wasm_log_re().captures(&line.message) {
        return Event::PluginLog {
            level: level(&line.level),
            prefix: c.get(1).map_or("", |m| m.as_str()).trim().to_string(),
            message: c[2].to_string(),
        };
    }
    if let Some(c) = trace_re().captures(&line.message) {
        let name = c[2].to_string();
        return match (&c[1], c.get(3), c.get(4)) {
            ("host->vm", Some(a), _) => Event::HookCall { hook: name, args: args(a.as_str()) },
            ("host<-vm", _, _) => Event::HookReturn { hook: name },
            ("vm->host", Some(a), _) => Event::HostCall { func: name, args: args(a.as_str()) },
            ("vm<-host", _, v) => {
                Event::HostReturn { func: name, value: v.map_or("", |m| m.as_str()).trim().to_string() }
            }
            _ => Event::Other,
        };
    }
    if line.message.starts_with("Function: ") && line.message.contains(" failed: ") {
        // As Envoy prints it, in-VM backtrace included.
        return Event::Failure { message: line.message.clone() };
    }
    Event::Other
}

/// How a plugin is named in Envoy's log prefixes.
#[derive(Debug, Clone)]
pub struct PluginIdent {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub log_level: LogLevel,
    /// Sizes of the plugin and VM configuration: they tell apart plugins
    /// whose root-context prefixes are equal (see [`plugin_logs`]).
    pub config_len: usize,
    pub vm_config_len: usize,
}

impl PluginIdent {
    fn join(parts: &[&str]) -> String {
        parts.iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join(" ")
    }
    /// Prefix of logs from the plugin's stream contexts: `name root_id vm_id`.
    pub fn stream_prefix(&self) -> String {
        Self::join(&[&self.name, &self.root_id, &self.vm_id])
    }
    /// Prefix of logs from its root context (start, configure, ticks):
    /// `root_id vm_id` (observed in Envoy 1.40; the name is missing there).
    pub fn root_prefix(&self) -> String {
        Self::join(&[&self.root_id, &self.vm_id])
    }
}

/// Plugin log lines among `lines`, each kept only at or above its plugin's
/// `log_level`. Lines whose prefix matches no plugin keep the prefix as the
/// plugin name.
///
/// Root-context prefixes (`root_id vm_id`) can be shared by several plugins
/// (e.g. all with empty root and VM ids). Such a line is given to the plugin
/// whose configuration size matches the enclosing `proxy_on_configure`
/// (or VM configuration size for `proxy_on_vm_start`) when that singles one
/// out, else to the first candidate.
pub fn plugin_logs(plugins: &[PluginIdent], lines: &[EnvoyLine]) -> Vec<LogLine> {
    let mut out = Vec::new();
    let mut stack: Vec<(String, Vec<i64>)> = Vec::new();
    for l in lines {
        match event(l) {
            Event::HookCall { hook, args } => stack.push((hook, args)),
            Event::HookReturn { hook } => {
                if let Some(i) = stack.iter().rposition(|(h, _)| *h == hook) {
                    stack.truncate(i);
                }
            }
            Event::PluginLog { level, prefix, message } => {
                let found = plugins.iter().position(|p| p.stream_prefix() == prefix).or_else(|| {
                    let candidates: Vec<usize> =
                        (0..plugins.len()).filter(|i| plugins[*i].root_prefix() == prefix).collect();
                    if candidates.len() <= 1 {
                        return candidates.first().copied();
                    }
                    let size = |p: &PluginIdent, hook: &str| match hook {
                        "proxy_on_configure" => Some(p.config_len),
                        "proxy_on_vm_start" => Some(p.vm_config_len),
                        _ => None,
                    };
                    let by_size = stack.last().and_then(|(hook, args)| {
                        let want = *args.get(1)? as usize;
                        let m: Vec<usize> =
                            candidates.iter().copied().filter(|i| size(&plugins[*i], hook) == Some(want)).collect();
                        (m.len() == 1).then(|| m[0])
                    });
                    by_size.or(candidates.first().copied())
                });
                let (plugin, min) = match found {
                    Some(i) => (plugins[i].name.clone(), plugins[i].log_level),
                    None => (prefix.clone(), LogLevel::Trace),
                };
                if level >= min {
                    out.push(LogLine { level, plugin, message });
                }
            }
            _ => {}
        }
    }
    out
}

/// Something a plugin did during a stream, with the plugin when it can be
/// told.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub plugin: Option<usize>,
    pub kind: ActionKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// `proxy_send_local_response` returned OK: status and gRPC status.
    LocalReply { status: u16, grpc_status: Option<i32> },
    /// `proxy_http_call` returned OK, with its timeout.
    HttpCall { timeout_ms: u32 },
    /// The plugin trapped.
    Failure { message: String },
}

/// What a stream's stretch of log says about the plugins' actions.
///
/// Which plugin acted is decided, in order: the only plugin; a plugin log
/// line inside the same callback; the callback's context id when each plugin
/// created exactly one (distinct) stream context; for request callbacks,
/// Envoy's decoding order (the k-th `proxy_on_request_headers` of a stream
/// goes to the k-th filter).
pub fn stream_actions(plugins: &[PluginIdent], lines: &[EnvoyLine]) -> Vec<Action> {
    struct Frame {
        hook: String,
        ctx: Option<i64>,
        /// Ordinal of this call among the stream's calls of the same hook.
        ordinal: usize,
        logged_by: Option<usize>,
        pending: Vec<ActionKind>,
    }
    let events: Vec<Event> = lines.iter().map(event).collect();
    // Stream contexts created, in order (parent != 0: not a root context).
    let created: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            Event::HookCall { hook, args }
                if hook == "proxy_on_context_create" && args.get(1).copied().unwrap_or(0) != 0 =>
            {
                args.first().copied()
            }
            _ => None,
        })
        .collect();
    let by_ctx = |ctx: i64| -> Option<usize> {
        if created.len() != plugins.len() || created.iter().filter(|c| **c == ctx).count() != 1 {
            return None;
        }
        created.iter().position(|c| *c == ctx)
    };
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    let mut pending_call: Option<(String, Vec<i64>)> = None;
    let finish = |f: Frame, out: &mut Vec<Action>| {
        if f.pending.is_empty() {
            return;
        }
        let plugin = if plugins.len() == 1 {
            Some(0)
        } else {
            f.logged_by.or_else(|| f.ctx.and_then(by_ctx)).or_else(|| {
                matches!(f.hook.as_str(), "proxy_on_request_headers")
                    .then_some(f.ordinal)
                    .filter(|i| *i < plugins.len())
            })
        };
        out.extend(f.pending.into_iter().map(|kind| Action { plugin, kind }));
    };
    for e in events {
        match e {
            Event::HookCall { hook, args } => {
                let n = counts.entry(hook.clone()).or_default();
                let ordinal = *n;
                *n += 1;
                stack.push(Frame { hook, ctx: args.first().copied(), ordinal, logged_by: None, pending: Vec::new() });
            }
            Event::HookReturn { hook } => {
                if let Some(i) = stack.iter().rposition(|f| f.hook == hook) {
                    let f = stack.remove(i);
                    finish(f, &mut out);
                }
            }
            Event::PluginLog { prefix, .. } => {
                if let (Some(f), Some(p)) = (stack.last_mut(), plugins.iter().position(|p| p.stream_prefix() == prefix))
                {
                    f.logged_by.get_or_insert(p);
                }
            }
            Event::HostCall { func, args } => {
                if func == "proxy_send_local_response" || func == "proxy_http_call" {
                    pending_call = Some((func, args));
                }
            }
            Event::HostReturn { func, value } => {
                if let Some((f, args)) = pending_call.take() {
                    if f == func && value == "0" {
                        let kind = if f == "proxy_send_local_response" {
                            let grpc = args.get(7).copied().unwrap_or(-1);
                            ActionKind::LocalReply {
                                status: args.first().copied().unwrap_or(0) as u16,
                                grpc_status: (0..=16).contains(&grpc).then_some(grpc as i32),
                            }
                        } else {
                            ActionKind::HttpCall { timeout_ms: args.get(8).copied().unwrap_or(0) as u32 }
                        };
                        match stack.last_mut() {
                            Some(fr) => fr.pending.push(kind),
                            None => out.push(Action { plugin: (plugins.len() == 1).then_some(0), kind }),
                        }
                    }
                }
            }
            Event::Failure { message } => match stack.last_mut() {
                Some(fr) => fr.pending.push(ActionKind::Failure { message }),
                None => out
                    .push(Action { plugin: (plugins.len() == 1).then_some(0), kind: ActionKind::Failure { message } }),
            },
            Event::Other => {}
        }
    }
    // Callbacks that never returned (a trap leaves no return line).
    while let Some(f) = stack.pop() {
        finish(f, &mut out);
    }
    out
}

/// Stream contexts created in `lines` that have not been deleted yet; zero
/// means every filter finished the stream (`proxy_on_delete` ran).
pub fn live_stream_contexts(lines: &[EnvoyLine]) -> (usize, usize) {
    let mut created = 0;
    let mut deleted = 0;
    for l in lines {
        if let Event::HookCall { hook, args } = event(l) {
            if hook == "proxy_on_context_create" && args.get(1).copied().unwrap_or(0) != 0 {
                created += 1;
            } else if hook == "proxy_on_delete" {
                deleted += 1;
            }
        }
    }
    (created, deleted)
}

/// Errors Envoy printed while failing to start: its `critical` and `error`
/// entries other than plugin logs, with the configuration dump Envoy
/// appends to "initializing config" cut off.
pub fn startup_errors(lines: &[EnvoyLine]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.level == "critical" || l.level == "error")
        .filter(|l| !matches!(event(l), Event::PluginLog { .. }))
        .map(|l| {
            let first = l.message.lines().next().unwrap_or_default();
            match first.find(" initializing config '") {
                Some(i) => format!("{} initializing config", &first[..i]),
                None => first.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
[2026-11-28 09:17:21.794][3626][info][main] [server.cc:1] starting\n\
[2026-11-28 09:17:21.794][3626][info][wasm] [context.cc:1151] wasm log v1: vm start\n\
[2026-11-28 09:17:21.794][3626][warning][wasm] [context.cc:1154] wasm log myroot v1: configure: {\"a\":1}\n\
[2026-11-28 09:17:25.623][3673][trace][wasm] [wasm_vm.cc:39] [host->vm] proxy_on_context_create(5, 1)\n\
[2026-11-28 09:17:25.623][3673][trace][wasm] [wasm_vm.cc:39] [host<-vm] proxy_on_context_create return: void\n\
[2026-11-28 09:17:25.623][3673][trace][wasm] [wasm_vm.cc:39] [host->vm] proxy_on_request_headers(5, 8, 1)\n\
[2026-11-28 09:17:25.623][3673][trace][wasm] [wasm_vm.cc:39] [vm->host] env.proxy_log(2, 1062496, 23)\n\
[2026-11-28 09:17:25.623][3673][info][wasm] [context.cc:1151] wasm log my_plugin myroot v1: stream 5 request /panic\n\
[2026-11-28 09:17:25.623][3673][trace][wasm] [wasm_vm.cc:39] [vm<-host] env.proxy_log return: 0\n\
[2026-11-28 09:17:25.623][3673][debug][wasm] [context.cc:1148] wasm log my_plugin myroot v1: debug msg\n\
[2026-11-28 09:17:25.623][3673][critical][wasm] [context.cc:1160] wasm log my_plugin myroot v1: panicked at src/lib.rs:58:37:\n\
boom\n\
[2026-11-28 09:17:25.624][3673][error][wasm] [wasm_vm.cc:38] Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable\n\
Proxy-Wasm plugin in-VM backtrace:\n\
[2026-11-28 09:17:25.624][3673][info][main] [x.cc:1] half";

    fn ident(name: &str, root: &str, vm: &str, level: LogLevel) -> PluginIdent {
        PluginIdent {
            name: name.into(),
            root_id: root.into(),
            vm_id: vm.into(),
            log_level: level,
            config_len: 0,
            vm_config_len: 0,
        }
    }

    #[test]
    fn parses_entries_folds_continuations_and_leaves_a_partial_line() {
        let (lines, used) = parse(SAMPLE, 100);
        assert_eq!(lines.len(), 12);
        assert_eq!(lines[0].offset, 100);
        assert_eq!(used, SAMPLE.rfind("[2026-11-28 09:17:25.624][3673][info]").unwrap());
        assert_eq!(lines[10].message, "wasm log my_plugin myroot v1: panicked at src/lib.rs:58:37:\nboom");
        assert_eq!(lines[10].level, "critical");
    }

    #[test]
    fn plugin_logs_resolve_prefixes_and_filter_levels() {
        let (lines, _) = parse(SAMPLE, 0);
        let plugins = vec![ident("my_plugin", "myroot", "v1", LogLevel::Info)];
        let logs = plugin_logs(&plugins, &lines);
        let msgs: Vec<_> = logs.iter().map(|l| (l.level, l.plugin.as_str(), l.message.as_str())).collect();
        assert_eq!(
            msgs,
            vec![
                (LogLevel::Info, "v1", "vm start"),
                (LogLevel::Warn, "my_plugin", "configure: {\"a\":1}"),
                (LogLevel::Info, "my_plugin", "stream 5 request /panic"),
                (LogLevel::Critical, "my_plugin", "panicked at src/lib.rs:58:37:\nboom"),
            ],
            "debug is below the plugin's level; `v1` alone (no root id) matches no plugin here"
        );
        let plugins = vec![ident("p", "", "v1", LogLevel::Trace)];
        assert_eq!(plugin_logs(&plugins, &lines[1..2])[0].plugin, "p", "root prefix without root id");
        let empty = "[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log: x\n";
        assert_eq!(
            plugin_logs(&[ident("p", "", "", LogLevel::Trace)], &parse(empty, 0).0)[0].plugin,
            "p",
            "empty prefix"
        );
    }

    #[test]
    fn shared_root_prefixes_are_told_apart_by_configuration_size() {
        let text = "\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_configure(1, 7)\n\
[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log: configured\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_configure return: 1\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_configure(1, 4)\n\
[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log: configured\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_configure return: 1\n\
[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log: tick\n";
        let (lines, _) = parse(text, 0);
        let mut a = ident("a", "", "", LogLevel::Trace);
        a.config_len = 4;
        let mut b = ident("b", "", "", LogLevel::Trace);
        b.config_len = 7;
        let who: Vec<_> = plugin_logs(&[a, b], &lines).into_iter().map(|l| l.plugin).collect();
        assert_eq!(who, vec!["b", "a", "a"], "outside configure the first candidate");
    }

    #[test]
    fn failures_and_local_replies_are_attributed() {
        let (lines, _) = parse(SAMPLE, 0);
        let one = vec![ident("my_plugin", "myroot", "v1", LogLevel::Info)];
        let actions = stream_actions(&one, &lines);
        assert_eq!(
            actions,
            vec![Action {
                plugin: Some(0),
                kind: ActionKind::Failure {
                    message: "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable\nProxy-Wasm plugin in-VM backtrace:".into()
                }
            }]
        );
        // Two plugins in separate VMs: context ids collide, so the decoding
        // order decides.
        let text = "\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_context_create(2, 1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_context_create(2, 1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_request_headers(2, 8, 1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_request_headers return: 0\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_request_headers(2, 8, 1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm->host] env.proxy_send_local_response(403, 0, 0, 10, 7, 0, 0, -1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm<-host] env.proxy_send_local_response return: 0\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_request_headers return: 1\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_http_call_response(1, 4, 1, 0, 0)\n\
[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log first: calling\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm->host] env.proxy_http_call(1, 2, 3, 4, 5, 6, 7, 8, 500, 9)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm<-host] env.proxy_http_call return: 0\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_http_call_response return: void\n";
        let (lines, _) = parse(text, 0);
        let two = vec![ident("first", "", "", LogLevel::Trace), ident("second", "", "", LogLevel::Trace)];
        let actions = stream_actions(&two, &lines);
        assert_eq!(
            actions,
            vec![
                Action { plugin: Some(1), kind: ActionKind::LocalReply { status: 403, grpc_status: None } },
                Action { plugin: Some(0), kind: ActionKind::HttpCall { timeout_ms: 500 } },
            ]
        );
        assert_eq!(live_stream_contexts(&lines), (2, 0));
    }

    #[test]
    fn startup_errors_drop_the_config_dump() {
        let text = "\
[2026-11-28 09:20:27.964][1][error][wasm] [wasm.cc:104] Wasm VM failed Failed to configure base Wasm plugin\n\
[2026-11-28 09:20:27.964][1][critical][wasm] [x:1] wasm log my_plugin: not an envoy error\n\
[2026-11-28 09:20:27.970][1][critical][main] [server.cc:449] error `Unable to create Wasm plugin my_plugin` initializing config '{ node { id: \"x\" } }'\n";
        let (lines, _) = parse(text, 0);
        assert_eq!(
            startup_errors(&lines),
            vec![
                "Wasm VM failed Failed to configure base Wasm plugin".to_string(),
                "error `Unable to create Wasm plugin my_plugin` initializing config".to_string()
            ]
        );
    }
}
