//! The relay's side of a mutual-TLS hop between two Envoys: it terminates
//! the client Envoy's TLS (presenting the server Envoy's certificate and
//! requiring a client certificate from the hop's CA) and originates TLS to
//! the server Envoy (presenting the client certificate, the hop's SNI and
//! ALPN list, and the TLS version the client Envoy negotiated). In between
//! it sees plaintext, which the relay records (see `two.rs`).
//!
//! One thread per relayed connection drives both rustls connections over
//! non-blocking sockets: a rustls connection carries both directions, so
//! two blocking copy threads (as for plaintext) cannot share it.

use crate::tls::{AcceptAnyServer, Issued};
use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long each handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The certificates and parameters of one mutual-TLS hop.
pub struct HopTls {
    server: Arc<ServerConfig>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    client_cert: Issued,
    alpn: Vec<Vec<u8>>,
    name: ServerName<'static>,
}

fn key_of(c: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone()))
}

impl HopTls {
    /// `server_cert`: what the relay presents to the client Envoy (the
    /// server Envoy's own certificate); `client_cert`: what it presents to
    /// the server Envoy; `ca_der`: the CA both chain to; `sni` (none if
    /// `None`) and `alpn` as the client Envoy sends them.
    pub fn new(
        server_cert: &Issued,
        client_cert: &Issued,
        ca_der: Vec<u8>,
        sni: Option<&str>,
        alpn: &[String],
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der)).context("the hop's CA")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .context("the relay's client certificate verifier")?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![CertificateDer::from(server_cert.cert_der.clone())], key_of(server_cert))
            .context("the relay's server certificate")?;
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        server.alpn_protocols = alpn.clone();
        // An IP address as the server name sends no SNI extension.
        let name: ServerName<'static> = match sni {
            Some(s) => ServerName::try_from(s.to_string()).with_context(|| format!("SNI {s:?}"))?,
            None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        Ok(Self { server: Arc::new(server), provider, client_cert: client_cert.clone(), alpn, name })
    }

    /// The client configuration towards the server Envoy, offering only
    /// `version` (the one the client Envoy negotiated with the relay).
    fn client_config(&self, version: &'static rustls::SupportedProtocolVersion) -> Result<Arc<ClientConfig>> {
        let mut c = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[version])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(self.provider.clone())))
            .with_client_auth_cert(
                vec![CertificateDer::from(self.client_cert.cert_der.clone())],
                key_of(&self.client_cert),
            )
            .context("the relay's client certificate")?;
        c.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(c))
    }

    /// Completes the handshake with the client Envoy on `down`, then
    /// connects to `target` and completes the handshake with the server
    /// Envoy. Returns both ends, ready for [`pump`].
    pub fn connect(&self, mut down: TcpStream, target: u16) -> Result<(End, End)> {
        down.set_nonblocking(false)?;
        down.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut srv = ServerConnection::new(self.server.clone())?;
        while srv.is_handshaking() {
            srv.complete_io(&mut down).context("TLS handshake with the client Envoy")?;
        }
        let version = match srv.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => &rustls::version::TLS12,
            _ => &rustls::version::TLS13,
        };
        let mut up = TcpStream::connect(("127.0.0.1", target)).context("connecting to the server Envoy")?;
        up.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut cli = ClientConnection::new(self.client_config(version)?, self.name.clone())?;
        while cli.is_handshaking() {
            cli.complete_io(&mut up).context("TLS handshake with the server Envoy")?;
        }
        Ok((End::new(down, srv.into())?, End::new(up, cli.into())?))
    }
}

/// One side of a relayed connection: its socket and TLS state.
pub struct End {
    tcp: TcpStream,
    tls: Connection,
    /// The peer's TCP stream reached EOF.
    tcp_eof: bool,
    /// The peer's TLS stream ended (close_notify, or EOF without one).
    ended: bool,
    /// We sent close_notify (the other side ended) and, once it is
    /// written, shut our writing half.
    closing: bool,
    shut: bool,
}

