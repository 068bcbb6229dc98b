//! The request head the daemon receives, written by the proxy.
//!
//! docs/POLICY.md rule 2: no byte of the client's head is copied. The proxy writes
//! the method, the canonical path, the raw query it checked, the version,
//! `Host`, the few headers a read-only client needs and, when the client is
//! done after this request, `Connection: close`. Lines end in CRLF.

use crate::request::{Request, Version, FORWARDED_HEADERS};

/// Appends the head for `request` to `out`, so that the caller can send it in
/// one write.
pub fn write_head(request: &Request<'_>, out: &mut Vec<u8>) {
    let version = match request.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.path().as_bytes());
    if let Some(query) = request.target.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.push(b' ');
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(b"\r\n");

    if let Some(host) = request.host {
        header(out, "Host", host);
    }
    for (name, value) in FORWARDED_HEADERS.iter().zip(request.forwarded) {
        if let Some(value) = value {
            header(out, name, value);
        }
    }
    if request.close && request.version == Version::Http11 {
        header(out, "Connection", "close");
    }
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.trim_ascii().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse;

    fn rewrite(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_head(&parse(raw).unwrap(), &mut out);
        out
    }

    #[test]
    fn forwarded_head_holds_only_checked_parts() {
        let raw = b"GET /v1.41/images/redis%3A7/json?x=%40 HTTP/1.1\r\nHost: docker\r\nX-Registry-Auth: c2VjcmV0\r\nUser-Agent: docker-py/7\r\nAccept: */*\r\nAuthorization: Basic x\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            String::from_utf8(rewrite(raw)).unwrap(),
            "GET /v1.41/images/redis:7/json?x=%40 HTTP/1.1\r\nHost: docker\r\nUser-Agent: docker-py/7\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn close_is_passed_on_for_http11() {
        let raw = b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_eq!(
            rewrite(raw),
            b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn rewrite_is_a_fixed_point() {
        let raw = b"GET /containers/%65x/json?all=1 HTTP/1.1\r\nHost: docker\r\nAccept-Encoding: gzip\r\nConnection: close\r\nCookie: a\r\n\r\n";
        let once = rewrite(raw);
        assert_eq!(rewrite(&once), once);
    }
}
