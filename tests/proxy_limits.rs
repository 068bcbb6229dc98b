//! Limits on what a client can make the proxy hold: head size, header
//! count, and the time allowed to send a head (POLICY.md rule 8).

mod common;

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_all_denied, show, Denied, FakeDaemon, Proxy};

/// A GET /_ping head with `pad` bytes of one extra header value.
fn padded_head(pad: usize) -> Vec<u8> {
    format!(
        "GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(pad)
    )
    .into_bytes()
}

/// A GET /_ping head with `count` header lines in all, Host included.
fn head_with_headers(count: usize) -> Vec<u8> {
    let mut text = String::from("GET /_ping HTTP/1.1\r\nHost: docker\r\n");
    for i in 1..count {
        let _ = write!(text, "X-H{i}: {i}\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

#[test]
fn oversized_heads_and_too_many_headers_get_431() {
    let cases = vec![
        Denied::new("17 KiB head", padded_head(17 * 1024), &[431], &[]),
        Denied::new("64 KiB head", padded_head(64 * 1024), &[431], &[]),
        Denied::new(
            "17 KiB request target",
            format!(
                "GET /v1.41/containers/{}/json HTTP/1.1\r\nHost: docker\r\n\r\n",
                "a".repeat(17 * 1024)
            ),
            &[431],
            &[],
        ),
        Denied::new("65 headers", head_with_headers(65), &[431], &[]),
        Denied::new("200 headers", head_with_headers(200), &[431], &[]),
    ];
    assert_all_denied(&cases, &["--header-timeout", "30"]);
}

#[test]
fn a_head_that_never_ends_gets_431_once_it_passes_the_limit() {
    // 20 KiB of header bytes and no end of head: the proxy must answer at
    // the limit, not buffer until the header timeout (30 s here).
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--header-timeout", "30"]);
    let mut client = proxy.connect();
    let mut bytes = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Pad: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 20 * 1024));
    client.send(&bytes);
    let resp = client
        .try_read_response(false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no answer within 10 s to an endless head: {e:?}"));
    resp.check_error(&[431], &[]).unwrap();
    assert!(daemon.received().is_empty(), "{}", show(&daemon.received()));
}

#[test]
fn heads_within_the_limits_are_served() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    for (name, raw) in [
        ("15 KiB head", padded_head(15 * 1024)),
        ("64 headers", head_with_headers(64)),
    ] {
        let mut client = proxy.connect();
        client.send(&raw);
        let resp = client.read_response();
        assert_eq!(resp.status, 200, "{name}: {}", show(&resp.raw));
    }
    assert_eq!(daemon.requests().len(), 2);
}

fn assert_408_in_time(client: &mut common::Client, started: Instant) {
    let resp = client
        .try_read_response(false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no 408 within 10 s with --header-timeout 1: {e:?}"));
    resp.check_error(&[408], &[]).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "408 came after {:?}",
        started.elapsed()
    );
    client
        .wait_closed(Duration::from_secs(10))
        .expect("connection closed after the 408");
}

#[test]
fn a_head_left_unfinished_gets_408_after_the_header_timeout() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--header-timeout", "1"]);
    let mut client = proxy.connect();
    let started = Instant::now();
    client.send(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n");
    assert_408_in_time(&mut client, started);
    assert!(daemon.received().is_empty());
}

#[test]
fn a_head_trickled_byte_by_byte_still_gets_408() {
    // Slowloris: each byte arrives well within any per-read timeout, but the
    // whole head never does. The deadline is for the whole head.
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--header-timeout", "1", "--idle-timeout", "1"]);
    let mut client = proxy.connect();
    let mut writer = client.socket().try_clone().expect("clone socket");
    let started = Instant::now();
    let trickle = thread::spawn(move || {
        use std::io::Write;
        let bytes = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Slow: ";
        for b in bytes.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*b]).is_err() || started.elapsed() > Duration::from_secs(12) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    assert_408_in_time(&mut client, started);
    drop(client);
    trickle.join().unwrap();
    assert!(daemon.received().is_empty());
}

#[test]
fn a_second_head_left_unfinished_on_a_keep_alive_connection_gets_408() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--header-timeout", "1", "--idle-timeout", "30"]);
    let mut client = proxy.connect();
    client.send(&common::get("/_ping"));
    assert_eq!(client.read_response().status, 200);
    let started = Instant::now();
    client.send(b"GET /v1.41/info HTTP/1.1\r\nHo");
    assert_408_in_time(&mut client, started);
    assert_eq!(daemon.requests(), vec!["GET /_ping HTTP/1.1".to_owned()]);
}
