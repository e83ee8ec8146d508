//! A small HTTP/1.1 implementation: just enough to play the client in front
//! of Envoy and the servers behind it, keeping header order, repeated
//! headers, chunked bodies and trailers exactly as they travel.

use crate::http1_framing::{bodiless_response, peer_framing, Body, Declared, PeerMessage};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Read, Write};

/// Header lines, in wire order, names as sent.
pub type Headers = Vec<(String, String)>;

/// Longest header block or chunk-size line we accept (guards against a
/// runaway peer).
const MAX_LINE: usize = 64 * 1024;
const MAX_HEADERS: usize = 1000;

/// A request as read off the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

impl Request {
    /// The request as Envoy's header map presents it: `:authority`, `:path`
    /// and `:method` first (the order a plugin sees them in Envoy 1.40), then
    /// the other headers in wire order, names lower-cased; `host` becomes
    /// `:authority`. HTTP/1.1 carries no `:scheme`, so none is reported.
    pub fn header_map(&self) -> Headers {
        let mut out = Vec::with_capacity(self.headers.len() + 3);
        if let Some((_, host)) = self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("host")) {
            out.push((":authority".to_string(), host.clone()));
        }
        out.push((":path".to_string(), self.target.clone()));
        out.push((":method".to_string(), self.method.clone()));
        out.extend(
            self.headers
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        out
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// How far a response got before the connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseOutcome {
    /// A complete response.
    Complete(Response),
    /// The connection closed before any response byte: a reset.
    ResetBeforeResponse,
    /// The status line and headers arrived, then the connection closed or
    /// broke before the body was complete.
    ResetDuringBody(Response),
    /// No (complete) answer within the timeout.
    TimedOut(Option<Response>),
}

/// A message to send: everything needed to write a request or a response.
#[derive(Debug, Clone, Default)]
pub struct Outgoing<'a> {
    pub headers: &'a [(String, String)],
    pub chunks: Vec<Vec<u8>>,
    pub trailers: &'a [(String, String)],
    /// Pause between body chunks so the peer sees them as separate reads.
    pub chunk_gap: std::time::Duration,
}

fn is_pseudo(name: &str) -> bool {
    name.starts_with(':')
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    Declared::of(headers.iter().map(|(k, v)| (k, v))).chunked
}

/// Framing for an outgoing message, by the peers' rule
/// ([`peer_framing`]: declared framing kept, else chunked with trailers or
/// several chunks, else a `content-length` for a body or any response).
/// Returns the extra header to add, if any, and whether the body goes out
/// chunked.
pub fn framing(msg: &Outgoing<'_>, bodyless: bool, response: bool) -> (Option<(String, String)>, bool) {
    let declared = Declared::of(msg.headers.iter().map(|(k, v)| (k, v)));
    let body = Body::of(&msg.chunks, !msg.trailers.is_empty());
    let message = if response { PeerMessage::Response { bodiless: bodyless } } else { PeerMessage::Request };
    let (extra, chunked) = peer_framing(declared, body, message);
    (extra.map(|h| (h.name().to_string(), h.value())), chunked)
}

