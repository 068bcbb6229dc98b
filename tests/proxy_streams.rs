//! Long responses and idle connections: a stream is never cut by the idle
//! limit, an idle keep-alive connection is, and a close on either side ends
//! the other side promptly.

mod common;

use std::thread;
use std::time::Duration;

use common::{get, request, show, wait_until, FakeDaemon, Proxy, Reply, DEADLINE};

#[test]
fn streams_keep_flowing_past_the_idle_timeout() {
    let daemon = FakeDaemon::start();
    daemon.respond(|req| {
        if req.target.contains("/events")
            || req.target.contains("follow=1")
            || req.target.contains("/stats")
        {
            Reply::Stream
        } else {
            Reply::Ok
        }
    });
    let proxy = Proxy::start(&daemon, &["--idle-timeout", "1"]);
    let targets = [
        "/v1.41/events",
        "/v1.41/containers/abc/logs?follow=1&stdout=1",
        "/v1.41/containers/abc/stats",
    ];
    let mut clients: Vec<_> = targets
        .iter()
        .map(|t| {
            let mut client = proxy.connect();
            client.send(&get(t));
            assert!(
                client.read_until(b"first-event", common::READ_TIMEOUT),
                "{t}: {}",
                show(client.buffered())
            );
            client
        })
        .collect();
    assert!(daemon.wait_for_streams(targets.len()));

    thread::sleep(Duration::from_secs(3));
    daemon.push_chunk(b"{\"status\":\"second-event\"}\n");
    for (t, client) in targets.iter().zip(&mut clients) {
        assert!(
            client.read_until(b"second-event", Duration::from_secs(10)),
            "{t}: stream cut after 3 s of silence with --idle-timeout 1; got {}",
            show(client.buffered())
        );
    }
    daemon.push_chunk(b"{\"status\":\"third-event\"}\n");
    for (t, client) in targets.iter().zip(&mut clients) {
        assert!(
            client.read_until(b"third-event", Duration::from_secs(10)),
            "{t}"
        );
    }
}

#[test]
fn client_disconnect_mid_stream_closes_the_upstream_connection() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/events"));
    assert!(client.read_until(b"first-event", common::READ_TIMEOUT));
    assert!(daemon.wait_for_streams(1));
    assert_eq!(daemon.closed_connections(), 0);

    // No more events come: the proxy must notice the close from the client
    // side, not on its next write.
    drop(client);
    assert!(
        wait_until(Duration::from_secs(10), || daemon.closed_connections() == 1),
        "upstream still open 10 s after the client left"
    );
}

#[test]
fn daemon_closing_mid_stream_closes_the_client() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/events"));
    assert!(client.read_until(b"first-event", common::READ_TIMEOUT));
    assert!(daemon.wait_for_streams(1));
    daemon.cut_streams();
    client
        .wait_closed(Duration::from_secs(10))
        .unwrap_or_else(|got| {
            panic!(
                "client still open 10 s after the daemon left; got {}",
                show(&got)
            )
        });
}

#[test]
fn finished_stream_leaves_the_connection_usable() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/events?until=1"));
    let mut resp = None;
    thread::scope(|s| {
        s.spawn(|| {
            assert!(daemon.wait_for_streams(1));
            daemon.push_chunk(b"{\"status\":\"last-event\"}\n");
            daemon.end_streams();
        });
        resp = Some(client.read_response());
    });
    let resp = resp.unwrap();
    assert!(
        resp.text().contains("first-event") && resp.text().contains("last-event"),
        "{}",
        show(&resp.raw)
    );
    client.send(&get("/_ping"));
    assert_eq!(
        client.read_response().header("x-seen"),
        Some("GET /_ping HTTP/1.1")
    );
    assert_eq!(daemon.connections(), 1);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--idle-timeout", "1"]);
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    assert_eq!(client.read_response().status, 200);
    let got = client
        .wait_closed(Duration::from_secs(10))
        .unwrap_or_else(|got| panic!("idle connection still open after 10 s; got {}", show(&got)));
    assert!(
        got.is_empty(),
        "idle close must be silent; got {}",
        show(&got)
    );
    assert!(
        wait_until(DEADLINE, || daemon.closed_connections() == 1),
        "the upstream connection outlived the idle client connection"
    );
}