impl End {
    fn new(tcp: TcpStream, mut tls: Connection) -> Result<Self> {
        tcp.set_read_timeout(None)?;
        tcp.set_nonblocking(true)?;
        let _ = tcp.set_nodelay(true);
        // Everything read from one side is written to the other at once.
        tls.set_buffer_limit(None);
        Ok(Self { tcp, tls, tcp_eof: false, ended: false, closing: false, shut: false })
    }

    /// The socket (for its addresses).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// Reads what `from` has, hands the plaintext to `seen` and writes it to
/// `to`; passes the end of `from`'s stream on as `to`'s close_notify.
/// Returns whether anything happened.
fn transfer(from: &mut End, to: &mut End, seen: &mut dyn FnMut(&[u8])) -> std::io::Result<bool> {
    let mut progress = false;
    if !from.tcp_eof && from.tls.wants_read() {
        match from.tls.read_tls(&mut from.tcp) {
            Ok(n) => {
                progress = true;
                from.tcp_eof = n == 0;
                from.tls.process_new_packets().map_err(std::io::Error::other)?;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if from.ended {
        return Ok(progress);
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.tls.reader().read(&mut buf) {
            Ok(0) => {
                from.ended = true;
                break;
            }
            Ok(n) => {
                progress = true;
                seen(&buf[..n]);
                to.tls.writer().write_all(&buf[..n])?;
            }
            Err(e) if would_block(&e) => break,
            // The peer closed its TCP stream without close_notify.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                from.ended = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if from.ended {
        progress = true;
        to.tls.send_close_notify();
        to.closing = true;
    }
    Ok(progress)
}

/// Writes what TLS has queued for `end`'s peer; after the close_notify,
/// shuts the writing half. Returns whether anything happened.
fn flush(end: &mut End) -> std::io::Result<bool> {
    let mut progress = false;
    while end.tls.wants_write() {
        match end.tls.write_tls(&mut end.tcp) {
            Ok(_) => progress = true,
            Err(e) if would_block(&e) => return Ok(progress),
            Err(e) => return Err(e),
        }
    }
    if end.closing && !end.shut {
        end.shut = true;
        progress = true;
        let _ = end.tcp.shutdown(Shutdown::Write);
    }
    Ok(progress)
}

/// Relays between `down` (the client Envoy) and `up` (the server Envoy)
/// until both directions have ended, an error or reset closes both, or
/// `stop` is set. `seen(upward, bytes)` sees the plaintext as it passes.
pub fn pump(mut down: End, mut up: End, stop: &AtomicBool, seen: &mut dyn FnMut(bool, &[u8])) {
    loop {
        let step = (|| -> std::io::Result<bool> {
            let mut p = transfer(&mut down, &mut up, &mut |b| seen(true, b))?;
            p |= transfer(&mut up, &mut down, &mut |b| seen(false, b))?;
            p |= flush(&mut up)?;
            p |= flush(&mut down)?;
            Ok(p)
        })();
        match step {
            Ok(_) if down.ended && up.ended && down.shut && up.shut => return,
            Ok(true) => {}
            Ok(false) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                // Pending alerts go out; a reset is passed on as a reset.
                let _ = down.tls.write_tls(&mut down.tcp);
                let _ = up.tls.write_tls(&mut up.tcp);
                if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) {
                    let _ = crate::tcp::linger_zero(&down.tcp);
                    let _ = crate::tcp::linger_zero(&up.tcp);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::CertificateSpec;
    use crate::tls::{Ca, ClientConn};
    use std::net::TcpListener;

    fn spec(uri: &str) -> CertificateSpec {
        CertificateSpec { uri_sans: vec![uri.into()], ..Default::default() }
    }

    /// What the fake server saw: SNI, bytes read, the client's certificate.
    type Seen = (Option<String>, Vec<u8>, Vec<u8>);

    /// A TLS server standing in for the server Envoy: requires a client
    /// certificate, records the SNI, ALPN and version it saw and what it
    /// read, answers `reply` after the client's end of stream, then closes.
    fn fake_server(ca: &Ca, reply: &'static [u8]) -> (u16, std::thread::JoinHandle<Seen>) {
        let cert = ca.issue(&spec("spiffe://td/ns/default/sa/server"), true, "CN=envoy").unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert_der())).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![CertificateDer::from(cert.cert_der.clone())], key_of(&cert))
            .unwrap();
        config.alpn_protocols = vec![b"istio-peer-exchange".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = ServerConnection::new(Arc::new(config)).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            let sni = s.conn.server_name().map(str::to_string);
            let peer = s.conn.peer_certificates().unwrap()[0].to_vec();
            assert_eq!(s.conn.alpn_protocol(), Some(&b"istio-peer-exchange"[..]));
            s.write_all(reply).unwrap();
            s.conn.send_close_notify();
            s.flush().unwrap();
            s.sock.shutdown(Shutdown::Write).unwrap();
            (sni, got, peer)
        });
        (port, h)
    }

    #[test]
    fn the_relay_decrypts_records_and_reencrypts_both_ways_with_half_close() {
        let ca = Ca::new().unwrap();
        let client_cert = ca.issue(&spec("spiffe://td/ns/default/sa/client"), false, "CN=client").unwrap();
        let relay_server_cert = ca.issue(&spec("spiffe://td/ns/default/sa/server"), true, "CN=envoy").unwrap();
        let hop = HopTls::new(
            &relay_server_cert,
            &client_cert,
            ca.cert_der(),
            Some("server.com"),
            &["istio-peer-exchange".into()],
        )
        .unwrap();
        let (target, server) = fake_server(&ca, b"pong");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        let relay = std::thread::spawn(move || {
            let (down, _) = listener.accept().unwrap();
            let (d, u) = hop.connect(down, target).unwrap();
            let mut rec = (Vec::new(), Vec::new());
            pump(d, u, &AtomicBool::new(false), &mut |upward, b| {
                if upward { &mut rec.0 } else { &mut rec.1 }.extend_from_slice(b)
            });
            rec
        });
        // The client Envoy's part: ALPN is not offered by ClientConn, so
        // the relay's client side is checked with the fake server only.
        let tcp = TcpStream::connect(("127.0.0.1", relay_port)).unwrap();
        let mut c = ClientConn::tls(tcp, Some("server.com"), Some(&client_cert)).unwrap();
        c.write_all(b"ping").unwrap();
        c.flush().unwrap();
        c.shutdown_write().unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"pong", "the answer came back through both TLS legs after the half-close");
        let (up, down) = relay.join().unwrap();
        assert_eq!((up.as_slice(), down.as_slice()), (&b"ping"[..], &b"pong"[..]), "recorded in plaintext");
        let (sni, got, peer) = server.join().unwrap();
        assert_eq!(sni.as_deref(), Some("server.com"));
        assert_eq!(got, b"ping");
        assert_eq!(peer, client_cert.cert_der, "the server sees the client's certificate");
    }

    #[test]
    fn a_client_without_a_certificate_is_refused() {
        let ca = Ca::new().unwrap();
        let client_cert = ca.issue(&spec("spiffe://td/ns/default/sa/client"), false, "CN=client").unwrap();
        let server_cert = ca.issue(&spec("spiffe://td/ns/default/sa/server"), true, "CN=envoy").unwrap();
        let hop = HopTls::new(&server_cert, &client_cert, ca.cert_der(), None, &[]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = std::thread::spawn(move || {
            let (down, _) = listener.accept().unwrap();
            hop.connect(down, 1).is_err()
        });
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let r = ClientConn::tls(tcp, None, None).and_then(|mut c| {
            c.write_all(b"x")?;
            let mut b = Vec::new();
            c.read_to_end(&mut b)?;
            Ok(b)
        });
        assert!(relay.join().unwrap(), "the relay refuses the handshake");
        assert!(r.map_or(true, |b| b.is_empty()));
    }
}
