//! The peers behind Envoy: one HTTP/1.1 server playing the upstream and one
//! per scenario cluster answering `proxy_http_call`s. They answer with the
//! current stream's canned responses and record what they received.

use super::http::{self, Outgoing, Request};
use crate::scenario::ResponseSpec;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One `proxy_http_call` as the cluster's server saw it.
#[derive(Debug, Clone)]
pub struct CallExchange {
    pub cluster: String,
    pub request: Request,
    /// The canned answer's delay.
    pub delay_ms: u64,
    /// The status written back; `None` if nobody answered (no canned
    /// response left, or the connection was gone by the time the delay was
    /// over).
    pub status_sent: Option<u16>,
}

/// The current stream's canned answers and what arrived.
#[derive(Debug, Default)]
pub struct Slot {
    pub upstream: ResponseSpec,
    pub calls: VecDeque<ResponseSpec>,
    pub upstream_seen: Vec<Request>,
    pub calls_seen: Vec<CallExchange>,
}

#[derive(Clone)]
enum Role {
    Upstream,
    Cluster(String),
}

pub struct Servers {
    stop: Arc<AtomicBool>,
    accept_threads: Vec<JoinHandle<()>>,
    slot: Arc<Mutex<Slot>>,
    pub upstream_port: u16,
    pub cluster_ports: Vec<(String, u16)>,
}

impl Servers {
    /// Starts the upstream server and one server per cluster, each on a free
    /// port of 127.0.0.1.
    pub fn start(clusters: &[String]) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(Slot::default()));
        let mut servers =
            Servers { stop, accept_threads: Vec::new(), slot, upstream_port: 0, cluster_ports: Vec::new() };
        servers.upstream_port = servers.spawn(Role::Upstream)?;
        for c in clusters {
            let port = servers.spawn(Role::Cluster(c.clone()))?;
            servers.cluster_ports.push((c.clone(), port));
        }
        Ok(servers)
    }

    fn spawn(&mut self, role: Role) -> Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a server port on 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (stop, slot) = (self.stop.clone(), self.slot.clone());
        let name = match &role {
            Role::Upstream => "envoy-upstream".to_string(),
            Role::Cluster(c) => format!("envoy-cluster-{c}"),
        };
        let handle = std::thread::Builder::new().name(name).spawn(move || accept_loop(listener, role, stop, slot))?;
        self.accept_threads.push(handle);
        Ok(port)
    }

    /// Loads the next stream's answers and clears the records.
    pub fn begin_stream(&self, upstream: ResponseSpec, calls: Vec<ResponseSpec>) {
        let mut s = self.slot.lock().unwrap();
        *s = Slot { upstream, calls: calls.into(), upstream_seen: Vec::new(), calls_seen: Vec::new() };
    }

    /// What arrived during the stream.
    pub fn end_stream(&self) -> (Vec<Request>, Vec<CallExchange>) {
        let mut s = self.slot.lock().unwrap();
        (std::mem::take(&mut s.upstream_seen), std::mem::take(&mut s.calls_seen))
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.accept_threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, role: Role, stop: Arc<AtomicBool>, slot: Arc<Mutex<Slot>>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (role, stop, slot) = (role.clone(), stop.clone(), slot.clone());
                // Connection threads end when Envoy closes the connection
                // (at the latest when it is stopped).
                let _ = std::thread::Builder::new()
                    .name("envoy-peer-conn".into())
                    .spawn(move || serve_connection(conn, role, stop, slot));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Sleeps `ms`, waking early when the engine stops.
fn sleep_unless_stopped(ms: u64, stop: &AtomicBool) {
    let mut left = ms;
    while left > 0 && !stop.load(Ordering::SeqCst) {
        let step = left.min(20);
        std::thread::sleep(Duration::from_millis(step));
        left -= step;
    }
}

fn serve_connection(conn: TcpStream, role: Role, stop: Arc<AtomicBool>, slot: Arc<Mutex<Slot>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let head = req.method.eq_ignore_ascii_case("HEAD");
        let (spec, call_index) = {
            let mut s = slot.lock().unwrap();
            match &role {
                Role::Upstream => {
                    s.upstream_seen.push(req);
                    (Some(s.upstream.clone()), None)
                }
                Role::Cluster(cluster) => {
                    let spec = s.calls.pop_front();
                    s.calls_seen.push(CallExchange {
                        cluster: cluster.clone(),
                        request: req,
                        delay_ms: spec.as_ref().map_or(0, |r| r.delay_ms),
                        status_sent: None,
                    });
                    (spec, Some(s.calls_seen.len() - 1))
                }
            }
        };
        // No canned answer: nobody answers, the call fails (as in host-sim).
        let Some(spec) = spec else {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        };
        sleep_unless_stopped(spec.delay_ms, &stop);
        let msg = Outgoing {
            headers: &spec.headers,
            chunks: spec.chunks(),
            trailers: &spec.trailers,
            chunk_gap: Duration::ZERO,
        };
        let ok = http::write_response(&mut writer, spec.status, &msg, head).is_ok();
        if let (true, Some(i)) = (ok, call_index) {
            let mut s = slot.lock().unwrap();
            if let Some(x) = s.calls_seen.get_mut(i) {
                x.status_sent = Some(spec.status);
            }
        }
        if !ok {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{read_response, write_request, ResponseOutcome};

    fn exchange(port: u16, path: &str) -> ResponseOutcome {
        let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = conn.try_clone().unwrap();
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), "svc".to_string()),
        ];
        let msg = Outgoing { headers: &headers, chunks: vec![b"body".to_vec()], ..Default::default() };
        write_request(&mut w, &msg).unwrap();
        read_response(&mut BufReader::new(conn), false)
    }

    #[test]
    fn upstream_answers_with_the_streams_response_and_records_the_request() {
        let servers = Servers::start(&["callee".to_string()]).unwrap();
        let up = ResponseSpec {
            status: 201,
            headers: vec![("x-up".into(), "1".into())],
            body: Some("hello".into()),
            trailers: vec![("x-t".into(), "2".into())],
            ..Default::default()
        };
        servers.begin_stream(up, vec![ResponseSpec { status: 202, ..Default::default() }]);
        match exchange(servers.upstream_port, "/u") {
            ResponseOutcome::Complete(r) => {
                assert_eq!(r.status, 201);
                assert_eq!(r.body, b"hello");
                assert_eq!(r.trailers, vec![("x-t".to_string(), "2".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        let port = servers.cluster_ports[0].1;
        match exchange(port, "/c1") {
            ResponseOutcome::Complete(r) => assert_eq!(r.status, 202),
            other => panic!("{other:?}"),
        }
        // The canned answers are used up: the next call gets no answer.
        assert_eq!(exchange(port, "/c2"), ResponseOutcome::ResetBeforeResponse);
        let (ups, calls) = servers.end_stream();
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].body, b"body");
        assert_eq!(ups[0].target, "/u");
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].cluster.as_str(), calls[0].status_sent), ("callee", Some(202)));
        assert_eq!(calls[1].status_sent, None);
        assert!(servers.end_stream().0.is_empty(), "records are taken once");
    }
}
