//! What reaches the daemon for an allowed request, and what comes back: the
//! proxy writes the head itself (only a few client headers, CRLF only, the
//! canonical decoded path) and relays the daemon's response byte for byte.

mod common;

use common::{check_forwarded, get, request, show, FakeDaemon, Proxy, Reply};

#[test]
fn forwarded_head_is_rewritten_with_only_the_read_headers() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(
        b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\n\
          Host: docker\r\n\
          User-Agent: Docker-Client/28.2.2 (linux)\r\n\
          Accept: application/json\r\n\
          Accept-Encoding: gzip\r\n\
          X-Registry-Auth: eyJ1c2VybmFtZSI6InNlY3JldCJ9\r\n\
          Cookie: session=secret-cookie\r\n\
          Authorization: Basic c2VjcmV0OnNlY3JldA==\r\n\
          Content-Length: 0\r\n\
          Proxy-Authorization: Basic c2VjcmV0\r\n\
          X-Forwarded-For: 10.0.0.1\r\n\
          Keep-Alive: timeout=5\r\n\
          Transfer-Encodingx: nothing\r\n\r\n",
    );
    assert_eq!(client.read_response().status, 200);
    let seen = daemon.seen();
    assert_eq!(seen.len(), 1);
    let head = &seen[0].head;
    let text = String::from_utf8_lossy(head);

    // CRLF only: every LF follows a CR, every CR precedes an LF.
    for (i, &b) in head.iter().enumerate() {
        let bad = (b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
            || (b == b'\r' && head.get(i + 1) != Some(&b'\n'));
        assert!(!bad, "bare line ending at byte {i}: {}", show(head));
    }
    assert!(head.ends_with(b"\r\n\r\n"));

    assert_eq!(seen[0].line, "GET /v1.41/containers/json?all=1 HTTP/1.1");
    let allowed = [
        "host",
        "user-agent",
        "accept",
        "accept-encoding",
        "connection",
    ];
    for (name, _) in seen[0].headers() {
        assert!(
            allowed.contains(&name.to_ascii_lowercase().as_str()),
            "header {name:?} was forwarded: {text}"
        );
    }
    assert_eq!(seen[0].header("host").as_deref(), Some("docker"));
    assert_eq!(
        seen[0].header("user-agent").as_deref(),
        Some("Docker-Client/28.2.2 (linux)")
    );
    assert_eq!(
        seen[0].header("accept").as_deref(),
        Some("application/json")
    );
    assert_eq!(seen[0].header("accept-encoding").as_deref(), Some("gzip"));
    for secret in ["eyJ1c2VybmFtZSI6InNlY3JldCJ9", "secret-cookie", "c2VjcmV0"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the daemon: {text}"
        );
    }
}

#[test]
fn connection_close_from_the_client_is_passed_on_and_honoured() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&request("GET", "/v1.41/info", "Connection: close\r\n"));
    assert_eq!(client.read_response().status, 200);
    client
        .wait_closed(std::time::Duration::from_secs(10))
        .expect("proxy closes after answering a Connection: close request");
    let seen = daemon.seen();
    assert_eq!(
        seen[0].header("connection").as_deref(),
        Some("close"),
        "{}",
        show(&seen[0].head)
    );
}

