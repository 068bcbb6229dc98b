//! Methods, bodies and protocol switches (POLICY.md rules 1, 3 and 4), and
//! the order in which the checks run, against the real binary. Every denial
//! must be answered with the contract's JSON error, the connection must
//! close, and the fake daemon must receive nothing at all.

mod common;

use common::{assert_all_denied, get, request, Denied, FakeDaemon, Proxy, POLICY_ARGS};

// --- Rule 1: only GET and HEAD, spelled exactly so ------------------------

#[test]
fn methods_other_than_get_and_head_are_denied_before_reaching_the_daemon() {
    let methods = [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "get", "Get", "head",
        "PROPFIND",
    ];
    let cases: Vec<Denied> = methods
        .into_iter()
        .map(|m| {
            // The message must name the method and the path.
            Denied::new(
                m,
                request(m, "/v1.41/info", ""),
                &[403],
                &[m, "/v1.41/info"],
            )
        })
        .collect();
    assert_all_denied(&cases, POLICY_ARGS);
}

#[test]
fn a_write_method_with_a_body_gets_its_403_not_a_reset() {
    // `docker run` against the safe socket must print the reason: the
    // method check comes before the body check, and the answer is complete
    // even though the proxy never reads the body.
    let body = "x".repeat(100_000);
    let cases = vec![
        Denied::new(
            "POST create with a JSON body",
            format!(
                "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            &[403],
            &["POST", "/v1.41/containers/create"],
        ),
        Denied::new(
            "POST with a chunked body",
            format!(
                "POST /v1.41/build HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            ),
            &[403],
            &["POST", "/v1.41/build"],
        ),
    ];
    assert_all_denied(&cases, POLICY_ARGS);
}

// --- Rule 3: no bodies ------------------------------------------------------

#[test]
fn get_requests_that_carry_a_body_are_refused_with_413() {
    let cases = vec![
        Denied::new(
            "Content-Length: 5",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: 5\r\n\r\nhello",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "Transfer-Encoding: chunked",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "transfer-encoding in lower case, value in upper case",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\ntransfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "Transfer-Encoding and Content-Length",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 5\r\n\r\n0\r\n\r\n",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "Transfer-Encoding: identity",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: identity\r\n\r\n",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "Transfer-Encoding on HTTP/1.0",
            "GET /v1.41/info HTTP/1.0\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[413],
            &["GET"],
        ),
        // "Not one plain 0": the contract lists it both as a body (413) and
        // as a bad Content-Length (400), so either is accepted.
        Denied::new(
            "Content-Length: 0, 0",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: 0, 0\r\n\r\n",
            &[400, 413],
            &[],
        ),
        Denied::new(
            "two Content-Length: 0 headers",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            &[400, 413],
            &[],
        ),
        Denied::new(
            "Content-Length: 0 then Content-Length: 5",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
            &[400, 413],
            &[],
        ),
        Denied::new(
            "Content-Length: +0",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: +0\r\n\r\n",
            &[400, 413],
            &[],
        ),
        Denied::new(
            "Content-Length: abc",
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: abc\r\n\r\n",
            &[400, 413],
            &[],
        ),
    ];
    assert_all_denied(&cases, POLICY_ARGS);
}

#[test]
fn content_length_zero_is_not_a_body_and_is_not_forwarded() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    let mut client = proxy.connect();
    client.send(b"GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n");
    let resp = client.read_response();
    assert_eq!(resp.status, 200, "{}", resp.status_line);
    assert_eq!(resp.header("x-seen"), Some("GET /v1.41/info HTTP/1.1"));
    let seen = daemon.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("content-length"),
        None,
        "forwarded: {}",
        common::show(&seen[0].head)
    );
}

// --- Rule 4: no protocol switches -------------------------------------------

#[test]
fn upgrade_and_expect_requests_are_denied() {
    let cases = vec![
        Denied::new(
            "websocket attach",
            "GET /v1.41/containers/x/attach/ws?stdin=1&stream=1 HTTP/1.1\r\nHost: docker\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            &[403],
            &["GET"],
        ),
        Denied::new(
            "websocket upgrade on an allowed path",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "Upgrade header alone",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nupgrade: tcp\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "Connection: Upgrade alone",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "upgrade among Connection options",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: keep-alive, upgrade\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "h2c upgrade with HTTP2-Settings",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "HTTP2-Settings alone",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "Expect: 100-continue",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nExpect: 100-continue\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        Denied::new(
            "Expect with another value",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nexpect: something\r\n\r\n",
            &[403],
            &["GET", "/_ping"],
        ),
        // The HTTP/2 preface is a malformed HTTP/1 head: 400 (contract).
        Denied::new("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &[400], &[]),
        Denied::new(
            "HTTP/2 request line",
            "GET /_ping HTTP/2.0\r\nHost: docker\r\n\r\n",
            &[400],
            &[],
        ),
    ];
    assert_all_denied(&cases, POLICY_ARGS);
}

// --- The order of the checks ------------------------------------------------

#[test]
fn checks_run_in_the_contract_order() {
    // Each request breaks two rules; the answer is the earlier check's:
    // syntax -> method -> body -> upgrade -> headers -> target -> whitelist.
    let big = "a".repeat(17 * 1024);
    let cases = vec![
        Denied::new(
            "oversized POST: syntax before method",
            format!("POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nX-Pad: {big}\r\n\r\n"),
            &[431],
            &[],
        ),
        Denied::new(
            "POST with a body to a bad path: method first",
            "POST /v1.41/containers/a%2Fb/json HTTP/1.1\r\nHost: docker\r\nContent-Length: 5\r\n\r\nhello",
            &[403],
            &["POST"],
        ),
        Denied::new(
            "body and upgrade: body first",
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "body and bad path: body first",
            "GET /v1.41/containers/a%2Fb/json HTTP/1.1\r\nHost: docker\r\nContent-Length: 5\r\n\r\nhello",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "body on a denied path: body first",
            "GET /v1.41/containers/abc/export HTTP/1.1\r\nHost: docker\r\nContent-Length: 5\r\n\r\nhello",
            &[413],
            &["GET"],
        ),
        Denied::new(
            "upgrade and bad path: upgrade first",
            "GET /v1.41/containers/a%2Fb/json HTTP/1.1\r\nHost: docker\r\nUpgrade: websocket\r\n\r\n",
            &[403],
            &["GET"],
        ),
        Denied::new(
            "two Hosts on a denied path: headers first",
            "GET /v1.41/containers/abc/export HTTP/1.1\r\nHost: docker\r\nHost: other\r\n\r\n",
            &[400],
            &["GET"],
        ),
        Denied::new(
            "no Host on a denied path: headers first",
            "GET /v1.41/containers/abc/export HTTP/1.1\r\n\r\n",
            &[400],
            &["GET"],
        ),
        Denied::new(
            "trailing slash on a denied path: target first",
            get("/v1.41/containers/abc/export/"),
            &[400],
            &["GET"],
        ),
        Denied::new(
            "dot-dot on a denied path: target first",
            get("/v1.41/containers/abc/json/../export"),
            &[400],
            &["GET"],
        ),
    ];
    assert_all_denied(&cases, POLICY_ARGS);
}
