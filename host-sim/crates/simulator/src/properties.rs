//! Envoy's attributes as `proxy_get_property` returns them: strings raw,
//! integers 8-byte little-endian, bools one byte, durations and timestamps as
//! int64 nanoseconds, string maps in the pairs encoding, protobuf messages
//! serialized. Paths are `\0`-separated segments; a path into a map or a
//! message indexes it. Unknown top-level names fall back to the filter state
//! `wasm.<name>`, as in Envoy.

use super::stream::{HttpStream, Phase};
use crate::abi::{HostResult, Status};
use crate::scenario::{CertificateSpec, ConnectionSpec, Direction, HopTlsSpec, NodeSpec};
use serde_json::Value as Json;

/// Facts a property lookup can draw on outside any stream.
pub struct ProxyFacts<'a> {
    pub node: &'a NodeSpec,
    pub node_proto: &'a [u8],
    pub direction: Direction,
    pub plugin_name: &'a str,
    pub plugin_root_id: &'a str,
    pub plugin_vm_id: &'a str,
    pub upstream_cluster: &'a str,
    /// The streams' route name ("" when unnamed).
    pub route_name: &'a str,
    /// The upstream endpoint's `filter_metadata`.
    pub upstream_host_metadata: &'a serde_json::Map<String, Json>,
    /// The upstream cluster's `filter_metadata`.
    pub upstream_cluster_metadata: &'a serde_json::Map<String, Json>,
    /// The upstream connection's mutual TLS: the hop to the server proxy
    /// of a two-proxy chain (`server_proxy.mtls`).
    pub upstream_tls: Option<&'a HopTlsSpec>,
}

/// A typed value before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    Str(String),
    Bytes(Vec<u8>),
    Int(i64),
    Uint(u64),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    /// Nanoseconds since the Unix epoch.
    Timestamp(i64),
    Map(Vec<(String, Vec<u8>)>),
    Json(Json),
    Proto(Vec<u8>),
}

impl Prop {
    pub fn encode(self) -> HostResult<Vec<u8>> {
        Ok(match self {
            Prop::Str(s) => s.into_bytes(),
            Prop::Bytes(b) | Prop::Proto(b) => b,
            Prop::Int(i) | Prop::Duration(i) | Prop::Timestamp(i) => i.to_le_bytes().to_vec(),
            Prop::Uint(u) => u.to_le_bytes().to_vec(),
            Prop::Bool(b) => vec![b as u8],
            Prop::Map(m) => crate::pairs::encode(&m),
            Prop::Json(j) => encode_json(&j)?,
        })
    }

    /// Indexes a map or a JSON struct by one path segment.
    fn index(self, key: &str) -> HostResult<Prop> {
        match self {
            Prop::Map(m) => m
                .into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| Prop::Bytes(v))
                .ok_or(Status::NotFound),
            Prop::Json(Json::Object(o)) => o.get(key).cloned().map(Prop::Json).ok_or(Status::NotFound),
            Prop::Json(Json::Array(a)) => {
                key.parse::<usize>().ok().and_then(|i| a.get(i).cloned()).map(Prop::Json).ok_or(Status::NotFound)
            }
            _ => Err(Status::NotFound),
        }
    }
}

/// Struct values as Envoy serializes CEL values: strings raw, numbers as
/// 8-byte doubles, bools one byte; a struct is a map in the pairs encoding
/// (keys sorted, values serialized the same way), a list the pairs encoding
/// of its elements with empty values, and null cannot be serialized
/// (SERIALIZATION_FAILURE). Observed in Envoy 1.40.
fn encode_json(j: &Json) -> HostResult<Vec<u8>> {
    Ok(match j {
        Json::Null => return Err(Status::SerializationFailure),
        Json::Bool(b) => vec![*b as u8],
        Json::Number(n) => n.as_f64().unwrap_or(0.0).to_le_bytes().to_vec(),
        Json::String(s) => s.as_bytes().to_vec(),
        Json::Object(o) => {
            let mut pairs = Vec::with_capacity(o.len());
            for (k, v) in o {
                pairs.push((k.as_bytes().to_vec(), encode_json(v)?));
            }
            pairs.sort();
            crate::pairs::encode(&pairs)
        }
        Json::Array(a) => {
            let mut pairs = Vec::with_capacity(a.len());
            for v in a {
                pairs.push((encode_json(v)?, Vec::new()));
            }
            crate::pairs::encode(&pairs)
        }
    })
}