#[test]
fn path_is_forwarded_decoded_and_the_query_untouched() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let filters = "filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Dweb%22%5D%7D";
    let with_query = format!("/v1.41/containers/json?all=1&{filters}");
    let cases = [
        // docker-py sends `@` as %40 and `:` as %3A.
        (
            "/v1.41/images/redis%40sha256%3A0123456789abcdef/json",
            "/v1.41/images/redis@sha256:0123456789abcdef/json",
        ),
        ("/v1.41/images/redis%3A7/json", "/v1.41/images/redis:7/json"),
        ("/images/redis%3a7/json", "/images/redis:7/json"),
        (
            "/v1.41/containers/my%2Dapp/json",
            "/v1.41/containers/my-app/json",
        ),
        ("/%76ersion", "/version"),
        (with_query.as_str(), with_query.as_str()),
        (
            "/v1.41/events?since=1&until=2",
            "/v1.41/events?since=1&until=2",
        ),
        (
            "/v1.41/images/json?filters=%7B%7D&all=",
            "/v1.41/images/json?filters=%7B%7D&all=",
        ),
    ];
    daemon.respond(|_| Reply::Ok);
    let failures = check_forwarded(&proxy, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn daemon_response_is_relayed_byte_for_byte() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let canned: Vec<u8> = b"HTTP/1.1 200 OK\r\napi-version: 1.41\r\nX-Odd:   spaced  \r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\n[1,2,\r\n3\r\n3]\n\r\n0\r\nX-Trailer: t\r\n\r\n"
        .to_vec();
    let reply = canned.clone();
    daemon.respond(move |_| Reply::Raw(reply.clone()));
    let mut client = proxy.connect();
    client.send(&get("/v1.41/containers/json"));
    let resp = client.read_response();
    assert_eq!(resp.raw, canned, "got {}", show(&resp.raw));
    assert_eq!(resp.body, b"[1,2,3]\n");
}

#[test]
fn large_bodies_are_relayed_intact() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let body: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|i: u32| b"0123456789abcdef"[(i % 16) as usize])
        .collect();
    let mut with_length =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    with_length.extend_from_slice(&body);
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(100_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (a, b) = (with_length.clone(), chunked.clone());
    daemon.respond(move |req| {
        Reply::Raw(if req.target.contains("json") {
            a.clone()
        } else {
            b.clone()
        })
    });

    let mut client = proxy.connect();
    client.send(&get("/v1.41/containers/json"));
    let first = client.read_response();
    assert!(
        first.raw == with_length,
        "Content-Length body differs ({} bytes)",
        first.raw.len()
    );
    client.send(&get("/v1.41/info"));
    let second = client.read_response();
    assert!(
        second.raw == chunked,
        "chunked body differs ({} bytes)",
        second.raw.len()
    );
    assert_eq!(daemon.connections(), 1);
}

#[test]
fn head_response_has_no_body_and_the_connection_goes_on() {
    // The Docker CLI sends HEAD /_ping, then GET /_ping, on one connection.
    // The HEAD answer carries a Content-Length but no body; a proxy that
    // waits for that body would hang the second request.
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&request("HEAD", "/_ping", ""));
    let head = client.read_head_response();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some());
    client.send(&get("/_ping"));
    let resp = client.read_response();
    assert_eq!(
        resp.header("x-seen"),
        Some("GET /_ping HTTP/1.1"),
        "{}",
        show(&resp.raw)
    );
    assert_eq!(
        daemon.requests(),
        vec!["HEAD /_ping HTTP/1.1", "GET /_ping HTTP/1.1"]
    );
}

#[test]
fn bodiless_statuses_do_not_stall_the_connection() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    daemon.respond(|req| {
        if req.target.contains("/json") {
            Reply::Raw(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n".to_vec())
        } else if req.target.contains("/info") {
            Reply::Raw(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
        } else {
            Reply::Ok
        }
    });
    let mut client = proxy.connect();
    client.send(&get("/v1.41/containers/abc/json"));
    assert_eq!(client.read_response().status, 304);
    client.send(&get("/v1.41/info"));
    assert_eq!(client.read_response().status, 204);
    client.send(&get("/_ping"));
    let resp = client.read_response();
    assert_eq!(resp.header("x-seen"), Some("GET /_ping HTTP/1.1"));
}

#[test]
fn close_delimited_response_is_relayed_then_the_client_is_closed() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let canned =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length, ends at close".to_vec();
    let reply = canned.clone();
    daemon.respond(move |_| Reply::RawThenClose(reply.clone()));
    let mut client = proxy.connect();
    client.send(&get("/v1.41/info"));
    let got = client.read_to_close();
    assert_eq!(got, canned, "got {}", show(&got));
}
