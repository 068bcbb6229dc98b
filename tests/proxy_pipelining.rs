//! Keep-alive and pipelining (POLICY.md rule 2): every request on a
//! connection is checked, answers come back in order, and nothing the
//! client sends after a refused head ever reaches the daemon.

mod common;

use std::thread;
use std::time::Duration;

use common::{get, request, show, Denied, FakeDaemon, Proxy};

#[test]
fn pipelined_gets_are_all_answered_in_order() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let targets = [
        "/_ping",
        "/v1.41/version",
        "/v1.41/info",
        "/v1.41/containers/json?all=1",
        "/images/json",
    ];
    let mut batch = Vec::new();
    for t in targets {
        batch.extend(get(t));
    }
    let mut client = proxy.connect();
    client.send(&batch);
    for t in targets {
        let resp = client.read_response();
        assert_eq!(
            resp.header("x-seen"),
            Some(format!("GET {t} HTTP/1.1").as_str()),
            "{}",
            show(&resp.raw)
        );
    }
    assert_eq!(daemon.connections(), 1);
}

#[test]
fn pipelined_head_between_gets_keeps_the_framing() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut batch = get("/_ping");
    batch.extend(request("HEAD", "/_ping", ""));
    batch.extend(get("/v1.41/info"));
    let mut client = proxy.connect();
    client.send(&batch);
    assert_eq!(
        client.read_response().header("x-seen"),
        Some("GET /_ping HTTP/1.1")
    );
    assert_eq!(
        client.read_head_response().header("x-seen"),
        Some("HEAD /_ping HTTP/1.1")
    );
    let last = client.read_response();
    assert_eq!(
        last.header("x-seen"),
        Some("GET /v1.41/info HTTP/1.1"),
        "{}",
        show(&last.raw)
    );
}

#[test]
fn pipelined_post_after_ping_never_reaches_the_daemon() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut batch = get("/_ping");
    batch.extend_from_slice(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
          Content-Length: 52\r\n\r\n{\"Image\":\"alpine\",\"HostConfig\":{\"Privileged\":true}}",
    );
    let mut client = proxy.connect();
    client.send(&batch);
    let ping = client.read_response();
    assert_eq!(
        ping.header("x-seen"),
        Some("GET /_ping HTTP/1.1"),
        "{}",
        show(&ping.raw)
    );
    let denial = client.read_response();
    denial
        .check_error(&[403], &["POST", "/v1.41/containers/create"])
        .unwrap();
    client
        .wait_closed(Duration::from_secs(10))
        .expect("connection closed after the 403");
    thread::sleep(Duration::from_millis(100));
    let received = String::from_utf8_lossy(&daemon.received()).into_owned();
    assert!(
        !received.contains("POST") && !received.contains("create"),
        "daemon got: {received}"
    );
    assert_eq!(daemon.requests(), vec!["GET /_ping HTTP/1.1"]);
}