/// Resolves a property path.
/// `stream` is the stream and the asking filter's chain index; None in root
/// contexts.
pub fn get_property(facts: &ProxyFacts, stream: Option<(&HttpStream, usize)>, path: &[&str]) -> HostResult<Vec<u8>> {
    let (first, rest) = path.split_first().ok_or(Status::NotFound)?;
    let (value, rest) = match resolve_top(facts, stream, first, rest)? {
        Resolved::Value(v, consumed) => (v, &rest[consumed..]),
    };
    let mut value = value;
    for seg in rest {
        value = value.index(seg)?;
    }
    value.encode()
}

enum Resolved {
    /// The value and how many of the remaining segments it consumed.
    Value(Prop, usize),
}

fn resolve_top(
    facts: &ProxyFacts,
    stream: Option<(&HttpStream, usize)>,
    first: &str,
    rest: &[&str],
) -> HostResult<Resolved> {
    let field = rest.first().copied();
    let one = |p: Prop| Ok(Resolved::Value(p, 1));
    match first {
        "plugin_name" => Ok(Resolved::Value(Prop::Str(facts.plugin_name.into()), 0)),
        "plugin_root_id" => Ok(Resolved::Value(Prop::Str(facts.plugin_root_id.into()), 0)),
        "plugin_vm_id" => Ok(Resolved::Value(Prop::Str(facts.plugin_vm_id.into()), 0)),
        "xds" => match field.ok_or(Status::NotFound)? {
            "node" => node_property(facts, &rest[1..]).map(|(p, n)| Resolved::Value(p, n + 1)),
            "cluster_name" => match stream {
                // tcp_proxy's cluster, known once it picked the upstream.
                Some((s, _)) if s.network => {
                    if s.reached_upstream {
                        one(Prop::Str(super::TCP_UPSTREAM_CLUSTER.into()))
                    } else {
                        Err(Status::NotFound)
                    }
                }
                Some(_) => one(Prop::Str(facts.upstream_cluster.into())),
                None => Err(Status::NotFound),
            },
            // The route's name (scenario `route_name`); Envoy 1.40 answers
            // "" for an unnamed route (observed; conformance
            // properties.json). HTTP streams only: tcp_proxy has no route.
            "route_name" => match stream {
                Some((s, _)) if !s.network => one(Prop::Str(facts.route_name.into())),
                _ => Err(Status::NotFound),
            },
            // The upstream cluster's metadata (Envoy's CEL
            // `xds.cluster_metadata`), where `xds.cluster_name` is known.
            "cluster_metadata" => match stream {
                Some((s, _)) if !s.network || s.reached_upstream => {
                    metadata_property(facts.upstream_cluster_metadata, rest)
                }
                _ => Err(Status::NotFound),
            },
            // The picked upstream host's `envoy.config.core.v3.Metadata`
            // (Envoy's CEL `xds.upstream_host_metadata`): the serialized
            // message, or indexed as `filter_metadata.<namespace>.<key>`.
            // Only once the upstream is picked, as in Envoy.
            "upstream_host_metadata" => match stream {
                Some((s, _)) if s.reached_upstream => metadata_property(facts.upstream_host_metadata, rest),
                _ => Err(Status::NotFound),
            },
            "listener_direction" if stream.is_some() => one(Prop::Int(match facts.direction {
                Direction::Unspecified => 0,
                Direction::Inbound => 1,
                Direction::Outbound => 2,
            })),
            _ => Err(Status::NotFound),
        },
        "request" => {
            let (s, filter) = stream.ok_or(Status::NotFound)?;
            if s.network {
                return network_request_property(s, field.ok_or(Status::NotFound)?).map(|p| Resolved::Value(p, 1));
            }
            request_property(s, s.holds_request_headers(filter), field.ok_or(Status::NotFound)?)
                .map(|p| Resolved::Value(p, 1))
        }
        "response" => {
            let (s, _) = stream.ok_or(Status::NotFound)?;
            response_property(s, field.ok_or(Status::NotFound)?).map(|p| Resolved::Value(p, 1))
        }
        "connection" => {
            let (s, _) = stream.ok_or(Status::NotFound)?;
            connection_property(s, field.ok_or(Status::NotFound)?).map(|p| Resolved::Value(p, 1))
        }
        "upstream" => {
            let (s, _) = stream.ok_or(Status::NotFound)?;
            let field = field.ok_or(Status::NotFound)?;
            upstream_tls_property(s, facts.upstream_tls, field)
                .unwrap_or_else(|| address_property(s, first, field))
                .map(|p| Resolved::Value(p, 1))
        }
        "source" | "destination" => {
            let (s, _) = stream.ok_or(Status::NotFound)?;
            address_property(s, first, field.ok_or(Status::NotFound)?).map(|p| Resolved::Value(p, 1))
        }
        "filter_state" => {
            let (s, _) = stream.ok_or(Status::NotFound)?;
            let key = field.ok_or(Status::NotFound)?;
            let e = s.filter_state.get(key).ok_or(Status::NotFound)?;
            one(Prop::Bytes(e.value.clone()))
        }
        other => {
            // Envoy's fallback: a top-level name it does not know is looked
            // up in the filter state as `wasm.<name>`.
            let (s, _) = stream.ok_or(Status::NotFound)?;
            let e = s.filter_state.get(&format!("wasm.{other}")).ok_or(Status::NotFound)?;
            Ok(Resolved::Value(Prop::Bytes(e.value.clone()), 0))
        }
    }
}

