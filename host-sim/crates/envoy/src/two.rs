//! Two Envoys in a chain (scenario `server_proxy`): a client sidecar whose
//! upstream cluster points at a server sidecar, whose upstream is the
//! engine's HTTP server. Between them sits a recording TCP relay, so the
//! result can say what the client Envoy sent upstream and what the server
//! Envoy answered, byte for byte as they crossed the wire. Each Envoy has
//! its own working directory, bootstrap, log, access log and admin, and
//! `--concurrency` from its own `workers`.
//!
//! With `server_proxy.mtls` the hop is mutual TLS: the server Envoy's
//! listeners present the hop's server certificate, accept its ALPN list and
//! require a client certificate from their plan's CA; the client Envoy's
//! upstream clusters present a client certificate from that same CA, trust
//! it, and send the hop's SNI and ALPN. The relay must still record
//! plaintext (the request the client Envoy sent, the server's answer, the
//! TCP bytes each way), so it becomes a TLS-terminating man in the middle
//! (`mitm.rs`): towards the client Envoy a TLS server presenting the server
//! listener's own certificate and key and requiring the client's
//! certificate, towards the server Envoy a TLS client presenting the same
//! client certificate the client Envoy has, with the hop's SNI and ALPN and
//! the TLS version the client Envoy negotiated. Each Envoy thus sees the
//! certificates, SNI, ALPN and version it would see from the other.
//! One thread per connection drives both rustls connections over
//! non-blocking sockets (a rustls connection carries both directions, so
//! the plaintext relay's two copy threads cannot share it); the end of one
//! side's TLS stream (close_notify or EOF) becomes close_notify and a FIN
//! on the other, which keeps relaying the other direction until it ends
//! too; an error or reset closes both. `client_of_server` is still the
//! relay's address towards the server Envoy.

use crate::bootstrap::{self, Layout, UpstreamTls};
use crate::exchange::{exchange, settle};
use crate::listeners::{effective_connection, effective_tcp_connection, ListenerPlan};
use crate::logs::PluginIdent;
use crate::mitm::{self, HopTls};
use crate::process::{environment, EnvoyProcess, Readiness};
use crate::result::{ConnectionResult, RunResult, StreamResult};
use crate::results::{connection_result, find_access_entry, idents, stream_result};
use crate::scenario::{HopTlsSpec, Scenario};
use crate::tls::Issued;
use crate::{http, logs, servers, stats, tcp, EnvoyOptions};
use anyhow::{bail, Context, Result};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What crossed the relay since the last `take`.
#[derive(Default)]
struct Recorded {
    /// Client Envoy -> server Envoy.
    up: Vec<u8>,
    /// Server Envoy -> client Envoy.
    down: Vec<u8>,
    /// The relay's address towards the server Envoy on the connection
    /// that carried the last request (the client in the server's access log).
    client_of_server: Option<SocketAddr>,
    /// Connections the client Envoy opened through the relay.
    accepted: usize,
}

