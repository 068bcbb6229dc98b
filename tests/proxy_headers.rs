//! Strict headers (POLICY.md rule 7): header names are tokens, values are
//! printable ASCII or tab, one Host (required on HTTP/1.1), CRLF line
//! endings and no obs-fold.

mod common;

use common::{assert_all_denied, Denied, FakeDaemon, Proxy, POLICY_ARGS};

/// Heads with a bad header: (case, bytes, what the message must name).
/// Errors that httparse finds itself may come before the method is known.
const BAD_HEADERS: &[(&str, &[u8], &[&str])] = &[
    (
        "space in a name",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX Bad: 1\r\n\r\n",
        &[],
    ),
    (
        "space before the colon",
        b"GET /_ping HTTP/1.1\r\nHost : docker\r\n\r\n",
        &[],
    ),
    (
        "non-token name",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX(y): 1\r\n\r\n",
        &[],
    ),
    (
        "at sign in a name",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX@y: 1\r\n\r\n",
        &[],
    ),
    (
        "empty name",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\n: 1\r\n\r\n",
        &[],
    ),
    (
        "control byte in a value",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-A: a\x01b\r\n\r\n",
        &[],
    ),
    (
        "DEL in a value",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-A: a\x7fb\r\n\r\n",
        &[],
    ),
    (
        "0x80 in a value",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-A: a\x80b\r\n\r\n",
        &[],
    ),
    (
        "UTF-8 in a value",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: caf\xc3\xa9\r\n\r\n",
        &[],
    ),
    (
        "0xff in the Host value",
        b"GET /_ping HTTP/1.1\r\nHost: dock\xffer\r\n\r\n",
        &[],
    ),
    (
        "two Host headers",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nHost: other\r\n\r\n",
        &["GET", "/_ping"],
    ),
    (
        "two Host, two cases",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nhost: docker\r\n\r\n",
        &["GET", "/_ping"],
    ),
    (
        "no Host on HTTP/1.1",
        b"GET /_ping HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
        &["GET", "/_ping"],
    ),
    (
        "bare LF line endings",
        b"GET /_ping HTTP/1.1\nHost: docker\n\n",
        &[],
    ),
    (
        "bare LF after the request line",
        b"GET /_ping HTTP/1.1\nHost: docker\r\n\r\n",
        &[],
    ),
    (
        "bare LF ending one header",
        b"GET /_ping HTTP/1.1\r\nHost: docker\nX-A: 1\r\n\r\n",
        &[],
    ),
    (
        "bare CR line endings",
        b"GET /_ping HTTP/1.1\rHost: docker\r\r\n\r\n",
        &[],
    ),
    (
        "obs-fold with a space",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-A: a\r\n b\r\n\r\n",
        &[],
    ),
    (
        "obs-fold with a tab",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-A: a\r\n\tb\r\n\r\n",
        &[],
    ),
    (
        "HTTP/1.2",
        b"GET /_ping HTTP/1.2\r\nHost: docker\r\n\r\n",
        &[],
    ),
    (
        "lower-case version",
        b"GET /_ping http/1.1\r\nHost: docker\r\n\r\n",
        &[],
    ),
];

#[test]
fn malformed_or_ambiguous_headers_are_refused_with_400() {
    let cases: Vec<Denied> = BAD_HEADERS
        .iter()
        .map(|(name, raw, mentions)| Denied::new(*name, *raw, &[400], mentions))
        .collect();
    assert_all_denied(&cases, POLICY_ARGS);
}

#[test]
fn http_1_0_without_host_is_served_and_closed() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    let mut client = proxy.connect();
    client.send(b"GET /v1.41/version HTTP/1.0\r\n\r\n");
    let resp = client.read_response();
    assert_eq!(resp.status, 200, "{}", common::show(&resp.raw));
    assert!(daemon.requests()[0].starts_with("GET /v1.41/version HTTP/1."));
    client
        .wait_closed(std::time::Duration::from_secs(10))
        .expect("an HTTP/1.0 request without keep-alive ends the connection");
}