/// A `Metadata` property: the serialized message, or (with segments left)
/// a value to index as `filter_metadata.<namespace>.<key>`.
fn metadata_property(filter_metadata: &serde_json::Map<String, Json>, rest: &[&str]) -> HostResult<Resolved> {
    if rest.len() > 1 {
        let metadata = serde_json::Map::from_iter([("filter_metadata".into(), Json::Object(filter_metadata.clone()))]);
        Ok(Resolved::Value(Prop::Json(Json::Object(metadata)), 1))
    } else {
        Ok(Resolved::Value(Prop::Proto(encode_metadata(filter_metadata)), 1))
    }
}

/// `envoy.config.core.v3.Metadata` serialized (the wire crate's message,
/// entries in key order as protobuf's deterministic serialization writes
/// maps). Namespaces whose value is not an object are left out (the
/// scenario gives Structs).
fn encode_metadata(filter_metadata: &serde_json::Map<String, Json>) -> Vec<u8> {
    use meshwasm_wire::protobuf::{encode, struct_from_json, Metadata};
    let filter_metadata = filter_metadata
        .iter()
        .filter_map(|(k, v)| match v {
            Json::Object(fields) => Some((k.clone(), struct_from_json(fields))),
            _ => None,
        })
        .collect();
    encode(&Metadata { filter_metadata })
}

fn node_property(facts: &ProxyFacts, rest: &[&str]) -> HostResult<(Prop, usize)> {
    match rest.first().copied() {
        None => Ok((Prop::Proto(facts.node_proto.to_vec()), 0)),
        Some("id") => Ok((Prop::Str(facts.node.id.clone()), 1)),
        Some("cluster") => Ok((Prop::Str(facts.node.cluster.clone()), 1)),
        Some("metadata") => Ok((Prop::Json(Json::Object(facts.node.metadata.clone())), 1)),
        Some(_) => Err(Status::NotFound),
    }
}