/// A TCP relay from the client Envoy's upstream connections to the server
/// Envoy's listener that records both directions.
struct Relay {
    port: u16,
    rec: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays to the server Envoy's listener at `target`; with `tls`, as a
    /// TLS-terminating man in the middle of the hop (see the module comment).
    fn start(target: u16, tls: Option<Arc<HopTls>>) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rec.clone(), stop.clone());
        std::thread::Builder::new().name("envoy-relay".into()).spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        r.lock().unwrap_or_else(|e| e.into_inner()).accepted += 1;
                        match &tls {
                            Some(tls) => pipe_tls(down, target, tls.clone(), r.clone(), s.clone()),
                            None => {
                                let _ = down.set_nonblocking(false);
                                if let Ok(up) = TcpStream::connect(("127.0.0.1", target)) {
                                    pipe(down, up, r.clone());
                                }
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })?;
        Ok(Relay { port, rec, stop })
    }

    fn take(&self) -> Recorded {
        std::mem::take(&mut *self.rec.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both directions of one connection, recording what passes.
fn pipe(down: TcpStream, up: TcpStream, rec: Arc<Mutex<Recorded>>) {
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let local = up.local_addr().ok();
    let copy = move |mut from: TcpStream, mut to: TcpStream, upward: bool, rec: Arc<Mutex<Recorded>>| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    {
                        let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
                        if upward {
                            r.up.extend_from_slice(&buf[..n]);
                            r.client_of_server = local;
                        } else {
                            r.down.extend_from_slice(&buf[..n]);
                        }
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else { return };
    let r2 = rec.clone();
    let _ = std::thread::Builder::new().name("relay-up".into()).spawn(move || copy(down, up, true, rec));
    let _ = std::thread::Builder::new().name("relay-down".into()).spawn(move || copy(up2, down2, false, r2));
}

/// Relays one connection of a mutual-TLS hop on a thread of its own:
/// both handshakes, then plaintext recorded as in [`pipe`].
fn pipe_tls(down: TcpStream, target: u16, tls: Arc<HopTls>, rec: Arc<Mutex<Recorded>>, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new().name("relay-tls".into()).spawn(move || {
        let Ok((d, u)) = tls.connect(down, target) else { return };
        let local = u.tcp().local_addr().ok();
        mitm::pump(d, u, &stop, &mut |upward, bytes| {
            let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
            if upward {
                r.up.extend_from_slice(bytes);
                r.client_of_server = local;
            } else {
                r.down.extend_from_slice(bytes);
            }
        });
    });
}

/// One Envoy of the chain.
struct Side {
    envoy: EnvoyProcess,
    admin: SocketAddr,
    ports: std::collections::HashMap<String, u16>,
    plan: ListenerPlan,
    access_log: PathBuf,
    plugins: Vec<PluginIdent>,
    windows: Vec<(usize, usize)>,
    result: RunResult,
}

fn start_side(
    s: &Scenario,
    dir: &Path,
    binary: &Path,
    (upstream_port, tcp_upstream_port): (u16, u16),
    clusters: &[(String, u16)],
    (alpn, upstream_tls): (&[String], Option<UpstreamTls>),
    opts: &EnvoyOptions,
) -> Result<Side> {
    std::fs::create_dir_all(dir)?;
    let mut plan = ListenerPlan::new(s, dir)?;
    // The hop's ALPN on the server's (TLS) listeners.
    for (_, l) in plan.listeners.iter_mut() {
        if let Some(tls) = l.tls.as_mut() {
            tls.alpn = alpn.to_vec();
        }
    }
    let access_log = dir.join("access.log");
    let layout = Layout {
        listeners: plan.listeners.iter().map(|(_, l)| l.clone()).collect(),
        upstream_port,
        tcp_upstream_port,
        clusters: clusters.to_vec(),
        wasm_paths: s.plugins.iter().map(|p| std::path::absolute(&p.wasm).unwrap_or_else(|_| p.wasm.clone())).collect(),
        access_log: access_log.clone(),
        upstream_tls,
    };
    let config = dir.join("envoy.json");
    std::fs::write(&config, serde_json::to_string_pretty(&bootstrap::bootstrap(s, &layout))?)?;
    let mut envoy = EnvoyProcess::spawn(binary, dir, &config, s.workers, &opts.extra_args).map_err(environment)?;
    let names: Vec<String> = layout.listeners.iter().map(|l| l.name.clone()).collect();
    let (admin, ports) = match envoy.wait_ready(&names, opts.startup_timeout).map_err(environment)? {
        Readiness::Ready { admin, listeners } => (admin, listeners),
        // A refused configuration in a two-proxy chain is reported as an
        // error (host-sim does not run such a chain either).
        Readiness::Exited(status) => {
            bail!("{} refused its configuration ({status}): {}", s.name, envoy.log_tail_section(30))
        }
    };
    let result = crate::started_result(s);
    Ok(Side { envoy, admin, ports, plan, access_log, plugins: idents(s), windows: Vec::new(), result })
}

fn wait_entry(path: &Path, client: &str, envoy: &mut EnvoyProcess) -> Option<crate::results::AccessEntry> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(e) = find_access_entry(path, client) {
            return Some(e);
        }
        if Instant::now() >= deadline || envoy.has_exited() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn finish_side(side: &mut Side, s: &Scenario) -> Result<()> {
    let admin_timeout = Duration::from_secs(10);
    side.result.metrics = stats::metrics(side.admin, admin_timeout).context("reading plugin metrics")?;
    side.result.prometheus = stats::prometheus(side.admin, admin_timeout).context("reading /stats/prometheus")?;
    side.result.warnings = stats::warnings(&side.result.metrics, s);
    side.envoy.stop(Duration::from_secs(5));
    let text = side.envoy.log_from(0);
    let (lines, _) = logs::parse(&format!("{text}\n"), 0);
    let outside: Vec<_> =
        lines.into_iter().filter(|l| !side.windows.iter().any(|(s, e)| l.offset >= *s && l.offset < *e)).collect();
    side.result.logs = logs::plugin_logs(&side.plugins, &outside);
    Ok(())
}

/// The client Envoy's side of an mTLS hop: a client certificate for the
/// hop's `client_certificate` from the server plan's CA, written into
/// `dir`, and the upstream TLS that presents it and trusts that CA.
fn hop_client(hop: &HopTlsSpec, server: &ListenerPlan, dir: &Path) -> Result<(Issued, UpstreamTls)> {
    let ca = server.ca.as_ref().context("the server proxy's listeners have no CA")?;
    let cert = ca.issue(&hop.client_certificate, false, "CN=client")?;
    std::fs::create_dir_all(dir)?;
    let (cert_chain, private_key) = (dir.join("hop-client-cert.pem"), dir.join("hop-client-key.pem"));
    std::fs::write(&cert_chain, &cert.cert_pem)?;
    std::fs::write(&private_key, &cert.key_pem)?;
    let tls = UpstreamTls {
        cert_chain,
        private_key,
        trusted_ca: server.ca_path.clone(),
        alpn: hop.alpn.clone(),
        sni: hop.sni.clone(),
    };
    Ok((cert, tls))
}

/// Runs a two-proxy scenario in two Envoys (see the module comment).
pub fn run_two(
    scenario: &Scenario,
    server: &Scenario,
    binary: &Path,
    work: &Path,
    opts: &EnvoyOptions,
) -> Result<RunResult> {
    let servers = servers::Servers::start(&scenario.clusters).map_err(environment)?;
    let mut tcp_upstream = tcp::TcpUpstream::start().map_err(environment)?;
    let upstreams = (servers.upstream_port, tcp_upstream.port);
    let hop = scenario.server_proxy.as_ref().and_then(|sp| sp.mtls.as_ref());
    let alpn = hop.map(|h| h.alpn.clone()).unwrap_or_default();
    let mut srv =
        start_side(server, &work.join("server"), binary, upstreams, &servers.cluster_ports, (&alpn, None), opts)?;
    // With an mTLS hop: the client Envoy's certificate, from the server's CA.
    let client_dir = work.join("client");
    let hop_tls = match hop {
        Some(h) => Some(hop_client(h, &srv.plan, &client_dir)?),
        None => None,
    };
    // The server's HTTP listener (the first; its streams' listener) and, with
    // connections, its TCP listener: each gets its own relay.
    let port_of = |side: &Side, listener: usize| side.ports.get(&side.plan.listeners[listener].1.name).copied();
    // The relay of a listener, terminating the hop's TLS with the
    // listener's own server certificate.
    let relay_for = |listener: usize| -> Result<Relay> {
        let port = port_of(&srv, listener).context("server listener port")?;
        let tls = match (hop, &hop_tls) {
            (Some(h), Some((client_cert, _))) => {
                let server_cert =
                    srv.plan.server_certs.get(listener).and_then(Option::as_ref).context("server certificate")?;
                let ca = srv.plan.ca.as_ref().context("the server's CA")?;
                Some(Arc::new(HopTls::new(server_cert, client_cert, ca.cert_der(), h.sni.as_deref(), &h.alpn)?))
            }
            _ => None,
        };
        Relay::start(port, tls).map_err(environment)
    };
    let http_listener = srv.plan.streams.first().map_or(0, |(l, _)| *l);
    let relay = relay_for(http_listener)?;
    let tcp_relay = match srv.plan.connections.first() {
        Some((l, _)) => Some(relay_for(*l)?),
        None => None,
    };
    let client_upstreams = (relay.port, tcp_relay.as_ref().map_or(0, |r| r.port));
    let upstream_tls = hop_tls.map(|(_, t)| t);
    let mut cli =
        start_side(scenario, &client_dir, binary, client_upstreams, &servers.cluster_ports, (&[], upstream_tls), opts)?;

    let (mut failed_c, mut failed_s): (Option<usize>, Option<usize>) = (None, None);
    for (i, stream) in scenario.streams.iter().enumerate() {
        if stream.advance_ms_before > 0 {
            std::thread::sleep(Duration::from_millis(stream.advance_ms_before));
        }
        let upstream = stream.upstream.clone().unwrap_or_default();
        servers.begin_stream(upstream.clone(), Vec::new());
        relay.take();
        let (start_c, start_s) = (cli.envoy.log_len(), srv.envoy.log_len());
        let (listener, cert) = &cli.plan.streams[i];
        let port = *cli.ports.get(&cli.plan.listeners[*listener].1.name).context("listener port")?;
        let timeout = opts.stream_timeout + Duration::from_millis(upstream.delay_ms);
        let (client, outcome) =
            match exchange(port, effective_connection(scenario, stream), cert.as_ref(), &stream.request, timeout) {
                Ok(x) => x,
                Err(e) => bail!("stream {i} ({}): {e:#}. {}", stream.name, cli.envoy.log_tail_section(30)),
            };
        let client = client.map(|a| a.to_string()).unwrap_or_default();
        let entry_c = wait_entry(&cli.access_log, &client, &mut cli.envoy);
        let rec = relay.take();
        let entry_s = match rec.client_of_server {
            Some(a) => wait_entry(&srv.access_log, &a.to_string(), &mut srv.envoy),
            None => None,
        };
        let end_s = settle(&srv.envoy, start_s, Duration::from_secs(2));
        let end_c = settle(&cli.envoy, start_c, Duration::from_secs(2));
        cli.windows.push((start_c, end_c));
        srv.windows.push((start_s, end_s));
        let (ups, _) = servers.end_stream();
        // What the client Envoy sent upstream, and what the server Envoy
        // answered it, as they crossed the relay.
        let sent: Vec<http::Request> =
            http::read_request(&mut BufReader::new(&rec.up[..])).ok().flatten().into_iter().collect();
        let head = stream.request.headers.iter().any(|(k, v)| k == ":method" && v.eq_ignore_ascii_case("HEAD"));
        let answered = http::read_response(&mut BufReader::new(&rec.down[..]), head);

        if rec.up.is_empty() {
            // The request never left the client Envoy: an empty entry keeps
            // the two proxies' streams aligned, as in host-sim.
            srv.result.streams.push(StreamResult { name: stream.name.clone(), ..Default::default() });
        } else {
            let text = srv.envoy.log_from(start_s);
            let (lines, _) = logs::parse(text.get(..end_s - start_s).unwrap_or(&text), start_s);
            let r = stream_result(stream, &srv.plugins, &lines, answered, entry_s, ups, Vec::new(), failed_s);
            if let Some(f) = &r.plugin_failure {
                failed_s = srv.plugins.iter().position(|p| p.name == f.plugin).or(failed_s);
            }
            srv.result.streams.push(r);
        }

        let text = cli.envoy.log_from(start_c);
        let (lines, _) = logs::parse(text.get(..end_c - start_c).unwrap_or(&text), start_c);
        let r = stream_result(stream, &cli.plugins, &lines, outcome, entry_c, sent, Vec::new(), failed_c);
        if let Some(f) = &r.plugin_failure {
            failed_c = cli.plugins.iter().position(|p| p.name == f.plugin).or(failed_c);
        }
        cli.result.streams.push(r);
    }
    for (i, spec) in scenario.connections.iter().enumerate() {
        if spec.advance_ms_before > 0 {
            std::thread::sleep(Duration::from_millis(spec.advance_ms_before));
        }
        let Some(tcp_relay) = &tcp_relay else { break };
        tcp_relay.take();
        let (start_c, start_s) = (cli.envoy.log_len(), srv.envoy.log_len());
        let (listener, cert) = &cli.plan.connections[i];
        let port = *cli.ports.get(&cli.plan.listeners[*listener].1.name).context("TCP listener port")?;
        let conn = effective_tcp_connection(scenario, spec);
        let outcome = match tcp::replay(port, conn, cert.as_ref(), &mut tcp_upstream, spec) {
            Ok(x) => x,
            Err(e) => bail!("connection {i} ({}): {e:#}. {}", spec.name, cli.envoy.log_tail_section(30)),
        };
        let client = outcome.client_addr.map(|a| a.to_string()).unwrap_or_default();
        wait_entry(&cli.access_log, &client, &mut cli.envoy);
        let rec = tcp_relay.take();
        if let Some(a) = rec.client_of_server {
            wait_entry(&srv.access_log, &a.to_string(), &mut srv.envoy);
        }
        let end_s = settle(&srv.envoy, start_s, Duration::from_secs(2));
        let end_c = settle(&cli.envoy, start_c, Duration::from_secs(2));
        cli.windows.push((start_c, end_c));
        srv.windows.push((start_s, end_s));
        // What crossed between the two Envoys is each one's other side.
        let server_outcome = tcp::TcpOutcome {
            client_addr: rec.client_of_server,
            upstream_connected: outcome.upstream_connected,
            upstream_received: outcome.upstream_received.clone(),
            downstream_received: rec.down.clone(),
        };
        let client_outcome =
            tcp::TcpOutcome { upstream_connected: rec.accepted > 0, upstream_received: rec.up.clone(), ..outcome };
        let text = srv.envoy.log_from(start_s);
        let (lines, _) = logs::parse(text.get(..end_s - start_s).unwrap_or(&text), start_s);
        srv.result.connections.push(if rec.accepted > 0 {
            connection_result(spec, &srv.plugins, &lines, server_outcome)
        } else {
            ConnectionResult { name: spec.name.clone(), ..Default::default() }
        });
        let text = cli.envoy.log_from(start_c);
        let (lines, _) = logs::parse(text.get(..end_c - start_c).unwrap_or(&text), start_c);
        cli.result.connections.push(connection_result(spec, &cli.plugins, &lines, client_outcome));
    }
    if scenario.advance_ms_after > 0 {
        std::thread::sleep(Duration::from_millis(scenario.advance_ms_after));
    }
    // Histograms reach the admin output with a stats flush.
    std::thread::sleep(Duration::from_millis(bootstrap::STATS_FLUSH_MS * 3));
    finish_side(&mut cli, scenario)?;
    finish_side(&mut srv, server)?;
    drop(relay);
    drop(tcp_relay);
    drop(servers);
    let mut result = cli.result;
    result.server_proxy = Some(Box::new(srv.result));
    result.check(&scenario.expect);
    Ok(result)
}
