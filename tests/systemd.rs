//! systemd integration: the hardening score of `contrib/systemd`, socket
//! activation through `systemd-socket-activate`, and the `Type=notify`
//! readiness messages.
//!
//! The tools come with Debian's `systemd` package. Where one is missing the
//! test says so and passes, except under `CI=true`, where it fails: CI must
//! install what its tests need.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http, wait_until, FakeDaemon, Launch, Proxy, Reply, TempDir, BINARY, DEADLINE};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");
/// The most exposure `systemd-analyze security` may report for the unit.
const MAX_EXPOSURE: f64 = 2.0;

// ---------------------------------------------------------------------------
// (a) The hardening score.

#[test]
fn service_unit_scores_an_exposure_of_at_most_2() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let unit = Path::new(UNITS).join("docker-filter.service");
    let output = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let exposure = overall_exposure(&text)
        .unwrap_or_else(|| panic!("no \"Overall exposure level\" in the output:\n{text}"));
    println!("systemd-analyze security --offline=yes: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}:\n{text}"
    );
    // A misspelt setting is ignored with a warning, and would silently
    // weaken the unit.
    for line in text.lines() {
        assert!(
            !line.contains("Unknown key") && !line.contains("ignoring"),
            "systemd did not take a setting: {line}"
        );
    }
}

/// Parses `→ Overall exposure level for docker-filter.service: 0.5 SAFE`.
fn overall_exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let (_, after) = line.rsplit_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_figure_is_parsed() {
    let sample = "✓ UMask=   Files created...\n\n→ Overall exposure level for docker-filter.service: 0.5 SAFE 😀\n";
    assert_eq!(overall_exposure(sample), Some(0.5));
    assert_eq!(
        overall_exposure("→ Overall exposure level for x.service: 9.6 UNSAFE 😨"),
        Some(9.6)
    );
    assert_eq!(overall_exposure("nothing here"), None);
}

#[test]
fn unit_files_name_what_the_proxy_and_the_readme_rely_on() {
    let socket = fs::read_to_string(Path::new(UNITS).join("docker-filter.socket")).unwrap();
    let service = fs::read_to_string(Path::new(UNITS).join("docker-filter.service")).unwrap();
    for setting in [
        "ListenStream=/run/docker-filter/docker.sock",
        "SocketMode=0660",
        "SocketUser=root",
        "SocketGroup=docker-filter",
        "DirectoryMode=0755",
        "Accept=no",
    ] {
        assert!(settings(&socket).contains(&setting), "socket: {setting}");
    }
    assert_eq!(
        settings(&socket)
            .iter()
            .filter(|s| s.starts_with("Listen"))
            .count(),
        1,
        "docker-filter takes exactly one socket"
    );
    for setting in [
        "Type=notify",
        "DynamicUser=yes",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
    ] {
        assert!(settings(&service).contains(&setting), "service: {setting}");
    }
    let value = |unit: &str, key: &str| -> String {
        settings(unit)
            .into_iter()
            .rev()
            .find_map(|s| s.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key}="))
            .to_owned()
    };
    let clients = value(&socket, "SocketGroup");
    // A dynamic user comes with a group of its own name: named like the
    // clients' static group, the service fails with 217/USER.
    assert_ne!(
        value(&service, "User"),
        clients,
        "User= clashes with SocketGroup="
    );
    // docker for the Docker socket, and nothing else: not even the clients'
    // group, since the proxy never connects to the socket it serves.
    let groups = value(&service, "SupplementaryGroups");
    assert_eq!(
        groups.split_whitespace().collect::<Vec<_>>(),
        ["docker"],
        "SupplementaryGroups={groups}"
    );
    // The runtime directory is removed at every stop: it must not be the
    // socket unit's folder.
    assert!(!settings(&service).contains(&"RuntimeDirectory=docker-filter"));
    // ExecStart uses only flags the binary knows.
    let exec = settings(&service)
        .into_iter()
        .find_map(|s| s.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let help = String::from_utf8(
        Command::new(BINARY)
            .arg("--help")
            .output()
            .expect("docker-filter --help")
            .stdout,
    )
    .unwrap();
    for word in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(word),
            "ExecStart= uses {word}, unknown to --help"
        );
    }
}