/// `request.*` on a TCP connection (observed in Envoy 1.40): the start
/// time and the bytes read from the client so far; no protocol (how a
/// plugin tells a TCP context from an HTTP one), no duration, no headers.
fn network_request_property(s: &HttpStream, field: &str) -> HostResult<Prop> {
    match field {
        "time" => Ok(Prop::Timestamp(s.start_ns as i64)),
        "size" | "total_size" => Ok(Prop::Int(s.bytes_received as i64)),
        "headers_bytes" => Ok(Prop::Int(0)),
        _ => Err(Status::NotFound),
    }
}

fn request_property(s: &HttpStream, headers_held: bool, field: &str) -> HostResult<Prop> {
    let h = &s.request_headers;
    let header_str = |name: &str| h.get_str(name).map(Prop::Str).ok_or(Status::NotFound);
    // Facts from the stream info are always there; header-derived ones need
    // the request headers (see `HttpStream::held_request_headers`).
    match field {
        "time" => return Ok(Prop::Timestamp(s.start_ns as i64)),
        "protocol" => return Ok(Prop::Str("HTTP/1.1".into())),
        "duration" => return s.end_ns.map(|e| Prop::Duration((e - s.start_ns) as i64)).ok_or(Status::NotFound),
        _ => {}
    }
    let with_headers = headers_held || s.phase == Some(Phase::Log);
    match field {
        // Envoy: the content-length when the headers are at hand, else the
        // body bytes received so far (observed in 1.40: never missing).
        "size" => {
            let cl = h.get_str("content-length").and_then(|v| v.parse::<i64>().ok()).filter(|_| with_headers);
            return Ok(Prop::Int(cl.unwrap_or(s.request_body_bytes as i64)));
        }
        "total_size" => {
            let headers = if with_headers { h.byte_size() } else { 0 };
            return Ok(Prop::Int((s.request_body_bytes + headers) as i64));
        }
        _ => {}
    }
    if !with_headers {
        return Err(Status::NotFound);
    }
    let path = h.get_str(":path");
    match field {
        "path" => header_str(":path"),
        "url_path" => path.map(|p| Prop::Str(p.split('?').next().unwrap_or("").to_string())).ok_or(Status::NotFound),
        "query" => path
            .map(|p| Prop::Str(p.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default()))
            .ok_or(Status::NotFound),
        "host" => header_str(":authority"),
        "scheme" => header_str(":scheme").or_else(|_| header_str("x-forwarded-proto")),
        "method" => header_str(":method"),
        "referer" => header_str("referer"),
        "useragent" => header_str("user-agent"),
        "id" => header_str("x-request-id"),
        "headers" => Ok(Prop::Map(h.0.clone())),
        _ => Err(Status::NotFound),
    }
}

fn response_property(s: &HttpStream, field: &str) -> HostResult<Prop> {
    let done = s.phase == Some(Phase::Log);
    if s.network {
        // What a TCP connection's stream info has (observed in Envoy 1.40):
        // the bytes written to the client so far and the flags (UF,URX when
        // the upstream refused it); no code, details or headers.
        return match field {
            "flags" => Ok(Prop::Uint(s.response_flags)),
            "size" | "total_size" => Ok(Prop::Int(s.bytes_sent as i64)),
            "headers_bytes" => Ok(Prop::Int(0)),
            _ => Err(Status::NotFound),
        };
    }
    match field {
        "code" => s.response_code.map(|c| Prop::Int(c as i64)).ok_or(Status::NotFound),
        "code_details" => Ok(Prop::Str(s.response_code_details.clone())),
        "flags" => Ok(Prop::Uint(s.response_flags)),
        "headers" if !s.response_headers.is_empty() => Ok(Prop::Map(s.response_headers.0.clone())),
        "trailers" if !s.response_trailers.is_empty() => Ok(Prop::Map(s.response_trailers.0.clone())),
        "grpc_status" => grpc_status(s).map(Prop::Int).ok_or(Status::NotFound),
        "size" if done => Ok(Prop::Int(s.response_body_bytes as i64)),
        "total_size" if done => Ok(Prop::Int(
            (s.response_body_bytes + s.response_headers.byte_size() + s.response_trailers.byte_size()) as i64,
        )),
        _ => Err(Status::NotFound),
    }
}

