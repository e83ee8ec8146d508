//! TCP connections through Envoy's network filter chain: a scripted TCP
//! server playing the upstream of `tcp_proxy`, and a client that replays a
//! connection's steps against Envoy's TCP listener.
//!
//! Both ends are driven from one thread, one step at a time, so the order in
//! which Envoy sees events is the scenario's order. After each step the
//! driver waits, bounded, until the other end has seen its effect (data
//! arrived and nothing more followed for a moment, or the end of the
//! stream). A plugin may hold or rewrite data, so waits never look for exact
//! bytes.

use super::tls::{self, ClientConn};
use crate::scenario::{ConnectionSpec, Side, TcpConnectionSpec, TcpStep};
use anyhow::{Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Bound on every wait for the other end (data, end of stream, the
/// upstream's connection).
const WAIT: Duration = Duration::from_secs(1);
/// Data counts as delivered once nothing more arrived for this long.
const QUIET: Duration = Duration::from_millis(50);
/// How long one client read blocks; also the driver's polling interval.
const POLL: Duration = Duration::from_millis(5);

/// The upstream of every TCP connection: a listener on a fixed port of
/// 127.0.0.1 (cluster `tcp_upstream` points at it).
///
/// For a connection whose upstream is unreachable the listener is closed,
/// so Envoy's connect is refused (RST) on the same port and cluster, as
/// when a real endpoint is down. A second socket bound to the port but never
/// listening (both with `SO_REUSEADDR`, which Linux allows as long as only
/// one of them listens) keeps the port bound meanwhile, so the kernel does
/// not hand it to another program.
pub struct TcpUpstream {
    _reserve: OwnedFd,
    listener: Option<TcpListener>,
    pub port: u16,
}

/// A TCP socket bound to 127.0.0.1 (port 0: any free port) with
/// `SO_REUSEADDR`, not listening. std offers no bind without listen.
fn bound_socket() -> Result<(OwnedFd, u16)> {
    // SAFETY: plain socket calls on a descriptor this function owns; every
    // pointer passed points to a live local of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        anyhow::ensure!(rc == 0, "setsockopt SO_REUSEADDR: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_in).cast(), len);
        anyhow::ensure!(rc == 0, "bind 127.0.0.1:0: {}", std::io::Error::last_os_error());
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut blen = len;
        let rc = libc::getsockname(fd.as_raw_fd(), (&mut bound as *mut libc::sockaddr_in).cast(), &mut blen);
        anyhow::ensure!(rc == 0, "getsockname: {}", std::io::Error::last_os_error());
        Ok((fd, u16::from_be(bound.sin_port)))
    }
}

/// Makes closing `s` send a RST instead of a FIN (`SO_LINGER` 0).
pub(crate) fn linger_zero(s: &TcpStream) -> std::io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `l` lives across the call and the size matches.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl TcpUpstream {
    pub fn start() -> Result<Self> {
        let (reserve, port) = bound_socket().context("reserving the TCP upstream's port")?;
        let mut up = Self { _reserve: reserve, listener: None, port };
        up.set_reachable(true)?;
        Ok(up)
    }

    /// Listens on the port (`true`), or closes the listener so connections
    /// are refused (`false`).
    pub fn set_reachable(&mut self, on: bool) -> Result<()> {
        if !on {
            self.listener = None;
        } else if self.listener.is_none() {
            // std's bind sets SO_REUSEADDR, so it may share the port with
            // the reserving socket.
            let l = TcpListener::bind(("127.0.0.1", self.port))
                .with_context(|| format!("listening on 127.0.0.1:{}", self.port))?;
            l.set_nonblocking(true)?;
            self.listener = Some(l);
        }
        Ok(())
    }

    /// A connection Envoy made, if one is waiting.
    fn accept(&self) -> Option<TcpStream> {
        let (s, _) = self.listener.as_ref()?.accept().ok()?;
        s.set_nonblocking(true).ok()?;
        let _ = s.set_nodelay(true);
        Some(s)
    }

    /// Closes connections that arrived after their client was done (a late
    /// connect), so they are not taken for the next client's.
    fn drain(&self) {
        while self.accept().is_some() {}
    }
}

/// What a replayed connection saw at both ends.
#[derive(Debug, Default)]
pub struct TcpOutcome {
    /// The client's address (finds the connection's access-log line).
    pub client_addr: Option<SocketAddr>,
    /// The upstream server accepted a connection from Envoy.
    pub upstream_connected: bool,
    pub upstream_received: Vec<u8>,
    pub downstream_received: Vec<u8>,
}

/// Both ends of one connection and what each has read so far.
struct Wire<'a> {
    server: &'a TcpUpstream,
    /// None once reset.
    client: Option<ClientConn>,
    client_eof: bool,
    client_closed: bool,
    down: Vec<u8>,
    upstream: Option<TcpStream>,
    upstream_eof: bool,
    upstream_closed: bool,
    up: Vec<u8>,
}