/// The `Key=value` lines of a unit file, comments dropped.
fn settings(unit: &str) -> Vec<&str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .collect()
}

// ---------------------------------------------------------------------------
// (b) Socket activation.

#[test]
fn socket_activation_serves_the_passed_socket_and_leaves_its_file() {
    let Some(activate) = tool("systemd-socket-activate") else {
        return;
    };
    let dir = TempDir::new("sd-act");
    let daemon = fake_daemon();
    let safe = dir.join("safe.sock");
    let unused = dir.join("unused.sock");
    // systemd-socket-activate binds the socket, waits for the first client,
    // then execs the proxy in its own place (same pid) with LISTEN_PID and
    // LISTEN_FDS=1. It passes on only the variables named with -E.
    let launch = Launch::listen(&unused, daemon.path(), &[])
        .wrapper([
            activate.as_os_str(),
            "-l".as_ref(),
            safe.as_os_str(),
            "-E".as_ref(),
            "RUST_LOG".as_ref(),
        ])
        .env("RUST_LOG", "debug");
    let mut proxy = Proxy::launch(dir, &safe, launch);
    // Not a probe connection: the first client is what starts the proxy,
    // and it would be counted. systemd-socket-activate says when it listens.
    assert!(
        wait_until(DEADLINE, || proxy.logs().contains("Listening on")),
        "systemd-socket-activate did not listen on {}; log:\n{}",
        safe.display(),
        proxy.logs()
    );

    let ping = http(&safe, "GET", "/_ping");
    assert_eq!(ping.status, 200, "{ping:?}; log:\n{}", proxy.logs());
    assert!(ping.text().contains("fake-dockerd"), "{ping:?}");
    assert_eq!(daemon.requests(), vec!["GET /_ping HTTP/1.1".to_owned()]);

    let post = http(&safe, "POST", "/containers/create");
    assert_eq!(post.status, 403, "{post:?}");
    assert!(post.text().contains("\"message\""), "{post:?}");
    assert_eq!(daemon.requests().len(), 1, "the POST reached the daemon");

    let logs = proxy.logs();
    assert!(logs.contains("(passed by systemd)"), "{logs}");
    assert!(
        !unused.exists(),
        "the proxy created --listen although systemd passed a socket"
    );

    let status = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.logs());
    // The file belongs to whoever bound the socket (systemd, here
    // systemd-socket-activate, which never removes it): the proxy leaves it.
    let meta = fs::symlink_metadata(&safe).expect("the socket file is still there");
    assert!(meta.file_type().is_socket());
    let logs = proxy.logs();
    assert!(logs.contains("stopped: connections=2"), "{logs}");
}

/// Under socket activation the proxy stops its accept loop by connecting to
/// the socket it was passed. When its own user may not connect there (the
/// usual case: `SocketGroup=` is the clients' group, not the service's), the
/// wake-up fails and SIGTERM is acted on only when the next client comes;
/// systemd kills the proxy at `TimeoutStopSec=`. The unit works around it by
/// giving the service the socket's group too.
#[test]
fn sigterm_stops_an_activated_proxy_that_cannot_connect_to_its_own_socket() {
    let (Some(activate), Some(setpriv)) = (tool("systemd-socket-activate"), tool("setpriv")) else {
        return;
    };
    if fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) != Some("0"))
    {
        eprintln!("skipped: needs root, to run the proxy as another user");
        return;
    }
    let dir = TempDir::new("sd-noself");
    let daemon = fake_daemon_at(&dir.join("docker.sock"));
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(daemon.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let safe = dir.join("safe.sock");
    // systemd-socket-activate (root) binds the socket with root's umask: the
    // proxy, run as nobody, may not connect to it.
    let launch = Launch::new([OsStr::new("--upstream"), daemon.path().as_os_str()]).wrapper([
        activate.as_os_str(),
        "-l".as_ref(),
        safe.as_os_str(),
        setpriv.as_os_str(),
        "--reuid=65534".as_ref(),
        "--regid=65534".as_ref(),
        "--clear-groups".as_ref(),
    ]);
    let mut proxy = Proxy::launch(dir, &safe, launch);
    assert!(wait_until(DEADLINE, || proxy
        .logs()
        .contains("Listening on")));
    assert_eq!(http(&safe, "GET", "/_ping").status, 200, "{}", proxy.logs());
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM; log:\n{}", proxy.logs()));
    assert_eq!(status.code(), Some(0), "log:\n{}", proxy.logs());
}