fn write_head_and_body<W: Write>(
    w: &mut W,
    first_line: &str,
    msg: &Outgoing<'_>,
    bodyless: bool,
    response: bool,
) -> Result<()> {
    let (extra, chunked) = framing(msg, bodyless, response);
    let mut head = String::with_capacity(256);
    head.push_str(first_line);
    head.push_str("\r\n");
    for (k, v) in msg.headers.iter().filter(|(k, _)| !is_pseudo(k)) {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    if let Some((k, v)) = &extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if bodyless {
        return w.flush().map_err(Into::into);
    }
    let n = msg.chunks.len();
    for (i, chunk) in msg.chunks.iter().enumerate() {
        if chunked {
            if chunk.is_empty() {
                continue; // a zero-length chunk would end the body
            }
            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            w.write_all(chunk)?;
            w.write_all(b"\r\n")?;
        } else {
            w.write_all(chunk)?;
        }
        if i + 1 < n && !msg.chunk_gap.is_zero() {
            w.flush()?;
            std::thread::sleep(msg.chunk_gap);
        }
    }
    if chunked {
        let mut tail = String::from("0\r\n");
        for (k, v) in msg.trailers {
            tail.push_str(&format!("{k}: {v}\r\n"));
        }
        tail.push_str("\r\n");
        w.write_all(tail.as_bytes())?;
    }
    w.flush()?;
    Ok(())
}

/// Writes a request. `method`/`target` come from the `:method` and `:path`
/// pseudo-headers (default `GET /`), `host` from `:authority` (none if
/// absent); other pseudo-headers are not sent (HTTP/1.1 has no place for
/// them).
pub fn write_request<W: Write>(w: &mut W, msg: &Outgoing<'_>) -> Result<()> {
    let get = |name: &str| msg.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let method = get(":method").unwrap_or_else(|| "GET".into());
    let target = get(":path").unwrap_or_else(|| "/".into());
    let mut headers: Vec<(String, String)> = Vec::with_capacity(msg.headers.len() + 1);
    if let Some(host) = get(":authority") {
        if !has_header(msg.headers, "host") {
            headers.push(("host".into(), host));
        }
    }
    headers.extend(msg.headers.iter().filter(|(k, _)| !is_pseudo(k)).cloned());
    let out =
        Outgoing { headers: &headers, chunks: msg.chunks.clone(), trailers: msg.trailers, chunk_gap: msg.chunk_gap };
    write_head_and_body(w, &format!("{method} {target} HTTP/1.1"), &out, false, false)
}

/// Writes a response with the given status; `:status` in the header list is
/// ignored. `head_request` suppresses the body (a reply to HEAD).
pub fn write_response<W: Write>(w: &mut W, status: u16, msg: &Outgoing<'_>, head_request: bool) -> Result<()> {
    let bodyless = bodiless_response(status, head_request);
    write_head_and_body(w, &format!("HTTP/1.1 {status} {}", reason(status)), msg, bodyless, true)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Reads one CRLF- (or LF-) terminated line without the terminator. `None`
/// at a clean end of stream before any byte.
fn read_line<R: BufRead>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n >= MAX_LINE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
        }
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-line"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("connection closed {what}"))
}

/// Reads header lines up to the blank line.
fn read_header_block<R: BufRead>(r: &mut R) -> std::io::Result<Headers> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| eof("in the headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "too many headers"));
        }
        match line.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad header line {line:?}")))
            }
        }
    }
}

fn content_length(headers: &Headers) -> std::io::Result<Option<usize>> {
    match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        None => Ok(None),
        Some((_, v)) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad content-length {v:?}"))),
    }
}