#[test]
fn a_refused_request_in_a_pipeline_ends_it() {
    // Each batch: an allowed ping, a refused request, then an allowed ping
    // that must never be forwarded because the connection ends at the error.
    let refused = [
        Denied::new(
            "POST",
            request("POST", "/v1.41/containers/create", ""),
            &[403],
            &["POST"],
        ),
        Denied::new(
            "export",
            get("/v1.41/containers/abc/export"),
            &[403],
            &["GET"],
        ),
        Denied::new(
            "websocket",
            request(
                "GET",
                "/_ping",
                "Upgrade: websocket\r\nConnection: Upgrade\r\n",
            ),
            &[403],
            &["GET"],
        ),
        Denied::new(
            "encoded slash",
            get("/v1.41/containers/a%2Fb/json"),
            &[400],
            &["GET"],
        ),
        Denied::new(
            "bad header",
            b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX A: 1\r\n\r\n".to_vec(),
            &[400],
            &[],
        ),
        Denied::new(
            "bare LF",
            b"GET /_ping HTTP/1.1\nHost: docker\n\n".to_vec(),
            &[400],
            &[],
        ),
        Denied::new(
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &[400],
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for case in &refused {
        let daemon = FakeDaemon::start();
        let proxy = Proxy::start(&daemon, &["--header-timeout", "5"]);
        let mut batch = get("/_ping");
        batch.extend_from_slice(&case.raw);
        batch.extend(get("/v1.41/info"));
        let mut client = proxy.connect();
        client.send(&batch);
        let first = client.read_response();
        if first.header("x-seen") != Some("GET /_ping HTTP/1.1") {
            failures.push(format!(
                "{}: first answer was {}",
                case.name,
                show(&first.raw)
            ));
            continue;
        }
        match client.try_read_response(false, common::READ_TIMEOUT) {
            Err(e) => failures.push(format!("{}: no error response: {e:?}", case.name)),
            Ok(resp) => {
                let mentions: Vec<&str> = case.mentions.iter().map(String::as_str).collect();
                if let Err(why) = resp.check_error(case.statuses, &mentions) {
                    failures.push(format!("{}: {why}", case.name));
                } else if let Err(got) = client.wait_closed(Duration::from_secs(10)) {
                    failures.push(format!("{}: not closed; got {}", case.name, show(&got)));
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
        if daemon.requests() != ["GET /_ping HTTP/1.1"] {
            failures.push(format!("{}: daemon saw {:?}", case.name, daemon.requests()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_get_body_hiding_a_second_request_is_refused_and_the_hidden_request_never_sent() {
    let hidden =
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\n\r\n{}";
    let smuggles = [
        format!("GET /_ping HTTP/1.1\r\nHost: docker\r\nContent-Length: {}\r\n\r\n{hidden}", hidden.len()),
        format!(
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
            hidden.len()
        ),
        // CL.TE: a parser that trusts Content-Length sees a body of 3 bytes
        // ("0\r\n") and then the hidden request; one that trusts chunked
        // sees the hidden request after the last chunk.
        format!("GET /_ping HTTP/1.1\r\nHost: docker\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
    ];
    for (i, smuggle) in smuggles.iter().enumerate() {
        // After an allowed request too, so the upstream connection is open.
        let daemon = FakeDaemon::start();
        let proxy = Proxy::start(&daemon, &[]);
        let mut batch = get("/v1.41/version");
        batch.extend_from_slice(smuggle.as_bytes());
        let mut client = proxy.connect();
        client.send(&batch);
        assert_eq!(client.read_response().status, 200, "case {i}");
        let resp = client.read_response();
        resp.check_error(&[413], &["GET"])
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        client
            .wait_closed(Duration::from_secs(10))
            .unwrap_or_else(|got| panic!("case {i}: not closed; got {}", show(&got)));
        thread::sleep(Duration::from_millis(50));
        let received = String::from_utf8_lossy(&daemon.received()).into_owned();
        assert!(
            !received.contains("POST") && !received.contains("create"),
            "case {i}: daemon got {received}"
        );
        assert_eq!(
            daemon.requests(),
            vec!["GET /v1.41/version HTTP/1.1"],
            "case {i}"
        );
    }
}

#[test]
fn a_hundred_keep_alive_requests_share_one_upstream_connection() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    for i in 0..100 {
        let target = format!("/v1.41/containers/json?n={i}");
        client.send(&get(&target));
        let resp = client.read_response();
        assert_eq!(
            resp.header("x-seen"),
            Some(format!("GET {target} HTTP/1.1").as_str()),
            "request {i}"
        );
    }
    assert_eq!(daemon.requests().len(), 100);
    assert_eq!(daemon.connections(), 1);
}

#[test]
fn each_client_connection_gets_exactly_one_upstream_connection() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut clients: Vec<_> = (0..3).map(|_| proxy.connect()).collect();
    for round in 0..3 {
        for (c, client) in clients.iter_mut().enumerate() {
            client.send(&get(&format!("/_ping?c={c}&r={round}")));
            assert_eq!(client.read_response().status, 200);
        }
    }
    // Connections whose requests are all refused never open one.
    for _ in 0..3 {
        let mut client = proxy.connect();
        client.send(&get("/v1.41/containers/abc/export"));
        assert_eq!(client.read_response().status, 403);
    }
    // One that connects and sends nothing opens none either.
    let _silent = proxy.connect();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(daemon.connections(), 3);
    let seen = daemon.seen();
    for r in &seen {
        let c: usize = r.target.split("c=").nth(1).unwrap()[..1].parse().unwrap();
        let first = seen
            .iter()
            .find(|s| s.target.contains(&format!("c={c}&")))
            .unwrap();
        assert_eq!(
            r.conn, first.conn,
            "client {c}'s requests went over two upstream connections"
        );
    }
}
