//! One request head, parsed with httparse and checked into a typed
//! [`Request`] (docs/POLICY.md rules 1, 3, 4 and 7).
//!
//! The checks run in a fixed order: syntax, method, body, protocol switch,
//! headers, target. The method comes before the body so that `docker run`,
//! whose `POST` carries a JSON body, is told that the socket is read-only.
//! Nothing here looks at the whitelist; see `policy.rs`.

use std::mem::MaybeUninit;

use crate::denial::{Denial, Reason};
use crate::limits::MAX_HEADERS;
use crate::target::{self, Target};

/// The only methods that can ever be forwarded. There is no variant for
/// anything else, so no configuration can make the proxy write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: allowed exactly where `GET` is; its response has no body.
    Head,
}

impl Method {
    /// The method as written on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

/// The HTTP versions spoken, to the client and to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: one request per connection.
    Http10,
    /// HTTP/1.1: keep-alive unless `Connection: close`.
    Http11,
}

/// The client headers that a read-only Docker client needs and that are
/// passed on to the daemon. Every other header is dropped, credentials for
/// registries (`X-Registry-Auth`) included.
pub const FORWARDED_HEADERS: [&str; 3] = ["User-Agent", "Accept", "Accept-Encoding"];

/// A request head that passed every check except the whitelist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'h> {
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The version from the request line.
    pub version: Version,
    /// The canonical target.
    pub target: Target,
    /// The `Host` value, if one was sent (it is required on HTTP/1.1).
    pub host: Option<&'h str>,
    /// The first value of each of [`FORWARDED_HEADERS`], in that order.
    pub forwarded: [Option<&'h str>; 3],
    /// Whether the connection ends after this request (HTTP/1.0, or
    /// `Connection: close`).
    pub close: bool,
}

/// Parses and checks one complete request head (request line to the blank
/// line, inclusive).
pub fn parse(head: &[u8]) -> Result<Request<'_>, Denial> {
    check_line_endings(head)?;

    // Left uninitialised: httparse writes each entry before it hands it
    // out, and zeroing 64 entries was a visible share of every request.
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut storage) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => {
            return Err(Denial::new(
                Reason::Malformed,
                "the request head is incomplete",
            ))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Denial::new(
                Reason::TooManyHeaders,
                format!("more than {MAX_HEADERS} header lines"),
            ))
        }
        Err(httparse::Error::HeaderName) => {
            return Err(Denial::new(
                Reason::HeaderName,
                "a header name is not a token",
            ))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(Denial::new(
                Reason::HeaderValue,
                "a header value has a control byte",
            ))
        }
        Err(e) => {
            return Err(Denial::new(
                Reason::Malformed,
                format!("not a valid HTTP/1.x request head ({e})"),
            ))
        }
    }
    let (Some(method), Some(raw_target), Some(minor)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Denial::new(
            Reason::Malformed,
            "the request line is incomplete",
        ));
    };
    let with_request = |denial: Denial| denial.of_request(method, raw_target);

    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => {
            return Err(with_request(Denial::new(
                Reason::Method,
                "only GET and HEAD are allowed: this Docker socket is read-only",
            )))
        }
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };

    let headers = Headers::check(parsed.headers, version).map_err(with_request)?;
    let target = target::parse(raw_target).map_err(with_request)?;
    Ok(Request {
        method,
        version,
        target,
        host: headers.host,
        forwarded: headers.forwarded,
        close: version == Version::Http10 || headers.close,
    })
}

/// The method and raw target of a head, if its request line parses; for
/// messages about requests refused before the full checks.
pub fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut storage);
    let _ = parsed.parse(head);
    Some((parsed.method?, parsed.path?))
}

/// Refuses a bare LF or a bare CR anywhere in the head. dockerd accepts bare
/// LF line endings; a proxy that did not would frame the stream differently
/// from the daemon, so the only safe answer is to accept neither.
fn check_line_endings(head: &[u8]) -> Result<(), Denial> {
    for (i, &b) in head.iter().enumerate() {
        let bare_cr = b == b'\r' && head.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && (i == 0 || head[i - 1] != b'\r');
        if bare_cr || bare_lf {
            return Err(Denial::new(
                Reason::BareLineEnding,
                "every line of the request head must end in CRLF",
            ));
        }
    }
    Ok(())
}

/// What the header checks keep.
struct Headers<'h> {
    host: Option<&'h str>,
    forwarded: [Option<&'h str>; 3],
    close: bool,
}