/// Reads a chunked body into `body`, returning the trailers.
fn read_chunked<R: BufRead>(r: &mut R, body: &mut Vec<u8>) -> std::io::Result<Headers> {
    loop {
        let line = read_line(r)?.ok_or_else(|| eof("in a chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
        if size == 0 {
            return read_header_block(r);
        }
        let start = body.len();
        body.resize(start + size, 0);
        if let Err(e) = r.read_exact(&mut body[start..]) {
            body.truncate(start); // keep only what surely arrived
            return Err(e);
        }
        let crlf = read_line(r)?.ok_or_else(|| eof("after a chunk"))?;
        if !crlf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
        }
    }
}

/// Reads one request. `Ok(None)` when the peer closed the connection before
/// starting another request (keep-alive end).
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>> {
    let line = loop {
        match read_line(r)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue, // stray CRLF between requests
            Some(l) => break l,
        }
    };
    let mut parts = line.splitn(3, ' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("bad request line {line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("unsupported protocol {version:?}");
    }
    let headers = read_header_block(r).context("reading request headers")?;
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    if is_chunked(&req.headers) {
        req.trailers = read_chunked(r, &mut req.body).context("reading chunked request body")?;
    } else if let Some(n) = content_length(&req.headers)? {
        req.body.resize(n, 0);
        r.read_exact(&mut req.body).context("reading request body")?;
    }
    Ok(Some(req))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Reads one response (skipping 1xx interim responses). The caller sets the
/// read timeout on the underlying socket; a timeout is reported as
/// [`ResponseOutcome::TimedOut`], a closed or broken connection as a reset.
pub fn read_response<R: BufRead>(r: &mut R, head_request: bool) -> ResponseOutcome {
    let mut partial: Option<Response> = None;
    let res = (|| -> std::io::Result<Response> {
        loop {
            let line = match read_line(r)? {
                None => return Err(eof("before the response")),
                Some(l) => l,
            };
            let mut parts = line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            let status: u16 =
                parts.next().and_then(|s| s.parse().ok()).filter(|_| version.starts_with("HTTP/1.")).ok_or_else(
                    || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {line:?}")),
                )?;
            let headers = read_header_block(r)?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let mut resp = Response { status, headers, body: Vec::new(), trailers: Vec::new() };
            partial = Some(resp.clone());
            if head_request || status == 204 || status == 304 {
                return Ok(resp);
            }
            if is_chunked(&resp.headers) {
                let mut body = Vec::new();
                match read_chunked(r, &mut body) {
                    Ok(trailers) => {
                        resp.body = body;
                        resp.trailers = trailers;
                    }
                    Err(e) => {
                        if let Some(p) = partial.as_mut() {
                            p.body = body;
                        }
                        return Err(e);
                    }
                }
            } else if let Some(n) = content_length(&resp.headers)? {
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    match r.read(&mut buf[got..]) {
                        Ok(0) => {
                            if let Some(p) = partial.as_mut() {
                                p.body = buf[..got].to_vec();
                            }
                            return Err(eof("in the body"));
                        }
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            if let Some(p) = partial.as_mut() {
                                p.body = buf[..got].to_vec();
                            }
                            return Err(e);
                        }
                    }
                }
                resp.body = buf;
            } else {
                // Delimited by the end of the connection.
                let mut body = Vec::new();
                match r.read_to_end(&mut body) {
                    Ok(_) => resp.body = body,
                    Err(e) => {
                        if let Some(p) = partial.as_mut() {
                            p.body = body;
                        }
                        return Err(e);
                    }
                }
            }
            return Ok(resp);
        }
    })();
    match res {
        Ok(resp) => ResponseOutcome::Complete(resp),
        Err(e) if is_timeout(&e) => ResponseOutcome::TimedOut(partial),
        Err(_) => match partial {
            None => ResponseOutcome::ResetBeforeResponse,
            Some(p) => ResponseOutcome::ResetDuringBody(p),
        },
    }
}

