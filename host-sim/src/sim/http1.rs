//! What Envoy's HTTP/1 codec and connection manager do to a message on its
//! way in and out, as host-sim reproduces it: header order, framing headers,
//! `x-forwarded-client-cert`, the `date` header, gRPC status mapping.

use super::stream::HeaderMap;
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
    let chunks = request.chunks();
    let explicit = h.get("content-length").is_some() || h.get("transfer-encoding").is_some();
    if !explicit && request.trailers.is_empty() && chunks.len() == 1 && !chunks[0].is_empty() {
        h.add("content-length", chunks[0].len().to_string().as_bytes());
    }
    h.remove("transfer-encoding");
    h
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

/// Methods Envoy's HTTP/1 codec sends without `content-length: 0` when the
/// request has no body (`HeaderUtility::requestShouldHaveNoBody`).
pub(crate) fn bodiless_method(method: Option<&[u8]>) -> bool {
    matches!(method, Some(b"GET" | b"HEAD" | b"DELETE" | b"TRACE" | b"CONNECT"))
}

/// The framing header an HTTP/1 codec puts at the end of a message it
/// encodes from a header map without one: `transfer-encoding: chunked` when
/// a body or trailers follow the headers, else `content-length: 0` (not for
/// 1xx/204 responses or bodiless request methods).
pub(crate) fn wire_framing(h: &mut HeaderMap, more_follows: bool, zero_length_allowed: bool) {
    if h.get("content-length").is_some() || h.get("transfer-encoding").is_some() {
        return;
    }
    if more_follows {
        h.add("transfer-encoding", b"chunked");
    } else if zero_length_allowed {
        h.add("content-length", b"0");
    }
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
