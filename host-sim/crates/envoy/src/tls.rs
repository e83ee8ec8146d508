//! Test PKI and the TLS client: a throw-away CA, the proxy's server
//! certificate and client certificates carrying the scenario's SANs and
//! subject, and a rustls client that presents them to Envoy.

use crate::scenario::CertificateSpec;
use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

/// A certificate with its key, PEM and DER.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Issued {
    /// Lower-case hex SHA-256 of the DER certificate, as Envoy reports
    /// `connection.sha256_peer_certificate_digest`.
    #[cfg(test)]
    pub fn sha256_hex(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.cert_der);
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub cert_pem: String,
}

/// Parses an RFC 2253 subject (`CN=client,O=example`) into a distinguished
/// name. RFC 2253 lists the most specific part first, the reverse of the
/// certificate's own order, so the parts are added back to front: Envoy then
/// prints the subject exactly as written.
pub fn parse_subject(subject: &str) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = subject.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        parts.push(cur);
    }
    for part in parts.iter().rev() {
        let Some((k, v)) = part.split_once('=') else { bail!("subject {subject:?}: {part:?} is not KEY=value") };
        let ty = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            other => bail!("subject {subject:?}: unsupported attribute {other:?} (use CN, O, OU, C, ST, L)"),
        };
        dn.push(ty, v.trim());
    }
    Ok(dn)
}

impl Ca {
    pub fn new() -> Result<Self> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = parse_subject("CN=meshwasm test CA,O=meshwasm")?;
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        Ok(Self { cert_pem: cert.pem(), cert, key })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Issues a leaf certificate with the spec's URI SANs, DNS SANs and
    /// subject. `default_cn` is used when the spec has no subject.
    pub fn issue(&self, spec: &CertificateSpec, server: bool, default_cn: &str) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = parse_subject(if spec.subject.is_empty() { default_cn } else { &spec.subject })?;
        for uri in &spec.uri_sans {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().with_context(|| format!("URI SAN {uri:?}"))?));
        }
        for dns in &spec.dns_sans {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into().with_context(|| format!("DNS SAN {dns:?}"))?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let cert = params.signed_by(&key, &self.cert, &self.key).context("signing a certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }
}

/// Accepts whatever certificate Envoy presents: the engine tests plugins,
/// not the proxy's identity, and the server name need not match anything.
#[derive(Debug)]
pub(crate) struct AcceptAnyServer(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client side of one downstream connection.
pub enum ClientConn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ClientConn {
    /// Wraps `tcp` in TLS, presenting `client_cert` if given and asking for
    /// `sni` (no SNI when `None`). The handshake completes before returning.
    pub fn tls(tcp: TcpStream, sni: Option<&str>, client_cert: Option<&Issued>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
        let config = match client_cert {
            Some(c) => builder.with_client_auth_cert(
                vec![CertificateDer::from(c.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone())),
            )?,
            None => builder.with_no_client_auth(),
        };
        // An IP address as the server name sends no SNI extension.
        let name: ServerName<'static> = match sni {
            Some(s) => ServerName::try_from(s.to_string()).with_context(|| format!("SNI {s:?}"))?,
            None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).context("TLS handshake with Envoy")?;
        }
        Ok(Self::Tls(Box::new(stream)))
    }
}

impl ClientConn {
    /// The TCP socket under the connection.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }

    /// Half-closes the connection: the client sends no more (TLS first
    /// sends its `close_notify`, which Envoy reads as the end of the
    /// stream) but keeps reading.
    pub fn shutdown_write(&mut self) -> std::io::Result<()> {
        if let Self::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                s.conn.write_tls(&mut s.sock)?;
            }
        }
        self.tcp().shutdown(std::net::Shutdown::Write)
    }
}

impl Read for ClientConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => match s.read(buf) {
                // A peer that closes without close_notify: treat as the end.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for ClientConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_in_rfc2253_order() {
        let dn = parse_subject("CN=client,O=example").unwrap();
        let items: Vec<_> = dn.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(items, vec![DnType::OrganizationName, DnType::CommonName], "certificate order is reversed");
        assert!(parse_subject("XX=1").is_err());
        assert!(parse_subject("CN").is_err());
        let dn = parse_subject(r"CN=a\,b").unwrap();
        assert_eq!(dn.iter().count(), 1);
    }

    #[test]
    fn issues_certificates_with_sans() {
        let ca = Ca::new().unwrap();
        let spec = CertificateSpec {
            uri_sans: vec!["spiffe://cluster.local/ns/default/sa/client".into()],
            dns_sans: vec!["client.default.svc".into()],
            subject: "CN=client,O=example".into(),
            sha256: None,
        };
        let c = ca.issue(&spec, false, "CN=unused").unwrap();
        assert!(c.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem.contains("PRIVATE KEY"));
        assert_eq!(c.sha256_hex().len(), 64);
        // The SAN text is in the DER as an IA5String.
        let der = &c.cert_der;
        let has = |s: &str| der.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(has("spiffe://cluster.local/ns/default/sa/client"));
        assert!(has("client.default.svc"));
    }
}
