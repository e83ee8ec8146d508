//! Which listeners Envoy gets for the scenario's streams and TCP
//! connections, and the certificates their TLS needs.

use crate::bootstrap::{ListenerLayout, TlsFiles};
use crate::scenario::{CertificateSpec, ConnectionSpec, PluginType, Scenario, StreamSpec, TcpConnectionSpec};
use crate::tls;
use anyhow::Result;
use std::path::Path;

/// The server side a connection needs; streams (or TCP connections) with
/// equal keys share a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerKey {
    /// A TCP listener (network filters) rather than an HTTP one.
    tcp: bool,
    tls: bool,
    mtls: bool,
    local: Option<(Vec<String>, Vec<String>, String)>,
}

impl ListenerKey {
    fn of(c: &ConnectionSpec, tcp: bool) -> Self {
        Self {
            tcp,
            tls: c.is_tls(),
            mtls: c.mtls,
            local: c.is_tls().then(|| {
                c.local_certificate
                    .as_ref()
                    .map(|l| (l.uri_sans.clone(), l.dns_sans.clone(), l.subject.clone()))
                    .unwrap_or_default()
            }),
        }
    }
}

/// Listeners and certificates for the scenario's connections.
pub struct ListenerPlan {
    pub listeners: Vec<(ListenerKey, ListenerLayout)>,
    /// Per stream: listener index and the client certificate to present.
    pub streams: Vec<(usize, Option<tls::Issued>)>,
    /// The same per TCP connection.
    pub connections: Vec<(usize, Option<tls::Issued>)>,
    /// Per listener: the server certificate its TLS presents.
    pub server_certs: Vec<Option<tls::Issued>>,
    /// The CA behind every certificate of the plan (when some connection is
    /// TLS), and its PEM file in the side's directory.
    pub ca: Option<tls::Ca>,
    pub ca_path: std::path::PathBuf,
}

pub fn effective_connection<'a>(s: &'a Scenario, stream: &'a StreamSpec) -> &'a ConnectionSpec {
    stream.connection.as_ref().unwrap_or(&s.connection)
}

pub fn effective_tcp_connection<'a>(s: &'a Scenario, c: &'a TcpConnectionSpec) -> &'a ConnectionSpec {
    c.connection.as_ref().unwrap_or(&s.connection)
}

/// Whether Envoy gets a TCP listener: the scenario has network plugins or
/// TCP connections.
pub fn wants_tcp(s: &Scenario) -> bool {
    !s.connections.is_empty() || s.plugins.iter().any(|p| p.plugin_type == PluginType::Network)
}

