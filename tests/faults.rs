//! Faults around the proxy, each with what the client sees and what must
//! not happen: a daemon that is absent, unreadable, restarted under a
//! keep-alive connection or gone in the middle of streams; clients that
//! vanish or trickle by the hundred; SIGTERM with streams open; listen paths
//! that cannot be used. What must not happen is, in turn: a proxy that exits
//! or needs a restart, a connection left hanging, a forged byte inside a
//! relayed body, a thread or descriptor kept after its connection ended.
//!
//! This file has the daemon faults; `faults/clients.rs` the clients by the
//! hundred, `faults/lifecycle.rs` shutdown and start-up. The tests with
//! hundreds of connections take [`heavy`] so that they do not share the two
//! cores with each other while they measure time bounds.

#[path = "faults/clients.rs"]
mod clients;
mod common;
#[path = "faults/lifecycle.rs"]
mod lifecycle;

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    default_reply, get, request, settled_usage, show, wait_back_to, wait_until, Client, FakeDaemon,
    Proxy, Reply, TempDir, BINARY, DEADLINE, READ_TIMEOUT,
};

static HEAVY: Mutex<()> = Mutex::new(());

/// Serialises the tests that open hundreds of connections and measure time.
fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens `n` `/events` streams through `proxy` and waits until the fake
/// daemon holds all of them open.
fn open_streams(proxy: &Proxy, daemon: &FakeDaemon, n: usize) -> Vec<Client> {
    let clients: Vec<Client> = (0..n)
        .map(|i| {
            let mut client = proxy.connect();
            client.send(&get(&format!("/v1.41/events?client={i}")));
            assert!(
                client.read_until(b"first-event", READ_TIMEOUT),
                "client {i}: no stream; got {}; log:\n{}",
                show(client.buffered()),
                proxy.logs()
            );
            client
        })
        .collect();
    assert!(daemon.wait_for_streams(n));
    clients
}

/// Sends `target` on `client` and checks that the daemon answered it.
fn assert_served(client: &mut Client, target: &str) {
    client.send(&get(target));
    let resp = client.read_response();
    let want = format!("GET {target} HTTP/1.1");
    assert_eq!(
        resp.header("x-seen"),
        Some(want.as_str()),
        "{}",
        show(&resp.raw)
    );
}

// --- The daemon: absent, restarted, unreadable, gone mid-stream ---------------

#[test]
fn absent_daemon_gets_502_on_every_connection_and_the_proxy_stays_up() {
    let dir = TempDir::new("up");
    let upstream = dir.join("absent.sock");
    let mut proxy = Proxy::start_upstream(&upstream, &[]);
    let baseline = settled_usage(proxy.pid(), Duration::from_millis(1500));
    let path = upstream.display().to_string();
    let expect_502 = |proxy: &Proxy, n: usize| {
        let mut client = proxy.connect();
        client.send(&get(&format!("/_ping?n={n}")));
        let resp = client.read_response();
        resp.check_error(&[502], &[&path, "No such file", "is dockerd running"])
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        client
            .wait_closed(Duration::from_secs(10))
            .unwrap_or_else(|got| panic!("request {n}: not closed; got {}", show(&got)));
    };
    for n in 0..3 {
        expect_502(&proxy, n);
    }
    // The Docker CLI's first request is HEAD /_ping: its 502 has no body.
    let mut client = proxy.connect();
    client.send(&request("HEAD", "/_ping", ""));
    client
        .read_head_response()
        .check_error_head(&[502])
        .unwrap();
    let rest = client.wait_closed(Duration::from_secs(10));
    assert!(
        rest.as_ref().is_ok_and(Vec::is_empty),
        "after the 502 to HEAD: {rest:?}"
    );
    thread::scope(|s| {
        for n in 3..23 {
            let proxy = &proxy;
            s.spawn(move || expect_502(proxy, n));
        }
    });
    assert!(
        proxy.wait_exit(Duration::ZERO).is_none(),
        "the proxy exited; log:\n{}",
        proxy.logs()
    );
    // Nor does a failed connect keep anything: the pool's 1 s linger, and
    // wide slack (this bound is not the issue's).
    let done = Instant::now();
    if let Err(last) = wait_back_to(proxy.pid(), &baseline, done, Duration::from_secs(10)) {
        panic!("24 refused connects left {last:?} (baseline {baseline:?})");
    }
}

#[test]
fn daemon_restarted_between_two_requests_of_one_keep_alive_connection_serves_the_second() {
    // Once after the proxy has seen the daemon's hang-up, once at once. The
    // proxy polls the daemon connection, so even "at once" it nearly always
    // sees the hang-up first: the other path, a write that fails and a
    // reconnect (`send_head` in connection.rs), cannot be forced from
    // outside and is not proven here.
    for noticed in [true, false] {
        let mut daemon = FakeDaemon::start();
        let proxy = Proxy::start(&daemon, &[]);
        let mut client = proxy.connect();
        assert_served(&mut client, "/_ping?n=1");

        daemon.stop();
        if noticed {
            assert!(wait_until(DEADLINE, || daemon.closed_connections() == 1));
            thread::sleep(Duration::from_millis(200));
        }
        daemon.restart();
        assert_served(&mut client, "/_ping?n=2");
        assert_eq!(daemon.connections(), 2, "noticed={noticed}");
        assert_eq!(
            daemon.requests(),
            ["GET /_ping?n=1 HTTP/1.1", "GET /_ping?n=2 HTTP/1.1"],
            "noticed={noticed}"
        );
    }
}

