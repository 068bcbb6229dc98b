//! Rules 4 and 7 attacks in the head itself: duplicate or odd `Host`
//! values, NUL and control bytes, names with trailing spaces, protocol
//! switches in every spelling, headers that a read-only request must not
//! carry to the daemon, and request lines with odd whitespace or versions.

use super::{run_attacks, served, Attack};
use crate::common::{assert_all_denied, get, request, Denied, POLICY_ARGS};

// --- Rules 4 and 7: protocol switches and strict headers ---------------------------

#[test]
fn header_tricks_are_refused_before_the_daemon() {
    let with = |name: &str, header: &str, statuses: &'static [u16]| {
        let bytes = format!("GET /v1.41/info HTTP/1.1\r\nHost: docker\r\n{header}\r\n\r\n");
        Attack::after_ping(name, bytes, statuses)
    };
    let raw = |name: &str, bytes: &[u8], statuses: &'static [u16]| {
        Attack::after_ping(name, bytes, statuses)
    };
    let attacks = vec![
        raw(
            "a second Host with another value",
            b"GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nHost: evil\r\n\r\n",
            &[400],
        ),
        raw(
            "a second host in lower case first",
            b"GET /v1.41/info HTTP/1.1\r\nhost: evil\r\nHost: docker\r\n\r\n",
            &[400],
        ),
        with("two hosts in one Host", "Host: evil", &[400]),
        raw(
            "a Host list",
            b"GET /v1.41/info HTTP/1.1\r\nHost: docker, evil\r\n\r\n",
            &[400],
        ),
        raw(
            "a Host with a path",
            b"GET /v1.41/info HTTP/1.1\r\nHost: docker/containers/x/export\r\n\r\n",
            &[400],
        ),
        raw(
            "a Host with user info",
            b"GET /v1.41/info HTTP/1.1\r\nHost: user@docker\r\n\r\n",
            &[400],
        ),
        raw(
            "a Host with a space",
            b"GET /v1.41/info HTTP/1.1\r\nHost: docker evil\r\n\r\n",
            &[400],
        ),
        raw(
            "NUL in the Host value",
            b"GET /v1.41/info HTTP/1.1\r\nHost: docker\0evil\r\n\r\n",
            &[400],
        ),
        with("NUL in a value", "User-Agent: a\0b", &[400]),
        with("a value that is only NUL", "Accept: \0", &[400]),
        with("NUL in a name", "X-\0A: b", &[400]),
        with("a line that is only NUL", "\0", &[400]),
        with(
            "CR injecting a request into a value",
            "User-Agent: a\rPOST /containers/create HTTP/1.1",
            &[400],
        ),
        with(
            "LF injecting a request into a value",
            "User-Agent: a\nPOST /containers/create HTTP/1.1",
            &[400],
        ),
        with(
            "a trailing space in a name",
            "X-Registry-Auth : c2VjcmV0",
            &[400],
        ),
        with(
            "a non-ASCII look-alike name",
            "Transfer-Encod\u{131}ng: chunked",
            &[400],
        ),
        with("a vertical tab in a value", "Accept: a\x0bb", &[400]),
        with("Upgrade in upper case", "UPGRADE: websocket", &[403]),
        with("Upgrade with no value", "Upgrade:", &[403]),
        with(
            "Connection: upgrade without spaces",
            "Connection:upgrade",
            &[403],
        ),
        with("upgrade after close", "Connection: close,UPGRADE", &[403]),
        with(
            "upgrade in a second Connection header",
            "Connection: keep-alive\r\nConnection: upgrade",
            &[403],
        ),
        with(
            "upgrade with a trailing tab",
            "Connection: upgrade\t",
            &[403],
        ),
        with(
            "HTTP2-Settings in lower case",
            "http2-settings: AAMAAABkAARAAAAAAAIAAAAA",
            &[403],
        ),
        with("Expect in upper case", "EXPECT: 100-continue", &[403]),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn method_override_and_credential_headers_are_dropped_not_forwarded() {
    // Served, but nothing of these reaches the daemon: the audit allows only
    // the headers the proxy writes.
    let headers = [
        "X-HTTP-Method-Override: POST",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: PUT",
        "X-Registry-Auth: eyJwYXNzd29yZCI6InNlY3JldCJ9",
        "X-Registry-Config: e30=",
        "Connection: keep-alive, X-Registry-Auth",
        "Transfer_Encoding: chunked",
        "Proxy-Connection: upgrade",
    ];
    let attacks: Vec<Attack> = headers
        .iter()
        .enumerate()
        .map(|(i, header)| {
            let target = format!("/v1.41/info?case={i}");
            let bytes = format!("GET {target} HTTP/1.1\r\nHost: docker\r\n{header}\r\n\r\n");
            Attack::answered(*header, bytes, vec![served(&target)])
        })
        .collect();
    run_attacks(POLICY_ARGS, &attacks);
}

// --- Request lines -------------------------------------------------------------------

#[test]
fn request_lines_with_odd_whitespace_or_versions_are_refused() {
    let line = |name: &str, line: &[u8]| {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\nHost: docker\r\n\r\n");
        Attack::after_ping(name, bytes, &[400])
    };
    let attacks = vec![
        line("a tab after the method", b"GET\t/v1.41/info HTTP/1.1"),
        line("a tab before the version", b"GET /v1.41/info\tHTTP/1.1"),
        line("two spaces after the method", b"GET  /v1.41/info HTTP/1.1"),
        line(
            "two spaces before the version",
            b"GET /v1.41/info  HTTP/1.1",
        ),
        line("a trailing space", b"GET /v1.41/info HTTP/1.1 "),
        line("a leading space", b" GET /v1.41/info HTTP/1.1"),
        line(
            "a vertical tab as the separator",
            b"GET\x0b/v1.41/info HTTP/1.1",
        ),
        line(
            "a form feed as the separator",
            b"GET\x0c/v1.41/info HTTP/1.1",
        ),
        line(
            "two targets, the denied one first",
            b"GET /containers/abc/export /v1.41/info HTTP/1.1",
        ),
        line(
            "two targets, the allowed one first",
            b"GET /v1.41/info /containers/abc/export HTTP/1.1",
        ),
        line("NUL after the method", b"GET\0/v1.41/info HTTP/1.1"),
        line("NUL in the target", b"GET /v1.41/info\0 HTTP/1.1"),
        line(
            "a version with a leading zero",
            b"GET /v1.41/info HTTP/01.1",
        ),
        line(
            "a version with two minor digits",
            b"GET /v1.41/info HTTP/1.10",
        ),
        line("a version without a minor", b"GET /v1.41/info HTTP/1"),
        line("junk after the version", b"GET /v1.41/info HTTP/1.1x"),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn json_syntax_in_a_refused_target_stays_inside_the_error_message() {
    // Rule 9: the docker CLI prints the message of a JSON body that is
    // exactly {"message": "..."}. A target that closes the string and opens
    // a member of its own must come back escaped, whole, inside the message.
    let cases = vec![
        Denied::new(
            "a query that closes the message",
            get(r#"/v1.41/containers/abc/export?a="},{"message":"ok"#),
            &[403],
            &[r#"a="},{"message":"ok"#],
        ),
        Denied::new(
            "a quote and a backslash in the path",
            get(r#"/v1.41/containers/a"}\/json"#),
            &[400],
            &[r#"a"}\"#],
        ),
        Denied::new(
            "a quote in a refused method",
            request(r#"P"}OST"#, "/v1.41/containers/create", ""),
            &[400, 403],
            &[],
        ),
    ];
    assert_all_denied(&cases, POLICY_ARGS);
}
