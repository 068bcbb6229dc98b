//! Failures around the proxy: a daemon that is absent, late, or hangs up,
//! and the cap on concurrent client connections.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{get, show, wait_until, Client, FakeDaemon, Proxy, Reply, TempDir, DEADLINE};

#[test]
fn absent_daemon_gets_502_naming_the_upstream_socket() {
    let dir = TempDir::new("up");
    let upstream = dir.join("nobody.sock");
    let proxy = Proxy::start_upstream(&upstream, &[]);
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    let resp = client.read_response();
    let path = upstream.display().to_string();
    resp.check_error(&[502], &[&path]).unwrap();
    client
        .wait_closed(Duration::from_secs(10))
        .expect("closed after the 502");
}

#[test]
fn upstream_error_message_names_the_request() {
    // The contract: every error message names the method and the path
    // when they are known, and a 502 is answered after the head was read.
    let dir = TempDir::new("up");
    let proxy = Proxy::start_upstream(&dir.join("nobody.sock"), &[]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/info"));
    client
        .read_response()
        .check_error(&[502], &["GET", "/v1.41/info"])
        .unwrap();
}

#[test]
fn daemon_started_after_the_proxy_is_served_without_a_restart() {
    let dir = TempDir::new("up");
    let upstream = dir.join("late.sock");
    let proxy = Proxy::start_upstream(&upstream, &[]);
    let mut early = proxy.connect();
    early.send(&get("/_ping"));
    assert_eq!(early.read_response().status, 502);

    let daemon = FakeDaemon::start_at(&upstream);
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    let resp = client.read_response();
    assert_eq!(
        resp.header("x-seen"),
        Some("GET /_ping HTTP/1.1"),
        "{}",
        show(&resp.raw)
    );
    assert_eq!(daemon.requests().len(), 1);
}

#[test]
fn daemon_restart_is_survived() {
    let mut daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    assert_eq!(client.read_response().status, 200);

    daemon.stop();
    let mut down = proxy.connect();
    down.send(&get("/_ping"));
    assert_eq!(down.read_response().status, 502);

    daemon.restart();
    let mut again = proxy.connect();
    again.send(&get("/_ping"));
    assert_eq!(again.read_response().status, 200);
}

#[test]
fn daemon_hanging_up_before_answering_gets_502() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    daemon.respond(|req| {
        if req.target.contains("info") {
            Reply::Close
        } else {
            Reply::Ok
        }
    });
    let mut client = proxy.connect();
    client.send(&get("/v1.41/info"));
    client.read_response().check_error(&[502], &[]).unwrap();
    client
        .wait_closed(Duration::from_secs(10))
        .expect("closed after the 502");

    // Also on a later request of a keep-alive connection.
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    assert_eq!(client.read_response().status, 200);
    client.send(&get("/v1.41/info"));
    client.read_response().check_error(&[502], &[]).unwrap();
}

/// Connects and completes one request, retrying while the proxy still
/// counts an earlier connection (its readiness probe, say).
fn held_connection(proxy: &Proxy) -> Client {
    let start = Instant::now();
    loop {
        let mut client = proxy.connect();
        client.send(&get("/_ping"));
        let resp = client.read_response();
        if resp.status == 200 {
            return client;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never served: {}",
            show(&resp.raw)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connections_over_the_limit_get_503_at_once_until_one_closes() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--max-connections", "2"]);
    let first = held_connection(&proxy);
    let _second = held_connection(&proxy);

    let mut third = proxy.connect();
    let asked = Instant::now();
    third.send(&get("/_ping"));
    let resp = third
        .try_read_response(false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no 503 for a third connection: {e:?}"));
    resp.check_error(&[503], &[]).unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "503 took {:?}",
        asked.elapsed()
    );
    third
        .wait_closed(Duration::from_secs(10))
        .expect("closed after the 503");
    assert_eq!(daemon.requests().len(), 2, "{:?}", daemon.requests());

    drop(first);
    let served = wait_until(DEADLINE, || {
        let mut c = proxy.connect();
        c.send(&get("/_ping"));
        c.try_read_response(false, common::READ_TIMEOUT)
            .is_ok_and(|r| r.status == 200)
    });
    assert!(served, "no client served after one of the two closed");
}