#[test]
fn daemon_gone_between_two_requests_of_one_keep_alive_connection_gets_502_then_serves_again() {
    let mut daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    assert_served(&mut client, "/_ping?n=1");

    daemon.stop();
    client.send(&get("/v1.41/info"));
    let path = daemon.path().display().to_string();
    client
        .read_response()
        .check_error(&[502], &[&path, "GET", "/v1.41/info"])
        .unwrap();
    client
        .wait_closed(Duration::from_secs(10))
        .expect("closed after the 502");

    daemon.restart();
    assert_served(&mut proxy.connect(), "/_ping?n=2");
}

fn effective_uid(pid: &str) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Whether every folder above `path`, and `path` itself, can be searched
/// (and so the binary run) by any user.
fn reachable_by_anyone(path: &Path) -> bool {
    path.ancestors()
        .filter_map(|p| fs::metadata(p).ok())
        .all(|m| m.permissions().mode() & 0o001 != 0)
}

#[test]
fn unreadable_daemon_socket_gets_502_naming_the_permission_error() {
    // Root ignores socket permissions, so the proxy runs as nobody.
    const NOBODY: u32 = 65534;
    if effective_uid("self") != Some(0) {
        eprintln!("skipped: needs root to run the proxy as uid {NOBODY}");
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    if !reachable_by_anyone(Path::new(BINARY)) {
        eprintln!("skipped: uid {NOBODY} cannot reach {BINARY}");
        return;
    }
    let daemon_dir = TempDir::new("dmn");
    fs::set_permissions(daemon_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let upstream = daemon_dir.join("docker.sock");
    let daemon = FakeDaemon::start_at(&upstream);
    fs::set_permissions(&upstream, fs::Permissions::from_mode(0o600)).unwrap();
    let proxy_dir = TempDir::new("prx");
    chown(proxy_dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = proxy_dir.join("safe.sock");
    let ids = [format!("--reuid={NOBODY}"), format!("--regid={NOBODY}")];
    let wrapper = ["setpriv", &ids[0], &ids[1], "--clear-groups"];
    let proxy = Proxy::start_wrapped(&wrapper, proxy_dir, &socket, &upstream, &[]);
    assert_eq!(effective_uid(&proxy.pid().to_string()), Some(NOBODY));

    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    let path = upstream.display().to_string();
    client
        .read_response()
        .check_error(
            &[502],
            &[&path, "Permission denied", "read and write access"],
        )
        .unwrap();
    assert_eq!(daemon.connections(), 0);

    // The same proxy is served once the socket is opened to it: the 502 was
    // the permission, and no restart is needed.
    fs::set_permissions(&upstream, fs::Permissions::from_mode(0o666)).unwrap();
    assert_served(&mut proxy.connect(), "/_ping");
}

#[test]
fn daemon_dying_mid_stream_ends_every_client_connection_promptly_and_adds_nothing() {
    // Half the streams are cut between two chunks, half in the middle of a
    // chunk that announced 0x400 bytes and sent 10. The client must see its
    // connection end; a 502 or any other byte after a relayed part of a
    // response would be read as part of that response.
    let mut daemon = FakeDaemon::start();
    daemon.respond(|req| {
        if req.target.contains("partial") {
            Reply::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n400\r\n{\"status\":"
                    .to_vec(),
            )
        } else {
            default_reply(req)
        }
    });
    let proxy = Proxy::start(&daemon, &[]);
    let mut clients: Vec<(String, Client)> = Vec::new();
    for i in 0..8 {
        let (target, marker): (String, &[u8]) = if i % 2 == 0 {
            (format!("/v1.41/events?c={i}"), b"first-event")
        } else {
            (format!("/v1.41/events?partial={i}"), b"{\"status\":")
        };
        let mut client = proxy.connect();
        client.send(&get(&target));
        assert!(client.read_until(marker, READ_TIMEOUT), "{target}");
        clients.push((target, client));
    }
    assert!(daemon.wait_for_streams(4));

    let stopped = Instant::now();
    daemon.stop();
    for (target, client) in &mut clients {
        let before = client.buffered().to_vec();
        // The bound is "promptly (within a few seconds)": the proxy
        // polls the daemon connection and sees the hang-up at once; 5 s is
        // the slack for a loaded machine.
        match client.wait_closed(Duration::from_secs(5)) {
            Ok(got) => assert_eq!(
                show(&got),
                show(&before),
                "{target}: bytes were added after the daemon died"
            ),
            Err(got) => panic!(
                "{target}: still open {:?} after the daemon died; got {}",
                stopped.elapsed(),
                show(&got)
            ),
        }
    }
    eprintln!(
        "all 8 client connections closed {:?} after the daemon died",
        stopped.elapsed()
    );

    daemon.restart();
    assert_served(&mut proxy.connect(), "/_ping");
}
