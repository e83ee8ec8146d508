//! Driving one stream through Envoy as its client, and waiting for Envoy to
//! finish it.

use crate::process::EnvoyProcess;
use crate::scenario::{ConnectionSpec, MessageSpec};
use crate::{http, logs, tls};
use anyhow::{Context, Result};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
/// Sends one stream's request and reads the answer.
pub fn exchange(
    port: u16,
    conn: &ConnectionSpec,
    cert: Option<&tls::Issued>,
    req: &MessageSpec,
    timeout: Duration,
) -> Result<(Option<SocketAddr>, http::ResponseOutcome)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to Envoy at {addr}"))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let local = tcp.local_addr().ok();
    let mut client = if conn.is_tls() {
        match tls::ClientConn::tls(tcp, conn.requested_server_name.as_deref(), cert) {
            Ok(c) => c,
            // Envoy refused the handshake: the stream never started.
            Err(_) => return Ok((local, http::ResponseOutcome::ResetBeforeResponse)),
        }
    } else {
        tls::ClientConn::Plain(tcp)
    };
    let msg = http::Outgoing {
        headers: &req.headers,
        chunks: req.chunks(),
        trailers: &req.trailers,
        chunk_gap: Duration::from_millis(10),
    };
    // A write may fail when Envoy answers (and closes) before the whole
    // request is sent; the answer is still there to read.
    let _ = http::write_request(&mut client, &msg);
    let head = req.headers.iter().any(|(k, v)| k == ":method" && v.eq_ignore_ascii_case("HEAD"));
    let outcome = http::read_response(&mut BufReader::new(client), head);
    Ok((local, outcome))
}

/// Waits until every stream context created since `start` was deleted (all
/// filters finished the stream), or the log stays quiet when the plugins
/// leave no such trace. Returns the end of the stream's stretch of log.
pub fn settle(envoy: &EnvoyProcess, start: usize, limit: Duration) -> usize {
    let t0 = Instant::now();
    let mut last_len = 0;
    let mut quiet_since = Instant::now();
    loop {
        let text = envoy.log_from(start);
        let (lines, used) = logs::parse(&text, start);
        let (created, deleted) = logs::live_stream_contexts(&lines);
        if created > 0 && deleted >= created {
            return start + used;
        }
        if used != last_len {
            last_len = used;
            quiet_since = Instant::now();
        }
        if created == 0 && quiet_since.elapsed() >= Duration::from_millis(150) {
            return start + used;
        }
        if t0.elapsed() >= limit {
            return start + used;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