/// Envoy's `Grpc::Common::getGrpcStatus`: trailers, then headers, then the
/// HTTP status mapped to a gRPC code (200 gives 2 UNKNOWN; observed in 1.40).
fn grpc_status(s: &HttpStream) -> Option<i64> {
    let from = |m: &super::stream::HeaderMap| m.get_str("grpc-status").and_then(|v| v.parse().ok());
    from(&s.response_trailers)
        .or_else(|| from(&s.response_headers))
        .or_else(|| s.response_code.map(super::http1::http_to_grpc_status))
}

/// The client's certificate on an mTLS connection, with the envoy engine's
/// default subject (`CN=client`) when the scenario gives none.
pub(crate) fn peer_certificate(c: &ConnectionSpec) -> Option<CertificateSpec> {
    if !c.mtls {
        return None;
    }
    let mut cert = c.peer_certificate.clone().unwrap_or_default();
    if cert.subject.is_empty() {
        cert.subject = "CN=client".into();
    }
    Some(cert)
}

/// The proxy's certificate on a TLS connection (default subject `CN=envoy`).
pub(crate) fn local_certificate(c: &ConnectionSpec) -> Option<CertificateSpec> {
    if !c.is_tls() {
        return None;
    }
    let mut cert = c.local_certificate.clone().unwrap_or_default();
    if cert.subject.is_empty() {
        cert.subject = "CN=envoy".into();
    }
    Some(cert)
}