impl ListenerPlan {
    pub fn new(s: &Scenario, dir: &Path) -> Result<Self> {
        let base = match s.direction {
            crate::scenario::Direction::Inbound => "inbound",
            crate::scenario::Direction::Outbound => "outbound",
            crate::scenario::Direction::Unspecified => "listener",
        };
        let conns: Vec<&ConnectionSpec> = std::iter::once(&s.connection)
            .chain(s.streams.iter().map(|st| effective_connection(s, st)))
            .chain(s.connections.iter().map(|c| effective_tcp_connection(s, c)))
            .collect();
        let ca = if conns.iter().any(|c| c.is_tls()) { Some(tls::Ca::new()?) } else { None };
        let ca_path = dir.join("ca.pem");
        if let Some(ca) = &ca {
            std::fs::write(&ca_path, &ca.cert_pem)?;
        }
        let mut listeners: Vec<(ListenerKey, ListenerLayout)> = Vec::new();
        let mut server_certs: Vec<Option<tls::Issued>> = Vec::new();
        let index_of = |c: &ConnectionSpec,
                        tcp: bool,
                        listeners: &mut Vec<(ListenerKey, ListenerLayout)>,
                        server_certs: &mut Vec<Option<tls::Issued>>|
         -> Result<usize> {
            let key = ListenerKey::of(c, tcp);
            if let Some(i) = listeners.iter().position(|(k, _)| *k == key) {
                return Ok(i);
            }
            let i = listeners.len();
            // Numbered per kind: inbound, inbound_1, ...; inbound_tcp,
            // inbound_tcp_1, ...
            let stem = if tcp { format!("{base}_tcp") } else { base.to_string() };
            let n = listeners.iter().filter(|(k, _)| k.tcp == tcp).count();
            let name = if n == 0 { stem } else { format!("{stem}_{n}") };
            let tls = match (&ca, key.tls) {
                (Some(ca), true) => {
                    let spec = c.local_certificate.clone().unwrap_or_default();
                    let server = ca.issue(&spec, true, "CN=envoy")?;
                    let (cert, key_file) = (dir.join(format!("{name}-cert.pem")), dir.join(format!("{name}-key.pem")));
                    std::fs::write(&cert, &server.cert_pem)?;
                    std::fs::write(&key_file, &server.key_pem)?;
                    server_certs.push(Some(server));
                    Some(TlsFiles {
                        cert_chain: cert,
                        private_key: key_file,
                        client_ca: c.mtls.then(|| ca_path.clone()),
                        alpn: Vec::new(),
                    })
                }
                _ => {
                    server_certs.push(None);
                    None
                }
            };
            listeners.push((key, ListenerLayout { name, tls, tcp }));
            Ok(i)
        };
        let client_cert = |c: &ConnectionSpec| -> Result<Option<tls::Issued>> {
            match (&ca, c.mtls) {
                (Some(ca), true) => {
                    let spec: CertificateSpec = c.peer_certificate.clone().unwrap_or_default();
                    Ok(Some(ca.issue(&spec, false, "CN=client")?))
                }
                _ => Ok(None),
            }
        };
        // The scenario's own connection gets the first listener of each kind.
        index_of(&s.connection, false, &mut listeners, &mut server_certs)?;
        if wants_tcp(s) {
            index_of(&s.connection, true, &mut listeners, &mut server_certs)?;
        }
        let mut streams = Vec::new();
        for st in &s.streams {
            let c = effective_connection(s, st);
            streams.push((index_of(c, false, &mut listeners, &mut server_certs)?, client_cert(c)?));
        }
        let mut connections = Vec::new();
        for tc in &s.connections {
            let c = effective_tcp_connection(s, tc);
            connections.push((index_of(c, true, &mut listeners, &mut server_certs)?, client_cert(c)?));
        }
        Ok(Self { listeners, streams, connections, server_certs, ca, ca_path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_share_listeners_by_server_side() {
        let s = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a.wasm"}],
               "streams":[
                 {"request":{}},
                 {"request":{},"connection":{"mtls":true,"peer_certificate":{"uri_sans":["spiffe://td/ns/a/sa/b"]}}},
                 {"request":{},"connection":{"mtls":true,"peer_certificate":{"subject":"CN=other"}}},
                 {"request":{},"connection":{"tls":true}}
               ]}"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("meshwasm-plan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = ListenerPlan::new(&s, &dir).unwrap();
        let names: Vec<_> = plan.listeners.iter().map(|(_, l)| l.name.as_str()).collect();
        assert_eq!(names, vec!["inbound", "inbound_1", "inbound_2"]);
        let idx: Vec<_> = plan.streams.iter().map(|(i, c)| (*i, c.is_some())).collect();
        assert_eq!(idx, vec![(0, false), (1, true), (1, true), (2, false)]);
        assert!(plan.listeners[1].1.tls.as_ref().unwrap().client_ca.is_some());
        assert!(plan.listeners[2].1.tls.as_ref().unwrap().client_ca.is_none());
        assert!(dir.join("ca.pem").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_connections_get_listeners_of_their_own() {
        let s = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a.wasm","type":"network"}],
               "streams":[{"request":{}}],
               "connections":[{"events":[]},{"connection":{"mtls":true}},{"connection":{"mtls":true}}]}"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("meshwasm-plan-tcp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = ListenerPlan::new(&s, &dir).unwrap();
        let names: Vec<_> = plan.listeners.iter().map(|(_, l)| (l.name.as_str(), l.tcp)).collect();
        assert_eq!(names, vec![("inbound", false), ("inbound_tcp", true), ("inbound_tcp_1", true)]);
        assert_eq!(plan.streams.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0]);
        let idx: Vec<_> = plan.connections.iter().map(|(i, c)| (*i, c.is_some())).collect();
        assert_eq!(idx, vec![(1, false), (2, true), (2, true)]);
        std::fs::remove_dir_all(&dir).unwrap();
        // HTTP plugins only and no connections: no TCP listener.
        let s = Scenario::from_json(r#"{"plugins":[{"wasm":"a.wasm"}],"streams":[]}"#).unwrap();
        assert!(!wants_tcp(&s));
    }
}
