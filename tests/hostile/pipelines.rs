//! Rule 2 attacks: what a client sends after an allowed request on the same
//! connection (garbage, an HTTP/2 preface, a response, a write request after
//! the connection was asked to close) is checked as a request of its own.

use super::{run_attacks, served, Answer, Attack, HIDDEN, PING};
use crate::common::{get, request, POLICY_ARGS};

// The HTTP/2 preface alone after a ping, and a refusal between two allowed
// requests, are in proxy_pipelining.rs.

#[test]
fn bytes_pipelined_after_an_allowed_request_are_checked_as_requests() {
    let attacks = vec![
        Attack::after_ping(
            "binary garbage with an end of head",
            b"\x00\x01\x02\xffgarbage\r\n\r\n".to_vec(),
            &[400],
        ),
        Attack::after_ping("a blank line alone", b"\r\n\r\n".to_vec(), &[400]),
        Attack::answered(
            "an empty line before a pipelined request is skipped, the request still checked",
            [&get(PING)[..], b"\r\n", &get("/v1.41/info")[..]].concat(),
            vec![served(PING), served("/v1.41/info")],
        ),
        Attack::after_ping(
            "a response injected as a request",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            &[400],
        ),
        Attack::after_ping(
            "the HTTP/2 preface and a SETTINGS frame",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
            &[400],
        ),
        Attack::answered(
            "an empty line before a pipelined HEAD keeps it bodiless",
            [&get(PING)[..], b"\r\n", &request("HEAD", "/_ping", "")[..]].concat(),
            vec![
                served(PING),
                Answer::ServedHead("HEAD /_ping HTTP/1.1".into()),
            ],
        ),
        Attack::answered(
            "an empty line before a refused HEAD keeps its refusal bodiless",
            [
                &get(PING)[..],
                b"\r\n",
                &request("HEAD", "/v1.41/containers/abc/archive?path=/", "")[..],
            ]
            .concat(),
            vec![served(PING), Answer::RefusedHead(&[403])],
        ),
        Attack::answered(
            "the HTTP/2 preface after a HEAD",
            [
                &request("HEAD", "/_ping", "")[..],
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            ]
            .concat(),
            vec![
                Answer::ServedHead("HEAD /_ping HTTP/1.1".into()),
                Answer::Refused(&[400]),
            ],
        ),
        Attack::answered(
            "a write request after Connection: close",
            [
                &request("GET", PING, "Connection: close\r\n")[..],
                HIDDEN.as_bytes(),
            ]
            .concat(),
            vec![served(PING)],
        )
        .then_closed(),
        Attack::answered(
            "a write request after an HTTP/1.0 request",
            [
                format!("GET {PING} HTTP/1.0\r\n\r\n").as_bytes(),
                HIDDEN.as_bytes(),
            ]
            .concat(),
            vec![Answer::Served(format!("GET {PING} HTTP/1.0"))],
        )
        .then_closed(),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}