/// The peer certificate's SHA-256 as lower-case hex: the scenario's, else a
/// stand-in digest of the subject and SANs (Envoy's is of the real
/// certificate, so its value is host-specific; its shape is the same).
pub(crate) fn peer_digest(cert: &CertificateSpec) -> String {
    if let Some(d) = &cert.sha256 {
        return d.clone();
    }
    let text = format!("{}|{}|{}", cert.subject, cert.uri_sans.join(","), cert.dns_sans.join(","));
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn connection_property(s: &HttpStream, field: &str) -> HostResult<Prop> {
    let c = &s.connection;
    let tls = c.is_tls();
    // Before the handshake (a network filter's on_new_connection) Envoy has
    // its own certificate but nothing of the client's (observed in 1.40:
    // `connection.mtls` false, peer fields missing, local ones present).
    let peer = if s.tls_pending { None } else { peer_certificate(c) };
    let local = local_certificate(c);
    let first = |v: &[String]| v.first().cloned().map(Prop::Str).ok_or(Status::NotFound);
    match field {
        "id" => Ok(Prop::Uint(s.connection_id)),
        "mtls" => Ok(Prop::Bool(peer.is_some())),
        "requested_server_name" => Ok(Prop::Str(c.requested_server_name.clone().unwrap_or_default())),
        "tls_version" if tls => {
            // Envoy remembers the first answer: read before the handshake
            // it is BoringSSL's initial `TLSv1.2`, and stays that (observed
            // in 1.40); after it, the negotiated version: TLSv1.3 with the
            // test client, TLSv1.2 from a client Envoy (its default maximum).
            let mut seen = s.tls_version_seen.borrow_mut();
            let negotiated = if c.client_is_envoy { "TLSv1.2" } else { "TLSv1.3" };
            let v = seen.get_or_insert_with(|| if s.tls_pending { "TLSv1.2" } else { negotiated }.to_string());
            Ok(Prop::Str(v.clone()))
        }
        "subject_local_certificate" => local.map(|l| Prop::Str(l.subject)).ok_or(Status::NotFound),
        "subject_peer_certificate" => peer.map(|p| Prop::Str(p.subject)).ok_or(Status::NotFound),
        "uri_san_local_certificate" => local.map_or(Err(Status::NotFound), |l| first(&l.uri_sans)),
        "uri_san_peer_certificate" => peer.map_or(Err(Status::NotFound), |p| first(&p.uri_sans)),
        "dns_san_local_certificate" => local.map_or(Err(Status::NotFound), |l| first(&l.dns_sans)),
        "dns_san_peer_certificate" => peer.map_or(Err(Status::NotFound), |p| first(&p.dns_sans)),
        "sha256_peer_certificate_digest" => peer.map(|p| Prop::Str(peer_digest(&p))).ok_or(Status::NotFound),
        _ => Err(Status::NotFound),
    }
}

/// `upstream.*` facts of a TLS upstream connection (the mTLS hop of a
/// two-proxy chain), once the upstream is connected: the proxy's own
/// certificate is the hop's client certificate, the peer's its server
/// certificate, with the subjects the Envoy engine gives certificates
/// without one. None: not a TLS field (an address field, or unknown).
fn upstream_tls_property(s: &HttpStream, tls: Option<&HopTlsSpec>, field: &str) -> Option<HostResult<Prop>> {
    let with_subject = |c: &CertificateSpec, default: &str| {
        let mut c = c.clone();
        if c.subject.is_empty() {
            c.subject = default.into();
        }
        c
    };
    let hop = tls.filter(|_| s.reached_upstream);
    let local = hop.map(|h| with_subject(&h.client_certificate, "CN=client"));
    let peer = hop.map(|h| with_subject(&h.server_certificate, "CN=envoy"));
    let first = |v: Option<&Vec<String>>| v.and_then(|v| v.first().cloned()).map(Prop::Str).ok_or(Status::NotFound);
    Some(match field {
        // Envoy's default maximum as a TLS client (observed in 1.40).
        "tls_version" => hop.map(|_| Prop::Str("TLSv1.2".into())).ok_or(Status::NotFound),
        "subject_local_certificate" => local.map(|l| Prop::Str(l.subject)).ok_or(Status::NotFound),
        "subject_peer_certificate" => peer.map(|p| Prop::Str(p.subject)).ok_or(Status::NotFound),
        "uri_san_local_certificate" => first(local.as_ref().map(|l| &l.uri_sans)),
        "uri_san_peer_certificate" => first(peer.as_ref().map(|p| &p.uri_sans)),
        "dns_san_local_certificate" => first(local.as_ref().map(|l| &l.dns_sans)),
        "dns_san_peer_certificate" => first(peer.as_ref().map(|p| &p.dns_sans)),
        "sha256_peer_certificate_digest" => peer.map(|p| Prop::Str(peer_digest(&p))).ok_or(Status::NotFound),
        _ => return None,
    })
}

/// Simulated addresses: the client at 127.0.0.1:40000+stream, the proxy's
/// listener at 127.0.0.1:10000, the upstream at 127.0.0.1:18080.
fn address_property(s: &HttpStream, which: &str, field: &str) -> HostResult<Prop> {
    let (ip, port) = match which {
        "source" => ("127.0.0.1", 40000 + (s.connection_id % 20000) as i64),
        "destination" => ("127.0.0.1", 10000),
        _ if s.reached_upstream => ("127.0.0.1", 18080),
        _ => return Err(Status::NotFound),
    };
    match field {
        "address" => Ok(Prop::Str(format!("{ip}:{port}"))),
        "port" => Ok(Prop::Int(port)),
        _ => Err(Status::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::HeaderMap;

    static EMPTY: std::sync::LazyLock<serde_json::Map<String, Json>> = std::sync::LazyLock::new(Default::default);

    fn facts(node: &NodeSpec) -> ProxyFacts<'_> {
        ProxyFacts {
            node,
            node_proto: b"proto",
            direction: Direction::Inbound,
            plugin_name: "p",
            plugin_root_id: "root",
            plugin_vm_id: "",
            upstream_cluster: "upstream",
            route_name: "",
            upstream_host_metadata: &EMPTY,
            upstream_cluster_metadata: &EMPTY,
            upstream_tls: None,
        }
    }

    fn stream() -> HttpStream {
        HttpStream {
            request_headers: HeaderMap::from_list(&[
                (":method".into(), "GET".into()),
                (":path".into(), "/api/catalog?x=1".into()),
            ]),
            held_request_headers: vec![true],
            start_ns: 5,
            response_code: Some(200),
            ..Default::default()
        }
    }

    #[test]
    fn encodings() {
        let node = NodeSpec::default();
        let f = facts(&node);
        let s = stream();
        assert_eq!(get_property(&f, Some((&s, 0)), &["request", "url_path"]).unwrap(), b"/api/catalog");
        assert_eq!(get_property(&f, Some((&s, 0)), &["request", "query"]).unwrap(), b"x=1");
        assert_eq!(get_property(&f, Some((&s, 0)), &["response", "code"]).unwrap(), 200i64.to_le_bytes());
        assert_eq!(get_property(&f, Some((&s, 0)), &["request", "time"]).unwrap(), 5i64.to_le_bytes());
        assert_eq!(get_property(&f, Some((&s, 0)), &["connection", "mtls"]).unwrap(), [0]);
        assert_eq!(get_property(&f, Some((&s, 0)), &["request", "headers", ":METHOD"]).unwrap(), b"GET");
        assert_eq!(get_property(&f, None, &["plugin_root_id"]).unwrap(), b"root");
        assert_eq!(get_property(&f, None, &["xds", "node"]).unwrap(), b"proto");
        assert_eq!(get_property(&f, None, &["request", "path"]), Err(Status::NotFound), "no stream in root");
    }

    #[test]
    fn request_header_properties_need_the_headers() {
        let node = NodeSpec::default();
        let mut s = stream();
        s.held_request_headers = vec![false];
        s.phase = Some(Phase::ResponseHeaders);
        assert_eq!(get_property(&facts(&node), Some((&s, 0)), &["request", "path"]), Err(Status::NotFound));
        assert!(get_property(&facts(&node), Some((&s, 0)), &["request", "time"]).is_ok());
        s.phase = Some(Phase::Log);
        assert!(get_property(&facts(&node), Some((&s, 0)), &["request", "path"]).is_ok());
    }

    #[test]
    fn node_metadata_and_filter_state_fallback() {
        let node: NodeSpec =
            serde_json::from_value(serde_json::json!({"metadata": {"MESH_ID": "m1", "N": 2}})).unwrap();
        let mut s = stream();
        s.set_filter_state("wasm.istio_operationId".into(), b"ListCatalog".to_vec()).unwrap();
        let f = facts(&node);
        assert_eq!(get_property(&f, None, &["xds", "node", "metadata", "MESH_ID"]).unwrap(), b"m1");
        assert_eq!(get_property(&f, None, &["xds", "node", "metadata", "N"]).unwrap(), 2f64.to_le_bytes());
        assert_eq!(get_property(&f, Some((&s, 0)), &["istio_operationId"]).unwrap(), b"ListCatalog");
        assert_eq!(get_property(&f, Some((&s, 0)), &["unknown_thing"]), Err(Status::NotFound));
    }

    #[test]
    fn upstream_host_metadata_once_the_upstream_is_picked() {
        let node = NodeSpec::default();
        let serde_json::Value::Object(meta) = serde_json::json!({"istio": {"workload": "w;ns;svc;rev;c1"}}) else {
            panic!("an object")
        };
        let f = ProxyFacts { upstream_host_metadata: &meta, ..facts(&node) };
        let mut s = stream();
        let path = ["xds", "upstream_host_metadata", "filter_metadata", "istio", "workload"];
        assert_eq!(get_property(&f, Some((&s, 0)), &path), Err(Status::NotFound), "no upstream yet");
        s.reached_upstream = true;
        assert_eq!(get_property(&f, Some((&s, 0)), &path).unwrap(), b"w;ns;svc;rev;c1");
        assert_eq!(get_property(&f, Some((&s, 0)), &path[..4]).unwrap(), {
            crate::pairs::encode(&[(b"workload".to_vec(), b"w;ns;svc;rev;c1".to_vec())])
        });
        // The whole message: filter_metadata {key: "istio", value: Struct}.
        let whole = get_property(&f, Some((&s, 0)), &path[..2]).unwrap();
        let inner = meshwasm_wire::protobuf::encode_json_struct(meta["istio"].as_object().unwrap());
        let mut entry = vec![0x0a, 5];
        entry.extend_from_slice(b"istio");
        entry.push(0x12);
        entry.push(inner.len() as u8);
        entry.extend_from_slice(&inner);
        let mut want = vec![0x0a, entry.len() as u8];
        want.extend_from_slice(&entry);
        assert_eq!(whole, want);
        assert_eq!(get_property(&f, None, &path), Err(Status::NotFound), "no stream in root");
        // Cluster metadata: Istio's services list, indexed by position.
        let serde_json::Value::Object(cluster) =
            serde_json::json!({"istio": {"services": [{"host": "r.default.svc.cluster.local", "name": "r"}]}})
        else {
            panic!("an object")
        };
        let f = ProxyFacts { upstream_cluster_metadata: &cluster, ..facts(&node) };
        let path = ["xds", "cluster_metadata", "filter_metadata", "istio", "services", "0", "name"];
        assert_eq!(get_property(&f, Some((&s, 0)), &path).unwrap(), b"r");
        assert_eq!(
            get_property(&f, Some((&s, 0)), &["xds", "cluster_metadata", "filter_metadata", "x"]),
            Err(Status::NotFound)
        );
    }

    #[test]
    fn upstream_tls_facts_of_an_mtls_hop_once_connected() {
        let node = NodeSpec::default();
        let hop: HopTlsSpec = serde_json::from_value(serde_json::json!({
            "client_certificate": {"uri_sans": ["spiffe://td/ns/default/sa/client"]},
            "server_certificate": {"uri_sans": ["spiffe://td/ns/default/sa/server"], "subject": "CN=server,O=mesh"}
        }))
        .unwrap();
        let f = ProxyFacts { upstream_tls: Some(&hop), ..facts(&node) };
        let mut s = stream();
        let get = |s: &HttpStream, field: &str| get_property(&f, Some((s, 0)), &["upstream", field]);
        assert_eq!(get(&s, "uri_san_peer_certificate"), Err(Status::NotFound), "not connected yet");
        s.reached_upstream = true;
        assert_eq!(get(&s, "uri_san_peer_certificate").unwrap(), b"spiffe://td/ns/default/sa/server");
        assert_eq!(get(&s, "uri_san_local_certificate").unwrap(), b"spiffe://td/ns/default/sa/client");
        assert_eq!(get(&s, "subject_peer_certificate").unwrap(), b"CN=server,O=mesh");
        assert_eq!(get(&s, "subject_local_certificate").unwrap(), b"CN=client");
        assert_eq!(get(&s, "tls_version").unwrap(), b"TLSv1.2");
        assert_eq!(get(&s, "dns_san_peer_certificate"), Err(Status::NotFound));
        assert_eq!(get(&s, "sha256_peer_certificate_digest").unwrap().len(), 64);
        assert_eq!(get(&s, "address").unwrap(), b"127.0.0.1:18080", "address fields unchanged");
        // A plaintext upstream has no TLS facts.
        let plain = facts(&node);
        assert_eq!(get_property(&plain, Some((&s, 0)), &["upstream", "tls_version"]), Err(Status::NotFound));
    }
}