#[test]
fn keep_alive_connection_in_use_is_not_closed_early() {
    // Requests spaced well inside the idle limit keep the connection open.
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--idle-timeout", "3"]);
    let mut client = proxy.connect();
    for i in 0..4 {
        client.send(&request("GET", &format!("/_ping?i={i}"), ""));
        assert_eq!(client.read_response().status, 200, "request {i}");
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(daemon.connections(), 1);
}

#[test]
fn a_slow_answer_is_not_cut_by_the_idle_or_header_timeout() {
    // The request is outstanding while the daemon thinks: the connection is
    // not idle, and its head was complete long ago.
    let daemon = FakeDaemon::start();
    daemon.respond(|_| {
        thread::sleep(Duration::from_secs(3));
        Reply::Ok
    });
    let proxy = Proxy::start(&daemon, &["--idle-timeout", "1", "--header-timeout", "1"]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/info"));
    let resp = client
        .try_read_response(false, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("a 3 s answer was cut with 1 s timeouts: {e:?}"));
    assert_eq!(resp.header("x-seen"), Some("GET /v1.41/info HTTP/1.1"));
}

#[test]
fn half_closed_client_still_gets_its_answer() {
    // Only a full close is a disconnect: `printf ... | socat` style clients
    // shut their sending side down after the request.
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    client
        .socket()
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let resp = client
        .try_read_response(false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no answer after a half-close: {e:?}"));
    assert_eq!(resp.header("x-seen"), Some("GET /_ping HTTP/1.1"));
}

#[test]
fn many_concurrent_clients_are_all_served() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let proxy = &proxy;
    thread::scope(|s| {
        let workers: Vec<_> = (0..50)
            .map(|i| {
                s.spawn(move || {
                    let mut client = proxy.connect();
                    for j in 0..5 {
                        let target = format!("/_ping?c={i}&r={j}");
                        client.send(&get(&target));
                        let resp = client.read_response();
                        assert_eq!(
                            resp.header("x-seen"),
                            Some(format!("GET {target} HTTP/1.1").as_str())
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a client failed");
        }
    });
    assert_eq!(daemon.requests().len(), 250);
    assert_eq!(daemon.connections(), 50);
}

#[test]
fn a_client_that_stops_reading_a_long_answer_is_given_up_after_the_idle_timeout() {
    // 32 MiB is far more than the socket buffers and the proxy's pipe hold,
    // so the proxy must wait on the client, and give up on it.
    let size = 32 * 1024 * 1024;
    let mut with_length = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
    with_length.resize(with_length.len() + size, b'x');
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    while chunked.len() < size {
        chunked.extend_from_slice(b"3e8\r\n");
        chunked.resize(chunked.len() + 1000, b'y');
        chunked.extend_from_slice(b"\r\n");
    }
    let daemon = FakeDaemon::start();
    daemon.respond(move |req| {
        Reply::Raw(if req.target.contains("/logs") {
            with_length.clone()
        } else {
            chunked.clone()
        })
    });
    let proxy = Proxy::start(&daemon, &["--idle-timeout", "1"]);
    // A long Content-Length body goes through splice(2), small chunks
    // through the buffer: both must give up on a client that reads nothing.
    for target in ["/v1.41/containers/abc/logs?stdout=1", "/v1.41/events"] {
        let mut client = proxy.connect();
        client.send(&get(target));
        thread::sleep(Duration::from_secs(4));
        let socket = client.socket();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut received = Vec::new();
        let _ = std::io::Read::read_to_end(&mut &*socket, &mut received);
        assert!(
            received.len() < size,
            "{target}: the proxy went on writing to a client that read nothing for 4 s \
             with --idle-timeout 1 ({} bytes arrived)",
            received.len()
        );
    }
}