impl Wire<'_> {
    /// One round: accept Envoy's upstream connection if it came, read what
    /// is there at both ends (the client's read blocks up to [`POLL`]).
    fn pump(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        if self.upstream.is_none() {
            self.upstream = self.server.accept();
        }
        if let (Some(s), false) = (self.upstream.as_mut(), self.upstream_eof) {
            loop {
                match s.read(&mut buf) {
                    Ok(0) => self.upstream_eof = true,
                    Ok(n) => {
                        self.up.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // A reset counts as the end.
                    Err(_) => self.upstream_eof = true,
                }
                break;
            }
        }
        match (self.client.as_mut(), self.client_eof) {
            (Some(c), false) => match c.read(&mut buf) {
                Ok(0) => self.client_eof = true,
                Ok(n) => self.down.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => self.client_eof = true,
            },
            _ => std::thread::sleep(POLL),
        }
    }

    /// Pumps until `done` holds or `limit` passes; returns whether it held.
    fn wait_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let t0 = Instant::now();
        while !done(self) {
            if t0.elapsed() >= limit {
                return false;
            }
            self.pump();
        }
        true
    }

    /// Waits until `count` grows, then until it stays put for [`QUIET`];
    /// all within [`WAIT`] plus one quiet period.
    fn wait_for_data(&mut self, count: impl Fn(&Self) -> usize) {
        let before = count(self);
        if !self.wait_until(WAIT, |w| count(w) > before) {
            return;
        }
        let t0 = Instant::now();
        let mut last = (count(self), Instant::now());
        while last.1.elapsed() < QUIET && t0.elapsed() < WAIT {
            self.pump();
            let n = count(self);
            if n != last.0 {
                last = (n, Instant::now());
            }
        }
    }

    /// Waits (bounded) for Envoy's connection to the upstream.
    fn wait_for_upstream(&mut self) -> bool {
        self.wait_until(WAIT, |w| w.upstream.is_some())
    }

    fn step(&mut self, step: &TcpStep) {
        match step {
            TcpStep::DownstreamData(data) => {
                let Some(c) = self.client.as_mut() else { return };
                if c.write_all(data).and_then(|_| c.flush()).is_ok() {
                    self.wait_for_data(|w| w.up.len());
                }
            }
            TcpStep::UpstreamData(data) => {
                if !self.wait_for_upstream() {
                    return;
                }
                let s = self.upstream.as_mut().expect("waited for it");
                if write_nonblocking(s, data).is_ok() {
                    self.wait_for_data(|w| w.down.len());
                }
            }
            TcpStep::Close(Side::Downstream) => self.close_client(),
            TcpStep::Close(Side::Upstream) => {
                if self.wait_for_upstream() {
                    self.close_upstream(std::net::Shutdown::Write);
                }
            }
            TcpStep::ResetDownstream => {
                if let Some(c) = self.client.take() {
                    let _ = linger_zero(c.tcp());
                    drop(c);
                    self.client_closed = true;
                    // Envoy then closes its upstream connection.
                    if self.upstream.is_some() {
                        self.wait_until(WAIT, |w| w.upstream_eof);
                    }
                }
            }
            TcpStep::Advance(ms) => {
                let t0 = Instant::now();
                let total = Duration::from_millis(*ms);
                while t0.elapsed() < total {
                    self.pump();
                }
            }
        }
    }

    /// The client half-closes; waits until the upstream sees the end.
    fn close_client(&mut self) {
        if self.client_closed {
            return;
        }
        self.client_closed = true;
        if let Some(c) = self.client.as_mut() {
            let _ = c.shutdown_write();
            if self.upstream.is_some() {
                self.wait_until(WAIT, |w| w.upstream_eof);
            }
        }
    }

    /// The upstream closes (`Write`: half-closes); waits until the client
    /// sees the end.
    fn close_upstream(&mut self, how: std::net::Shutdown) {
        if let Some(s) = self.upstream.as_ref() {
            if !self.upstream_closed || how == std::net::Shutdown::Both {
                let _ = s.shutdown(how);
            }
            self.upstream_closed = true;
            if self.client.is_some() {
                self.wait_until(WAIT, |w| w.client_eof);
            }
        }
    }
}

