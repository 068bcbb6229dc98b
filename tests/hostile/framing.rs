//! Attacks on framing and on the limits (POLICY.md rules 2 and 8): HEAD
//! answers used to desync a pipeline, heads at and just past the size and
//! header-count limits, pipelines longer than the proxy holds, heads split
//! at the end, and bytes that never make a head.

use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use docker_filter::limits::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_PIPELINED};

use super::{run_attacks, served, Answer, Attack, HIDDEN, PING};
use crate::common::{audit_daemon, get, request, show, FakeDaemon, Proxy, Reply, POLICY_ARGS};

/// The daemon's answer to `method target` in the framing test: HEAD answers
/// announce bodies of every kind and send none; GET answers echo the target.
fn canned(method: &str, target: &str) -> Vec<u8> {
    if method == "HEAD" {
        let (status, framing) = match target.split("framing=").nth(1).unwrap_or("") {
            "length" => ("200 OK", "Content-Length: 100000\r\n"),
            "chunked" => ("200 OK", "Transfer-Encoding: chunked\r\n"),
            "error" => (
                "404 Not Found",
                "Content-Type: application/json\r\nContent-Length: 30\r\n",
            ),
            // No framing header: for a GET this body would run to the close.
            _ => ("200 OK", "Content-Type: application/octet-stream\r\n"),
        };
        return format!("HTTP/1.1 {status}\r\nX-Target: {target}\r\n{framing}\r\n").into_bytes();
    }
    let body = format!("{{\"target\":\"{target}\"}}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn pipelined_head_answers_are_framed_without_a_body_whatever_their_headers_say() {
    // The relay passes bytes through unchanged, so a proxy that framed a
    // HEAD answer by its headers would still hand the client the right
    // bytes, but it would count the next answers as that body: the refusal
    // queued behind them would then never be sent (or the connection would
    // break on a chunk size that is really a status line). Each pipeline
    // ends in a refused request for that reason.
    let daemon = FakeDaemon::start();
    daemon.respond(|req| Reply::Raw(canned(&req.method, &req.target)));
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    let mut failures = Vec::new();
    for framing in ["length", "chunked", "error", "none"] {
        let head = format!("/_ping?framing={framing}");
        let after = format!("/v1.41/info?after={framing}");
        let sent = [
            request("HEAD", &head, ""),
            get(&after),
            request("HEAD", &head, ""),
            get("/v1.41/containers/abc/export"),
        ]
        .concat();
        let mut client = proxy.connect();
        client.send(&sent);
        let expected = [
            (true, canned("HEAD", &head)),
            (false, canned("GET", &after)),
            (true, canned("HEAD", &head)),
        ];
        for (i, (head_only, want)) in expected.iter().enumerate() {
            match client.try_read_response(*head_only, Duration::from_secs(5)) {
                Ok(got) if got.raw == *want => {}
                Ok(got) => failures.push(format!("{framing}: answer {i} was {}", show(&got.raw))),
                Err(e) => failures.push(format!("{framing}: answer {i} never came: {e:?}")),
            }
        }
        let refusal = client.try_read_response(false, Duration::from_secs(5));
        match refusal
            .map_err(|e| format!("{e:?}"))
            .and_then(|r| r.check_error(&[403], &[]))
        {
            Ok(()) => {}
            Err(why) => failures.push(format!("{framing}: no 403 after the answers: {why}")),
        }
        if let Err(got) = client.wait_closed(Duration::from_secs(5)) {
            failures.push(format!("{framing}: not closed; got {}", show(&got)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(daemon.requests().len(), 12, "{:?}", daemon.requests());
    assert!(
        audit_daemon(&daemon).is_empty(),
        "{:?}",
        audit_daemon(&daemon)
    );
}

/// A GET head for `target` with `extra` header lines, padded with an
/// `X-Pad` header to exactly `len` bytes.
fn head_of_length(target: &str, len: usize) -> Vec<u8> {
    let bare = format!("GET {target} HTTP/1.1\r\nHost: docker\r\nX-Pad: \r\n\r\n");
    let pad = len.checked_sub(bare.len()).expect("a longer head");
    format!(
        "GET {target} HTTP/1.1\r\nHost: docker\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(pad)
    )
    .into_bytes()
}

#[test]
fn a_head_of_exactly_the_size_limit_is_served_and_one_byte_more_is_refused() {
    let at = "/v1.41/info?at-limit";
    let attacks = vec![
        Attack::answered(
            "exactly the limit",
            head_of_length(at, MAX_HEAD_BYTES),
            vec![served(at)],
        ),
        Attack::answered(
            "exactly the limit, pipelined after a ping",
            [get(PING), head_of_length(at, MAX_HEAD_BYTES)].concat(),
            vec![served(PING), served(at)],
        ),
        Attack::refused(
            "one byte over",
            head_of_length("/v1.41/info", MAX_HEAD_BYTES + 1),
            &[431],
        ),
        Attack::after_ping(
            "one byte over, pipelined after a ping",
            head_of_length("/v1.41/info", MAX_HEAD_BYTES + 1),
            &[431],
        ),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}

/// A GET head for `target` with `count` header lines in all: Host first,
/// then `filler` lines (`{i}` replaced by the line's number), and `last`.
fn head_with_headers(target: &str, count: usize, filler: &str, last: &str) -> Vec<u8> {
    let mut text = format!("GET {target} HTTP/1.1\r\nHost: docker\r\n");
    for i in 2..count {
        let _ = write!(text, "{}\r\n", filler.replace("{i}", &i.to_string()));
    }
    text.push_str(last);
    text.push_str("\r\n\r\n");
    text.into_bytes()
}

#[test]
fn a_forbidden_header_at_the_end_of_a_full_header_list_is_still_seen() {
    let target = "/v1.41/info?many";
    let attacks = vec![
        Attack::answered(
            "exactly the header limit",
            head_with_headers(target, MAX_HEADERS, "X-H: {i}", "X-Last: 1"),
            vec![served(target)],
        ),
        Attack::answered(
            "the header limit of credentials, none forwarded",
            head_with_headers(
                target,
                MAX_HEADERS,
                "X-Registry-Auth: c2VjcmV0{i}",
                "User-Agent: a",
            ),
            vec![served(target)],
        ),
        Attack::answered(
            "the header limit of User-Agents, one forwarded",
            head_with_headers(target, MAX_HEADERS, "User-Agent: ua{i}", "User-Agent: last"),
            vec![served(target)],
        ),
        Attack::after_ping(
            "Transfer-Encoding as the last allowed header",
            head_with_headers(
                "/v1.41/info",
                MAX_HEADERS,
                "X-H: {i}",
                "Transfer-Encoding: chunked",
            ),
            &[413],
        ),
        Attack::after_ping(
            "a second Host as the last allowed header",
            head_with_headers("/v1.41/info", MAX_HEADERS, "X-H: {i}", "Host: evil"),
            &[400],
        ),
        Attack::after_ping(
            "Upgrade as the last allowed header",
            head_with_headers("/v1.41/info", MAX_HEADERS, "X-H: {i}", "Upgrade: websocket"),
            &[403],
        ),
        Attack::after_ping(
            "Transfer-Encoding just past the header limit",
            head_with_headers(
                "/v1.41/info",
                MAX_HEADERS + 1,
                "X-H: {i}",
                "Transfer-Encoding: chunked",
            ),
            &[431],
        ),
        Attack::after_ping(
            "many tiny headers past the limit",
            head_with_headers("/v1.41/info", MAX_HEADERS * 4, "X{i}:", "X:"),
            &[431],
        ),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn a_pipeline_longer_than_the_proxy_holds_is_answered_in_order_up_to_its_refusal() {
    let targets: Vec<String> = (0..MAX_PIPELINED * 2 + 5)
        .map(|i| format!("/v1.41/containers/json?n={i}"))
        .collect();
    let mut bytes: Vec<u8> = targets.iter().flat_map(|t| get(t)).collect();
    bytes.extend_from_slice(HIDDEN.as_bytes());
    bytes.extend(get("/v1.41/info?never"));
    let mut answers: Vec<Answer> = targets.iter().map(|t| served(t)).collect();
    answers.push(Answer::Refused(&[403]));
    run_attacks(
        POLICY_ARGS,
        &[Attack::answered(
            "a long pipeline hiding a POST",
            bytes,
            answers,
        )],
    );
}

#[test]
fn bytes_that_never_make_a_head_get_408() {
    let tls_hello: &[u8] = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03";
    let attacks = vec![
        Attack::refused("a TLS ClientHello", tls_hello, &[408]),
        Attack::after_ping("a TLS ClientHello after a ping", tls_hello, &[408]),
        Attack::after_ping("one CRLF after a ping", b"\r\n".to_vec(), &[408]),
        Attack::after_ping(
            "a head that misses its blank line",
            get("/v1.41/info").split_last().unwrap().1.to_vec(),
            &[408],
        ),
    ];
    run_attacks(&["--header-timeout", "2"], &attacks);
}

#[test]
fn a_head_split_anywhere_in_its_end_is_served() {
    // The end of a head is found however the reads cut it, and a head sent
    // a byte at a time is served well within the header timeout.
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    for cut in 1..=4 {
        let target = format!("/v1.41/info?cut={cut}");
        let head = get(&target);
        let (start, end) = head.split_at(head.len() - cut);
        let mut client = proxy.connect();
        client.send(start);
        thread::sleep(Duration::from_millis(100));
        client.send(end);
        let resp = client.read_response();
        let want = format!("GET {target} HTTP/1.1");
        assert_eq!(
            resp.header("x-seen"),
            Some(want.as_str()),
            "cut {cut}: {}",
            show(&resp.raw)
        );
    }
    let mut client = proxy.connect();
    for byte in get("/v1.41/info?bytewise") {
        client.send(&[byte]);
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        client.read_response().header("x-seen"),
        Some("GET /v1.41/info?bytewise HTTP/1.1")
    );
    assert!(
        audit_daemon(&daemon).is_empty(),
        "{:?}",
        audit_daemon(&daemon)
    );
}
