//! Start-up and shutdown: what the proxy does with the path it is asked to
//! listen on, the permissions it gives the socket, and how it stops on a
//! signal.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{get, show, FakeDaemon, Proxy, TempDir};

fn stop_and_check(mut proxy: Proxy, signal: &str) {
    proxy.signal(signal);
    let status = proxy.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "still running 10 s after SIG{signal}; log:\n{}",
            proxy.logs()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal}: {status}; log:\n{}",
        proxy.logs()
    );
    assert!(
        !proxy.socket().exists(),
        "socket file left behind after SIG{signal}"
    );
}

#[test]
fn sigterm_and_sigint_exit_0_and_remove_the_socket() {
    for signal in ["TERM", "INT"] {
        let daemon = FakeDaemon::start();
        let proxy = Proxy::start(&daemon, &[]);
        let mut client = proxy.connect();
        client.send(&get("/_ping"));
        assert_eq!(client.read_response().status, 200);
        drop(client);
        let log = proxy.logs();
        assert!(
            log.contains("listening on"),
            "no start line in the log:\n{log}"
        );
        stop_and_check(proxy, signal);
    }
}

#[test]
fn sigterm_lets_an_open_stream_finish_then_exits() {
    let daemon = FakeDaemon::start();
    let mut proxy = Proxy::start(&daemon, &["--shutdown-timeout", "30"]);
    let mut client = proxy.connect();
    client.send(&common::request(
        "GET",
        "/v1.41/events",
        "Connection: close\r\n",
    ));
    assert!(client.read_until(b"first-event", common::READ_TIMEOUT));
    assert!(daemon.wait_for_streams(1));

    proxy.signal("TERM");
    assert!(
        common::wait_until(Duration::from_secs(10), || !proxy.socket().exists()),
        "socket file still there 10 s after SIGTERM"
    );
    assert!(
        UnixStream::connect(proxy.socket()).is_err(),
        "still accepting after SIGTERM"
    );

    daemon.push_chunk(b"{\"status\":\"during-shutdown\"}\n");
    assert!(
        client.read_until(b"during-shutdown", Duration::from_secs(10)),
        "the in-flight stream was cut at SIGTERM; got {}",
        show(client.buffered())
    );
    daemon.end_streams();
    let ended = Instant::now();
    let status = proxy.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "still running 10 s after its last request ended; log:\n{}",
            proxy.logs()
        )
    });
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(ended.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_with_a_stream_still_open_exits_after_the_shutdown_timeout() {
    let daemon = FakeDaemon::start();
    let mut proxy = Proxy::start(&daemon, &["--shutdown-timeout", "1"]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/events"));
    assert!(client.read_until(b"first-event", common::READ_TIMEOUT));

    let signalled = Instant::now();
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM with --shutdown-timeout 1"));
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.logs());
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(!proxy.socket().exists());
    client
        .wait_closed(Duration::from_secs(10))
        .expect("client connection closed when the proxy exits");
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("prx");
    let socket = dir.join("safe.sock");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start_in(dir, &socket, daemon.path(), &[]);
    let mut client = proxy.connect();
    client.send(&get("/_ping"));
    assert_eq!(client.read_response().status, 200);
}

/// Starts the proxy on `socket` and expects it to exit with `code` soon.
fn expect_start_failure(dir: TempDir, socket: &Path, code: i32) -> String {
    let daemon = FakeDaemon::start();
    let args: Vec<String> = vec![
        "--listen".into(),
        socket.display().to_string(),
        "--upstream".into(),
        daemon.path().display().to_string(),
    ];
    let mut proxy = Proxy::spawn(dir, socket, &args);
    let status = proxy
        .wait_exit(common::DEADLINE)
        .unwrap_or_else(|| panic!("proxy kept running; log:\n{}", proxy.logs()));
    let log = proxy.logs();
    assert_eq!(status.code(), Some(code), "{status}; log:\n{log}");
    assert!(!log.trim().is_empty(), "no error message");
    log
}

#[test]
fn live_listener_at_the_path_is_left_alone() {
    let dir = TempDir::new("prx");
    let socket = dir.join("safe.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let other = TempDir::new("prx");
    expect_start_failure(other, &socket, 1);

    assert!(fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    let _client = UnixStream::connect(&socket).expect("the other listener still accepts");
    listener.set_nonblocking(false).unwrap();
    listener.accept().expect("the other listener still works");
}

#[test]
fn regular_file_at_the_path_is_refused_and_left_untouched() {
    let dir = TempDir::new("prx");
    let socket = dir.write("safe.sock", "precious data\n");
    let other = TempDir::new("prx");
    expect_start_failure(other, &socket, 1);
    assert_eq!(fs::read_to_string(&socket).unwrap(), "precious data\n");
}

#[test]
fn missing_parent_folder_is_refused() {
    let dir = TempDir::new("prx");
    let socket = dir.join("missing/deeper/safe.sock");
    let other = TempDir::new("prx");
    expect_start_failure(other, &socket, 1);
    assert!(
        !dir.join("missing").exists(),
        "the proxy created the missing folder"
    );
}

#[test]
fn bad_whitelist_regex_exits_2_naming_the_file_and_line() {
    let dir = TempDir::new("wl");
    let list = dir.write(
        "bad.lst",
        "^/_ping$\n\n# a comment\n^/containers/(json$\n^/info$\n",
    );
    let daemon = FakeDaemon::start();
    let sock_dir = TempDir::new("prx");
    let socket = sock_dir.join("safe.sock");
    let run = common::run(&[
        "--listen",
        &socket.display().to_string(),
        "--upstream",
        &daemon.path().display().to_string(),
        "--whitelist",
        &list.display().to_string(),
    ]);
    assert_eq!(run.code(), Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("bad.lst:4") || run.stderr.contains("bad.lst line 4"),
        "stderr does not name bad.lst line 4:\n{}",
        run.stderr
    );
    assert!(!socket.exists(), "socket created despite the bad whitelist");
}

#[test]
fn safe_socket_gets_mode_0660_by_default_and_the_requested_mode() {
    let daemon = FakeDaemon::start();
    let default = Proxy::start(&daemon, &[]);
    let mode = fs::metadata(default.socket()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660, "default mode {mode:o}");

    let custom = Proxy::start(&daemon, &["--socket-mode", "0600"]);
    let mode = fs::metadata(custom.socket()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "--socket-mode 0600 gave {mode:o}");
}

/// A group other than root from /etc/group: (name, gid).
fn other_group() -> Option<(String, u32)> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let gid: u32 = fields.nth(1)?.parse().ok()?;
        (gid != 0 && !name.is_empty()).then(|| (name.to_owned(), gid))
    })
}

#[test]
fn safe_socket_gets_the_requested_group() {
    let probe = TempDir::new("gid");
    let me = fs::metadata(probe.write("me", "")).unwrap();
    let Some((name, gid)) = other_group().filter(|_| me.uid() == 0) else {
        eprintln!("skipped: needs root and a group other than root in /etc/group");
        return;
    };
    let daemon = FakeDaemon::start();
    for group in [gid.to_string(), name] {
        let proxy = Proxy::start(&daemon, &["--socket-group", &group]);
        let got = fs::metadata(proxy.socket()).unwrap().gid();
        assert_eq!(got, gid, "--socket-group {group}");
    }
}