#[test]
fn activation_variables_for_another_process_are_ignored() {
    let dir = TempDir::new("sd-foreign");
    let daemon = fake_daemon();
    let safe = dir.join("safe.sock");
    let launch = Launch::listen(&safe, daemon.path(), &[])
        // LISTEN_PID names another process (pid 1): descriptor 3 is not ours.
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env_remove("NOTIFY_SOCKET");
    let mut proxy = Proxy::launch(dir, &safe, launch);
    assert!(
        wait_until(DEADLINE, || UnixStream::connect(&safe).is_ok()),
        "no socket of its own; log:\n{}",
        proxy.logs()
    );
    assert_eq!(http(&safe, "GET", "/_ping").status, 200);
    assert!(!proxy.logs().contains("passed by systemd"));
    assert_eq!(proxy.terminate().code(), Some(0));
    assert!(!safe.exists(), "its own socket is removed at exit");
}

// ---------------------------------------------------------------------------
// (c) Type=notify.

#[test]
fn notify_socket_gets_ready_then_stopping() {
    let dir = TempDir::new("sd-notify");
    let notify = dir.join("notify.sock");
    let receiver = UnixDatagram::bind(&notify).unwrap();
    run_with_notify(dir, &receiver, notify.to_str().unwrap());
}

#[test]
fn abstract_notify_socket_gets_ready_then_stopping() {
    let dir = TempDir::new("sd-notify-abs");
    // The folder's name is unique to this process and test.
    let name = format!(
        "docker-filter-test-{}",
        dir.path().file_name().unwrap().to_string_lossy()
    );
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let receiver = UnixDatagram::bind_addr(&address).unwrap();
    run_with_notify(dir, &receiver, &format!("@{name}"));
}

fn run_with_notify(dir: TempDir, receiver: &UnixDatagram, target: &str) {
    let daemon = fake_daemon();
    let safe = dir.join("safe.sock");
    let launch = Launch::listen(&safe, daemon.path(), &[])
        .env("NOTIFY_SOCKET", target)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS");
    let mut proxy = Proxy::launch(dir, &safe, launch);

    receiver.set_read_timeout(Some(DEADLINE)).unwrap();
    let ready = receive(receiver).unwrap_or_else(|e| {
        panic!(
            "no READY=1 within {DEADLINE:?} ({e}); log:\n{}",
            proxy.logs()
        )
    });
    assert_eq!(ready, "READY=1");
    // Ready means serving.
    assert_eq!(http(&safe, "GET", "/_ping").status, 200);

    proxy.signal("TERM");
    let stopping = receive(receiver).unwrap_or_else(|e| {
        panic!(
            "no STOPPING=1 within {DEADLINE:?} of SIGTERM ({e}); log:\n{}",
            proxy.logs()
        )
    });
    assert_eq!(stopping, "STOPPING=1");
    let status = proxy.wait();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.logs());
    receiver.set_nonblocking(true).unwrap();
    assert!(
        receive(receiver).is_err(),
        "nothing is sent after STOPPING=1"
    );
}

fn receive(receiver: &UnixDatagram) -> std::io::Result<String> {
    let mut buf = [0u8; 512];
    let n = receiver.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

// ---------------------------------------------------------------------------
// Harness.

/// The path of `name` on PATH, or `None` after saying the test is skipped;
/// under `CI=true` a missing tool fails the test.
fn tool(name: &str) -> Option<std::path::PathBuf> {
    common::tool(name, "systemd")
}

/// What the fake daemon answers.
const BODY: &str = "{\"server\":\"fake-dockerd\"}";

/// A fake daemon whose answers say where they come from.
fn fake_daemon() -> FakeDaemon {
    let daemon = FakeDaemon::start();
    daemon.respond(|req| Reply::json(req, BODY));
    daemon
}

/// [`fake_daemon`] listening at `path`, in a folder the caller owns.
fn fake_daemon_at(path: &Path) -> FakeDaemon {
    let daemon = FakeDaemon::start_at(path);
    daemon.respond(|req| Reply::json(req, BODY));
    daemon
}