impl<'h> Headers<'h> {
    /// Checks every header line, in the order body, protocol switch, syntax.
    fn check(lines: &[httparse::Header<'h>], version: Version) -> Result<Headers<'h>, Denial> {
        check_no_body(lines)?;
        let close = check_connection(lines)?;

        let mut kept = Headers {
            host: None,
            forwarded: [None; 3],
            close,
        };
        let mut hosts = 0;
        for line in lines {
            let value = header_value(line)?;
            if line.name.eq_ignore_ascii_case("Host") {
                hosts += 1;
                kept.host = Some(value);
            } else if let Some(slot) = FORWARDED_HEADERS
                .iter()
                .position(|name| line.name.eq_ignore_ascii_case(name))
            {
                kept.forwarded[slot].get_or_insert(value);
            }
        }
        check_host(hosts, kept.host, version)?;
        Ok(kept)
    }
}

/// docs/POLICY.md rule 3: no request body of any kind. Go's server reads a body on
/// a GET when the head announces one, and a body is where a second request
/// can hide.
fn check_no_body(lines: &[httparse::Header<'_>]) -> Result<(), Denial> {
    if lines
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("Transfer-Encoding"))
    {
        return Err(Denial::new(
            Reason::Body,
            "request bodies are not accepted (Transfer-Encoding)",
        ));
    }
    let mut lengths = lines
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Content-Length"));
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.value == b"0" => Ok(()),
        (Some(only), None)
            if !only.value.is_empty() && only.value.iter().all(u8::is_ascii_digit) =>
        {
            Err(Denial::new(
                Reason::Body,
                "request bodies are not accepted (Content-Length is not 0)",
            ))
        }
        _ => Err(Denial::new(
            Reason::BadContentLength,
            "Content-Length must appear at most once, as a plain number",
        )),
    }
}

/// docs/POLICY.md rule 4: no protocol switch. Returns whether the client asked to
/// close the connection.
fn check_connection(lines: &[httparse::Header<'_>]) -> Result<bool, Denial> {
    let mut close = false;
    for line in lines {
        let name = line.name;
        if name.eq_ignore_ascii_case("Upgrade") || name.eq_ignore_ascii_case("HTTP2-Settings") {
            return Err(Denial::new(
                Reason::Upgrade,
                format!("protocol upgrades are not allowed ({name} header)"),
            ));
        }
        if name.eq_ignore_ascii_case("Expect") {
            return Err(Denial::new(
                Reason::Expect,
                "the Expect header is not allowed: requests have no body",
            ));
        }
        if name.eq_ignore_ascii_case("Connection") {
            for token in line.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Err(Denial::new(
                        Reason::Upgrade,
                        "protocol upgrades are not allowed (Connection: upgrade)",
                    ));
                }
                close |= token.eq_ignore_ascii_case(b"close");
            }
        }
    }
    Ok(close)
}

/// docs/POLICY.md rule 7: a value is printable ASCII or tab. httparse already
/// refuses control bytes; this also refuses bytes from 0x80 up.
fn header_value<'h>(line: &httparse::Header<'h>) -> Result<&'h str, Denial> {
    let printable = line
        .value
        .iter()
        .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b));
    match std::str::from_utf8(line.value) {
        Ok(value) if printable => Ok(value),
        _ => Err(Denial::new(
            Reason::HeaderValue,
            format!(
                "the value of header {} has bytes outside printable ASCII",
                crate::text::printable(line.name.as_bytes())
            ),
        )),
    }
}