/// Writes all of `data` on a non-blocking socket (the data is small; a full
/// buffer is waited out, bounded).
fn write_nonblocking(s: &mut TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    let t0 = Instant::now();
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) && t0.elapsed() < WAIT => {
                std::thread::sleep(POLL)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replays one connection against Envoy's TCP listener on `port`, with
/// `server` as the upstream. Ends with everything closed: the client
/// half-closes if it has not, then the upstream closes, then the client
/// waits for Envoy's end of the stream.
pub fn replay(
    port: u16,
    conn: &ConnectionSpec,
    cert: Option<&tls::Issued>,
    server: &mut TcpUpstream,
    spec: &TcpConnectionSpec,
) -> Result<TcpOutcome> {
    server.set_reachable(!spec.upstream_unreachable)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to Envoy's TCP listener at {addr}"))?;
    tcp.set_nodelay(true)?;
    let client_addr = tcp.local_addr().ok();
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let client = if conn.is_tls() {
        // A refused handshake leaves a connection that never opened.
        tls::ClientConn::tls(tcp, conn.requested_server_name.as_deref(), cert).ok()
    } else {
        Some(tls::ClientConn::Plain(tcp))
    };
    if let Some(c) = &client {
        // From now on reads poll.
        c.tcp().set_read_timeout(Some(POLL))?;
    }
    let mut w = Wire {
        server,
        client_eof: client.is_none(),
        client,
        client_closed: false,
        down: Vec::new(),
        upstream: None,
        upstream_eof: false,
        upstream_closed: false,
        up: Vec::new(),
    };
    if spec.upstream_unreachable {
        // Envoy's connect is refused; it then closes the client's side.
        w.wait_until(WAIT, |w| w.client_eof);
    } else if w.client.is_some() {
        // tcp_proxy connects as soon as the filters before it let the
        // connection through; steps start from a connected upstream.
        w.wait_for_upstream();
    }
    for step in spec.steps() {
        w.step(&step);
    }
    w.close_client();
    w.close_upstream(std::net::Shutdown::Both);
    let outcome = TcpOutcome {
        client_addr,
        upstream_connected: w.upstream.is_some(),
        upstream_received: std::mem::take(&mut w.up),
        downstream_received: std::mem::take(&mut w.down),
    };
    drop(w);
    server.drain();
    server.set_reachable(true)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays Envoy's part by hand: a plain relay between `front` (the
    /// client's side) and the upstream.
    fn relay(front: TcpListener, upstream_port: u16) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (down, _) = front.accept().unwrap();
            let up = TcpStream::connect(("127.0.0.1", upstream_port)).unwrap();
            let pipe = |mut from: TcpStream, to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let mut to = to;
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => to.write_all(&buf[..n]).unwrap(),
                        }
                    }
                })
            };
            let a = pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
            let b = pipe(up, down);
            a.join().unwrap();
            b.join().unwrap();
        })
    }

    fn spec(json: &str) -> TcpConnectionSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn replays_data_and_half_closes_through_a_relay() {
        let mut server = TcpUpstream::start().unwrap();
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = front.local_addr().unwrap().port();
        let r = relay(front, server.port);
        let s = spec(
            r#"{"events":[{"downstream":"hello"},{"upstream":"hi"},{"downstream":" again"},{"close":"downstream"},{"upstream":"bye"}]}"#,
        );
        let out = replay(port, &ConnectionSpec::default(), None, &mut server, &s).unwrap();
        r.join().unwrap();
        assert!(out.upstream_connected);
        assert_eq!(out.upstream_received, b"hello again");
        assert_eq!(out.downstream_received, b"hibye");
        assert!(out.client_addr.is_some());
    }

    #[test]
    fn an_unreachable_upstream_refuses_then_listens_again() {
        let mut server = TcpUpstream::start().unwrap();
        let port = server.port;
        server.set_reachable(false).unwrap();
        let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        server.set_reachable(true).unwrap();
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut w = Wire {
            server: &server,
            client: None,
            client_eof: true,
            client_closed: true,
            down: Vec::new(),
            upstream: None,
            upstream_eof: false,
            upstream_closed: false,
            up: Vec::new(),
        };
        assert!(w.wait_for_upstream(), "the same port listens again");
        drop(c);
    }
}
