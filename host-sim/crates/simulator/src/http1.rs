//! What Envoy's HTTP/1 codec and connection manager do to a message on its
//! way in and out, as host-sim reproduces it: header order, framing headers,
//! `x-forwarded-client-cert`, the `date` header, gRPC status mapping.

use super::stream::{HeaderMap, LocalReplyRequest};
use crate::http1_framing::{envoy_framing, peer_framing, Body, Encoded, FramingHeader, PeerMessage};
use crate::scenario::ConnectionSpec;

/// The request headers as Envoy's HTTP/1 codec hands them to the filters:
/// `:authority`, `:path`, `:method`, `:scheme` first, then the client's
/// headers in order, with the body's framing header as the client sent it.
pub(crate) fn as_received(request: &crate::scenario::MessageSpec, tls: bool) -> HeaderMap {
    let given = HeaderMap::from_list(&request.headers);
    let mut h = HeaderMap::default();
    for pseudo in [":authority", ":path", ":method"] {
        if let Some(v) = given.get(pseudo) {
            h.add(pseudo, v);
        }
    }
    h.add(":scheme", given.get(":scheme").unwrap_or(if tls { b"https" } else { b"http" }));
    h.0.extend(given.0.iter().filter(|(k, _)| !k.starts_with(':')).cloned());
    // The client (like the envoy engine's) frames a body with trailers or in
    // several chunks as chunked, any other body with a content-length. The
    // HTTP/1 codec takes `transfer-encoding` out of the header map (observed
    // in Envoy 1.40: plugins never see it; the upstream codec re-frames).
    let body = Body::of(&request.chunks(), !request.trailers.is_empty());
    if let (Some(length @ FramingHeader::ContentLength(_)), _) = peer_framing(h.declared(), body, PeerMessage::Request)
    {
        h.add(length.name(), length.value().as_bytes());
    }
    h.remove("transfer-encoding");
    h
}

/// Adds the framing header a peer sending `h` and `body` puts on the wire
/// ([`peer_framing`]), which Envoy keeps in the map it hands the filters.
pub(crate) fn add_peer_framing(h: &mut HeaderMap, body: Body, message: PeerMessage) {
    if let (Some(framing), _) = peer_framing(h.declared(), body, message) {
        h.add(framing.name(), framing.value().as_bytes());
    }
}

/// Adds the framing header Envoy's HTTP/1 codec puts on the wire when it
/// encodes `h` ([`envoy_framing`]).
pub(crate) fn add_envoy_framing(h: &mut HeaderMap, message: Encoded<'_>, more_follows: bool) {
    if let Some(framing) = envoy_framing(h.declared(), message, more_follows) {
        h.add(framing.name(), framing.value().as_bytes());
    }
}

/// `x-forwarded-client-cert` as the connection manager sets it: on inbound
/// (Istio's sidecar: APPEND_FORWARD with subject, URI and DNS) an mTLS
/// client's details are appended (in place to the client's header, else a
/// new header after x-request-id); without a client certificate, and on
/// other listeners (SANITIZE, Envoy's default), the header is removed.
/// Observed in Envoy 1.40.
pub(crate) fn forward_client_cert(h: &mut HeaderMap, connection: &ConnectionSpec, inbound: bool) {
    let peer = super::properties::peer_certificate(connection);
    let Some(peer) = peer.filter(|_| inbound) else {
        h.remove("x-forwarded-client-cert");
        return;
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(local) = super::properties::local_certificate(connection) {
        parts.extend(local.uri_sans.iter().map(|u| format!("By={u}")));
    }
    parts.push(format!("Hash={}", super::properties::peer_digest(&peer)));
    parts.push(format!("Subject=\"{}\"", peer.subject));
    if peer.uri_sans.is_empty() {
        parts.push("URI=".into());
    }
    parts.extend(peer.uri_sans.iter().map(|u| format!("URI={u}")));
    parts.extend(peer.dns_sans.iter().map(|d| format!("DNS={d}")));
    let value = parts.join(";");
    match h.0.iter_mut().find(|(k, _)| k == "x-forwarded-client-cert") {
        Some((_, v)) => {
            v.push(b',');
            v.extend_from_slice(value.as_bytes());
        }
        None => h.add("x-forwarded-client-cert", value.as_bytes()),
    }
}

/// An IMF-fixdate (`Thu, 01 Jan 2026 00:00:00 GMT`) for nanoseconds since
/// the Unix epoch.
pub(crate) fn http_date(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days.rem_euclid(7)) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A response header map: `:status`, then `headers` in order.
pub(crate) fn response_map(status: u16, headers: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::default();
    h.add(":status", status.to_string().as_bytes());
    for (k, v) in headers {
        h.add(k, v.as_bytes());
    }
    h
}

/// A local reply as Envoy builds it: its status, header map and body.
/// Envoy puts the plugin's headers first, then its own: for a body, its
/// length and a default content type; for a gRPC request, a trailers-only
/// gRPC answer (status 200, grpc-status from the call or mapped from the
/// HTTP status, the body as grpc-message).
pub(crate) fn local_reply_message(r: &LocalReplyRequest, grpc: bool) -> (u16, HeaderMap, Vec<u8>) {
    let mut map = HeaderMap(r.headers.clone());
    if grpc {
        map.replace("content-type", b"application/grpc");
        if map.get("grpc-status").is_none() {
            let code = r.grpc_status.map(i64::from).unwrap_or_else(|| http_to_grpc_status(r.status));
            map.add("grpc-status", code.to_string().as_bytes());
        }
        if !r.body.is_empty() {
            map.replace("grpc-message", &percent_encode(&r.body));
        }
        map.remove("content-length");
        return (200, map, Vec::new());
    }
    if !r.body.is_empty() {
        map.replace("content-length", r.body.len().to_string().as_bytes());
        if map.get("content-type").is_none() {
            map.add("content-type", b"text/plain");
        }
    }
    (r.status, map, r.body.clone())
}

/// Whether Envoy treats the request as gRPC (local replies become
/// trailers-only gRPC responses).
pub(crate) fn is_grpc_request(h: &HeaderMap) -> bool {
    h.get("content-type").is_some_and(|v| {
        v == b"application/grpc" || v.starts_with(b"application/grpc+") || v.starts_with(b"application/grpc;")
    })
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub(crate) fn http_to_grpc_status(code: u16) -> i64 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Envoy's `PercentEncoding::encode` for `grpc-message`: bytes outside
/// printable ASCII and `%` are escaped.
pub(crate) fn percent_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if !(b' '..=b'~').contains(&c) || c == b'%' {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::http_date;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_767_225_600 * 1_000_000_000), "Thu, 01 Jan 2026 00:00:00 GMT");
        assert_eq!(http_date(1_803_811_907 * 1_000_000_000), "Sun, 28 Feb 2027 10:51:47 GMT");
        assert_eq!(http_date(1_764_325_907 * 1_000_000_000 + 999), "Fri, 28 Nov 2025 10:31:47 GMT");
    }
}