/// One `Host` on HTTP/1.1 (RFC 9112 section 3.2), at most one on HTTP/1.0,
/// holding only host-name characters.
fn check_host(count: usize, host: Option<&str>, version: Version) -> Result<(), Denial> {
    let required = usize::from(version == Version::Http11);
    if count > 1 || count < required {
        return Err(Denial::new(
            Reason::Host,
            format!("exactly one Host header is required (found {count})"),
        ));
    }
    let valid = host.is_none_or(|h| {
        h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'[' | b']')
        })
    });
    if valid {
        Ok(())
    } else {
        Err(Denial::new(
            Reason::Host,
            "the Host header is not a host name",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &str) -> Vec<u8> {
        format!("{lines}\r\n\r\n")
            .replace('\n', "\r\n")
            .replace("\r\r", "\r")
            .into_bytes()
    }

    fn reason_of(raw: &[u8]) -> Reason {
        parse(raw).expect_err(&String::from_utf8_lossy(raw)).reason
    }

    #[test]
    fn docker_cli_ping_parses_into_typed_request() {
        let raw = head("HEAD /_ping HTTP/1.1\nHost: api.moby.localhost\nUser-Agent: Docker-Client/28.2.2 (linux)");
        let request = parse(&raw).unwrap();
        assert_eq!(request.method, Method::Head);
        assert_eq!(request.version, Version::Http11);
        assert_eq!(request.target.path(), "/_ping");
        assert_eq!(request.host, Some("api.moby.localhost"));
        assert_eq!(
            request.forwarded,
            [Some("Docker-Client/28.2.2 (linux)"), None, None]
        );
        assert!(!request.close);
    }

    #[test]
    fn only_exact_get_and_head_pass() {
        for method in [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "get", "Get", "HEADX",
        ] {
            let raw = head(&format!("{method} /_ping HTTP/1.1\nHost: x"));
            assert_eq!(reason_of(&raw), Reason::Method, "{method}");
        }
    }

    #[test]
    fn post_with_body_is_refused_for_its_method_first() {
        let raw = head("POST /containers/create HTTP/1.1\nHost: x\nContent-Length: 20");
        assert_eq!(reason_of(&raw), Reason::Method);
    }

    #[test]
    fn any_body_is_refused() {
        let cases = [
            ("Content-Length: 5", Reason::Body),
            ("Transfer-Encoding: chunked", Reason::Body),
            ("Transfer-Encoding: identity", Reason::Body),
            ("transfer-encoding: CHUNKED", Reason::Body),
            (
                "Content-Length: 0\nTransfer-Encoding: chunked",
                Reason::Body,
            ),
            (
                "Content-Length: 0\nContent-Length: 0",
                Reason::BadContentLength,
            ),
            ("Content-Length: 0, 0", Reason::BadContentLength),
            ("Content-Length: +0", Reason::BadContentLength),
            ("Content-Length: ", Reason::BadContentLength),
        ];
        for (header, expected) in cases {
            let raw = head(&format!("GET /_ping HTTP/1.1\nHost: x\n{header}"));
            assert_eq!(reason_of(&raw), expected, "{header}");
        }
        let zero = head("GET /_ping HTTP/1.1\nHost: x\nContent-Length: 0");
        assert!(parse(&zero).is_ok());
    }

    #[test]
    fn protocol_switches_are_refused() {
        let cases = [
            ("Upgrade: websocket\nConnection: Upgrade", Reason::Upgrade),
            ("Upgrade: h2c", Reason::Upgrade),
            ("Connection: keep-alive, Upgrade", Reason::Upgrade),
            ("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", Reason::Upgrade),
            ("Expect: 100-continue", Reason::Expect),
        ];
        for (header, expected) in cases {
            let raw = head(&format!("GET /_ping HTTP/1.1\nHost: x\n{header}"));
            assert_eq!(reason_of(&raw), expected, "{header}");
        }
    }

    #[test]
    fn http2_preface_and_http09_are_malformed() {
        assert_eq!(
            reason_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Reason::Malformed
        );
        assert_eq!(reason_of(b"GET /_ping\r\n\r\n"), Reason::Malformed);
        assert_eq!(
            reason_of(b"GET /_ping HTTP/1.2\r\nHost: x\r\n\r\n"),
            Reason::Malformed
        );
    }

    #[test]
    fn bare_line_endings_and_folding_are_refused() {
        assert_eq!(
            reason_of(b"GET /_ping HTTP/1.1\nHost: x\n\n"),
            Reason::BareLineEnding
        );
        assert_eq!(
            reason_of(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\n"),
            Reason::BareLineEnding
        );
        assert_eq!(
            reason_of(b"GET /_ping HTTP/1.1\rHost: x\r\n\r\n"),
            Reason::BareLineEnding
        );
        let folded = b"GET /_ping HTTP/1.1\r\nHost: x\r\nAccept: a\r\n b\r\n\r\n";
        assert_eq!(reason_of(folded), Reason::HeaderName);
    }

    #[test]
    fn header_syntax_is_strict() {
        let cases: [(&[u8], Reason); 6] = [
            (
                b"GET /_ping HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
                Reason::HeaderName,
            ),
            (
                b"GET /_ping HTTP/1.1\r\nHost: x\r\nA: \x01\r\n\r\n",
                Reason::HeaderValue,
            ),
            (
                b"GET /_ping HTTP/1.1\r\nHost: x\r\nA: caf\xc3\xa9\r\n\r\n",
                Reason::HeaderValue,
            ),
            (b"GET /_ping HTTP/1.1\r\n\r\n", Reason::Host),
            (
                b"GET /_ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                Reason::Host,
            ),
            (b"GET /_ping HTTP/1.1\r\nHost: a/b\r\n\r\n", Reason::Host),
        ];
        for (raw, expected) in cases {
            assert_eq!(reason_of(raw), expected, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn request_line_is_found_after_leading_empty_lines() {
        let raw = b"\r\nHEAD /containers/x/archive HTTP/1.1\r\nHost: d\r\n\r\n";
        assert_eq!(request_line(raw), Some(("HEAD", "/containers/x/archive")));
        assert_eq!(request_line(b"\x01garbage\r\n\r\n"), None);
    }

    #[test]
    fn http10_needs_no_host_and_always_closes() {
        let request = parse(b"GET /_ping HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(request.version, Version::Http10);
        assert!(request.close);
    }

    #[test]
    fn connection_close_is_noticed() {
        let raw = head("GET /_ping HTTP/1.1\nHost: x\nConnection: close");
        assert!(parse(&raw).unwrap().close);
    }

    #[test]
    fn only_needed_headers_are_kept_first_value_wins() {
        let raw = head("GET /info HTTP/1.1\nHost: x\nX-Registry-Auth: secret\nAccept: a\nAccept: b\nAccept-Encoding: gzip\nCookie: c");
        let request = parse(&raw).unwrap();
        assert_eq!(request.forwarded, [None, Some("a"), Some("gzip")]);
    }

    #[test]
    fn too_many_headers_is_its_own_reason() {
        let mut raw = String::from("GET /_ping HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            raw.push_str("X-");
            raw.push_str(&i.to_string());
            raw.push_str(": v\r\n");
        }
        raw.push_str("\r\n");
        assert_eq!(reason_of(raw.as_bytes()), Reason::TooManyHeaders);
    }
}
