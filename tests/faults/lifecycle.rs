//! Shutdown with streams open, and start-up with something in the way of
//! the socket.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{heavy, open_streams};
use crate::common::{wait_until, FakeDaemon, Proxy, TempDir, DEADLINE};

/// The shutdown timeout of the SIGTERM test.
const GRACE: Duration = Duration::from_secs(4);

#[test]
fn sigterm_with_fifty_open_streams_exits_0_within_the_shutdown_timeout_and_removes_the_socket() {
    let _heavy = heavy();
    let daemon = FakeDaemon::start();
    let mut proxy = Proxy::start(&daemon, &["--shutdown-timeout", "4"]);
    let mut clients = open_streams(&proxy, &daemon, 50);

    let signalled = Instant::now();
    proxy.signal("TERM");
    assert!(
        wait_until(GRACE, || !proxy.socket().exists()),
        "socket file still there after SIGTERM"
    );
    // The streams still flow during the grace period.
    daemon.push_chunk(b"{\"status\":\"in-grace\"}\n");
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(
            client.read_until(b"in-grace", GRACE),
            "stream {i} was cut at SIGTERM"
        );
    }
    let status = proxy
        .wait_exit(GRACE + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", signalled.elapsed()));
    let took = signalled.elapsed();
    eprintln!("SIGTERM with 50 streams and --shutdown-timeout 4: exited after {took:?}");
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.logs());
    // The bound: the shutdown timeout plus one second, which is the
    // scheduling slack; it must not leave before the timeout either, since
    // the streams were in flight.
    assert!(
        took + Duration::from_millis(100) >= GRACE && took <= GRACE + Duration::from_secs(1),
        "exited {took:?} after SIGTERM with --shutdown-timeout 4"
    );
    assert!(!proxy.socket().exists(), "socket file left behind");
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .wait_closed(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("client {i} still open after the proxy exited"));
    }
    assert!(wait_until(DEADLINE, || daemon.closed_connections() == 50));
}

/// What can be in the way of the socket the proxy is asked to create.
#[derive(Clone, Copy, Debug)]
enum InTheWay {
    LiveListener,
    RegularFile,
    Folder,
    SymlinkToAFile,
    MissingFolder,
    ParentIsAFile,
}

/// Puts `what` in the way in `dir`; returns the listen path, whatever keeps
/// a listener alive, and a snapshot to compare after the run.
fn prepare(what: InTheWay, dir: &TempDir) -> (PathBuf, Option<UnixListener>, String) {
    let path = dir.join("safe.sock");
    let listener = match what {
        InTheWay::LiveListener => Some(UnixListener::bind(&path).unwrap()),
        InTheWay::RegularFile => {
            fs::write(&path, "precious\n").unwrap();
            None
        }
        InTheWay::Folder => {
            fs::create_dir(&path).unwrap();
            fs::write(path.join("inside"), "precious\n").unwrap();
            None
        }
        InTheWay::SymlinkToAFile => {
            let target = dir.write("target", "precious\n");
            symlink(&target, &path).unwrap();
            None
        }
        InTheWay::MissingFolder => return (dir.join("missing/safe.sock"), None, snapshot(dir)),
        InTheWay::ParentIsAFile => {
            let parent = dir.write("parent", "precious\n");
            return (parent.join("safe.sock"), None, snapshot(dir));
        }
    };
    (path, listener, snapshot(dir))
}

/// The names, kinds and contents of everything in `dir`, one level down.
fn snapshot(dir: &TempDir) -> String {
    let mut entries: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            let kind = e.file_type().unwrap();
            let content = fs::read_to_string(e.path()).unwrap_or_default();
            format!("{:?} {kind:?} {content:?}", e.file_name())
        })
        .collect();
    entries.sort();
    entries.join("; ")
}

#[test]
fn unusable_listen_paths_are_refused_with_a_message_naming_the_path_and_the_way_out() {
    let daemon = FakeDaemon::start();
    let cases = [
        (InTheWay::LiveListener, "another process is listening on it"),
        (
            InTheWay::RegularFile,
            "a file that is not a socket is in the way",
        ),
        (
            InTheWay::Folder,
            "a file that is not a socket is in the way",
        ),
        (
            InTheWay::SymlinkToAFile,
            "a file that is not a socket is in the way",
        ),
        (
            InTheWay::MissingFolder,
            "create it or pass another --listen",
        ),
        (InTheWay::ParentIsAFile, "is not a folder"),
    ];
    let mut failures = Vec::new();
    for (what, phrase) in cases {
        let dir = TempDir::new("way");
        let (path, _listener, before) = prepare(what, &dir);
        let args: Vec<String> = vec![
            "--listen".into(),
            path.display().to_string(),
            "--upstream".into(),
            daemon.path().display().to_string(),
        ];
        let mut proxy = Proxy::spawn(TempDir::new("prx"), &path, &args);
        let Some(status) = proxy.wait_exit(DEADLINE) else {
            failures.push(format!("{what:?}: still running"));
            continue;
        };
        let log = proxy.logs();
        let named = log.contains(&path.display().to_string());
        if status.code() != Some(1) || !named || !log.contains(phrase) {
            failures.push(format!(
                "{what:?}: {status}, expected exit 1 and a message naming {} with {phrase:?}:\n{log}",
                path.display()
            ));
        }
        if snapshot(&dir) != before {
            failures.push(format!(
                "{what:?}: the folder changed: {before} -> {}",
                snapshot(&dir)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