/// A one-shot GET over plain HTTP/1.1 with `Connection: close` (for Envoy's
/// admin interface). Returns status and body.
pub fn get(addr: std::net::SocketAddr, path: &str, timeout: std::time::Duration) -> Result<(u16, String)> {
    let stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut w = stream.try_clone()?;
    let headers = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), addr.to_string()),
        ("connection".to_string(), "close".to_string()),
    ];
    write_request(&mut w, &Outgoing { headers: &headers, ..Default::default() })?;
    let mut r = std::io::BufReader::new(stream);
    match read_response(&mut r, false) {
        ResponseOutcome::Complete(resp) => Ok((resp.status, String::from_utf8_lossy(&resp.body).into_owned())),
        other => bail!("GET {path} on {addr}: no complete response ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn h(list: &[(&str, &str)]) -> Headers {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn request_round_trip_keeps_order_repeats_and_trailers() {
        let headers = h(&[
            (":method", "POST"),
            (":path", "/a?b=1"),
            (":authority", "svc"),
            ("X-A", "1"),
            ("x-b", "2"),
            ("x-a", "3"),
        ]);
        let trailers = h(&[("x-t", "v")]);
        let msg = Outgoing {
            headers: &headers,
            chunks: vec![b"he".to_vec(), b"llo".to_vec()],
            trailers: &trailers,
            ..Default::default()
        };
        let mut wire = Vec::new();
        write_request(&mut wire, &msg).unwrap();
        let text = String::from_utf8(wire.clone()).unwrap();
        assert!(
            text.starts_with(
                "POST /a?b=1 HTTP/1.1\r\nhost: svc\r\nX-A: 1\r\nx-b: 2\r\nx-a: 3\r\ntransfer-encoding: chunked\r\n\r\n"
            ),
            "{text}"
        );
        let req = read_request(&mut BufReader::new(&wire[..])).unwrap().unwrap();
        assert_eq!(req.body, b"hello");
        assert_eq!(req.trailers, trailers);
        assert_eq!(
            req.header_map(),
            h(&[
                (":authority", "svc"),
                (":path", "/a?b=1"),
                (":method", "POST"),
                ("x-a", "1"),
                ("x-b", "2"),
                ("x-a", "3"),
                ("transfer-encoding", "chunked")
            ])
        );
    }

    #[test]
    fn single_body_gets_content_length_and_explicit_framing_is_honoured() {
        let headers = h(&[(":path", "/"), ("content-length", "3")]);
        let msg = Outgoing { headers: &headers, chunks: vec![b"abc".to_vec()], ..Default::default() };
        assert_eq!(framing(&msg, false, false), (None, false));
        let headers = h(&[(":path", "/")]);
        let msg = Outgoing { headers: &headers, chunks: vec![b"abc".to_vec()], ..Default::default() };
        assert_eq!(framing(&msg, false, false), (Some(("content-length".into(), "3".into())), false));
        let msg = Outgoing { headers: &headers, ..Default::default() };
        assert_eq!(framing(&msg, false, false), (None, false), "no body, no framing header");
        assert_eq!(
            framing(&msg, false, true),
            (Some(("content-length".into(), "0".into())), false),
            "but a response says so"
        );
        let mut wire = Vec::new();
        write_request(&mut wire, &msg).unwrap();
        assert_eq!(wire, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn responses_of_every_framing() {
        let headers = h(&[("x-up", "1")]);
        let trailers = h(&[("grpc-status", "0")]);
        let mut wire = Vec::new();
        let msg =
            Outgoing { headers: &headers, chunks: vec![b"ok".to_vec()], trailers: &trailers, ..Default::default() };
        write_response(&mut wire, 201, &msg, false).unwrap();
        match read_response(&mut BufReader::new(&wire[..]), false) {
            ResponseOutcome::Complete(r) => {
                assert_eq!(r.status, 201);
                assert_eq!(r.body, b"ok");
                assert_eq!(r.trailers, trailers);
                assert_eq!(r.headers[0], ("x-up".to_string(), "1".to_string()));
            }
            other => panic!("{other:?}"),
        }
        // Close-delimited body, after an interim 100 Continue.
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx: y\r\n\r\nall of it";
        match read_response(&mut BufReader::new(&wire[..]), false) {
            ResponseOutcome::Complete(r) => assert_eq!((r.status, r.body.as_slice()), (200, &b"all of it"[..])),
            other => panic!("{other:?}"),
        }
        // HEAD: headers only, content-length notwithstanding.
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert!(matches!(read_response(&mut BufReader::new(&wire[..]), true), ResponseOutcome::Complete(_)));
    }

    #[test]
    fn truncated_responses_are_resets() {
        assert_eq!(read_response(&mut BufReader::new(&b""[..]), false), ResponseOutcome::ResetBeforeResponse);
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
        match read_response(&mut BufReader::new(&wire[..]), false) {
            ResponseOutcome::ResetDuringBody(r) => assert_eq!(r.body, b"abc"),
            other => panic!("{other:?}"),
        }
        let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n";
        match read_response(&mut BufReader::new(&wire[..]), false) {
            ResponseOutcome::ResetDuringBody(r) => assert_eq!(r.body, b"abc"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keep_alive_requests_and_clean_end() {
        let wire = b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nPOST /2 HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi";
        let mut r = BufReader::new(&wire[..]);
        assert_eq!(read_request(&mut r).unwrap().unwrap().target, "/1");
        let second = read_request(&mut r).unwrap().unwrap();
        assert_eq!((second.method.as_str(), second.body.as_slice()), ("POST", &b"hi"[..]));
        assert!(read_request(&mut r).unwrap().is_none());
    }
}
