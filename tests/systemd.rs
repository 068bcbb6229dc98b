//! systemd integration: the hardening score of `contrib/systemd`, socket
//! activation through `systemd-socket-activate`, and the `Type=notify`
//! readiness messages.
//!
//! The tools come with Debian's `systemd` package. Where one is missing the
//! test says so and passes, except under `CI=true`, where it fails: CI must
//! install what its tests need.
//!
//! Self-contained: a fake daemon, a client and process handling of its own,
//! std only.

use std::fs;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_docker-filter");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");
/// Generous: a slow machine makes a test slower, never red.
const DEADLINE: Duration = Duration::from_secs(30);
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
    let dir = TempDir::new("act");
    let daemon = FakeDaemon::start(&dir);
    let safe = dir.join("safe.sock");
    let unused = dir.join("unused.sock");
    let log = dir.join("proxy.log");
    // systemd-socket-activate binds the socket, waits for the first client,
    // then execs the proxy in its own place (same pid) with LISTEN_PID and
    // LISTEN_FDS=1. It passes on only the variables named with -E.
    let mut command = Command::new(activate);
    command
        .arg("-l")
        .arg(&safe)
        .args(["-E", "RUST_LOG"])
        .arg(BINARY)
        .arg("--upstream")
        .arg(daemon.path())
        .arg("--listen")
        .arg(&unused)
        .env("RUST_LOG", "debug");
    let mut proxy = Proc::spawn(command, &log);
    // Not a probe connection: the first client is what starts the proxy,
    // and it would be counted. systemd-socket-activate says when it listens.
    assert!(
        wait_until(|| proxy.logs().contains("Listening on")),
        "systemd-socket-activate did not listen on {}; log:\n{}",
        safe.display(),
        proxy.logs()
    );

    let ping = http(&safe, "GET", "/_ping");
    assert_eq!(ping.status, 200, "{ping:?}; log:\n{}", proxy.logs());
    assert!(ping.body.contains("fake-dockerd"), "{ping:?}");
    assert_eq!(daemon.seen(), vec!["GET /_ping HTTP/1.1".to_owned()]);

    let post = http(&safe, "POST", "/containers/create");
    assert_eq!(post.status, 403, "{post:?}");
    assert!(post.body.contains("\"message\""), "{post:?}");
    assert_eq!(daemon.seen().len(), 1, "the POST reached the daemon");

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
    let dir = TempDir::new("noself");
    let daemon = FakeDaemon::start(&dir);
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(daemon.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let safe = dir.join("safe.sock");
    // systemd-socket-activate (root) binds the socket with root's umask: the
    // proxy, run as nobody, may not connect to it.
    let mut command = Command::new(activate);
    command
        .arg("-l")
        .arg(&safe)
        .arg(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(BINARY)
        .arg("--upstream")
        .arg(daemon.path());
    let mut proxy = Proc::spawn(command, &dir.join("proxy.log"));
    assert!(wait_until(|| proxy.logs().contains("Listening on")));
    assert_eq!(http(&safe, "GET", "/_ping").status, 200, "{}", proxy.logs());
    proxy.signal("TERM");
    let start = Instant::now();
    while proxy.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM; log:\n{}",
            proxy.logs()
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proxy.wait().code(), Some(0), "log:\n{}", proxy.logs());
}

#[test]
fn activation_variables_for_another_process_are_ignored() {
    let dir = TempDir::new("foreign");
    let daemon = FakeDaemon::start(&dir);
    let safe = dir.join("safe.sock");
    let mut command = Command::new(BINARY);
    command
        .arg("--listen")
        .arg(&safe)
        .arg("--upstream")
        .arg(daemon.path())
        // LISTEN_PID names another process (pid 1): descriptor 3 is not ours.
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env_remove("NOTIFY_SOCKET");
    let mut proxy = Proc::spawn(command, &dir.join("proxy.log"));
    assert!(
        wait_until(|| UnixStream::connect(&safe).is_ok()),
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
    let dir = TempDir::new("notify");
    let notify = dir.join("notify.sock");
    let receiver = UnixDatagram::bind(&notify).unwrap();
    run_with_notify(&dir, &receiver, notify.to_str().unwrap());
}

#[test]
fn abstract_notify_socket_gets_ready_then_stopping() {
    let dir = TempDir::new("notify-abs");
    let name = format!("docker-filter-test-{}-{}", std::process::id(), unique());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let receiver = UnixDatagram::bind_addr(&address).unwrap();
    run_with_notify(&dir, &receiver, &format!("@{name}"));
}

fn run_with_notify(dir: &TempDir, receiver: &UnixDatagram, target: &str) {
    let daemon = FakeDaemon::start(dir);
    let safe = dir.join("safe.sock");
    let mut command = Command::new(BINARY);
    command
        .arg("--listen")
        .arg(&safe)
        .arg("--upstream")
        .arg(daemon.path())
        .env("NOTIFY_SOCKET", target)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS");
    let mut proxy = Proc::spawn(command, &dir.join("proxy.log"));

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
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {name} is missing: install Debian's systemd package"
        );
        eprintln!("skipped: {name} is not installed (Debian package systemd)");
    }
    found
}

fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > DEADLINE {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A private folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("df-sd-{tag}-{}-{}", std::process::id(), unique()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A stand-in for dockerd: answers every request head with 200 and a small
/// JSON body, and records the request lines.
struct FakeDaemon {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(dir: &TempDir) -> FakeDaemon {
        let path = dir.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let seen = Arc::clone(&seen);
                        thread::spawn(move || answer(stream, &seen));
                    }
                }
            })
        };
        FakeDaemon {
            path,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the fake daemon answers.
const BODY: &str = "{\"server\":\"fake-dockerd\"}";

fn answer(mut stream: UnixStream, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let line = head.lines().next().unwrap_or_default().to_owned();
            let body = if line.starts_with("HEAD ") { "" } else { BODY };
            seen.lock().unwrap().push(line);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\nContent-Length: {}\r\n\r\n{body}",
                BODY.len()
            );
            if stream.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
}

/// One request on a new connection, read until the proxy closes it.
fn http(socket: &Path, method: &str, path: &str) -> Response {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Response { status, body }
}

/// A child process with its stderr in a file; killed on drop if still
/// running.
struct Proc {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(mut command: Command, log: &Path) -> Proc {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn");
        Proc {
            child,
            log: log.to_owned(),
            status: None,
        }
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let sent: Output = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .output()
            .expect("run kill");
        assert!(sent.status.success(), "kill -{name} failed: {sent:?}");
    }

    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still running {DEADLINE:?} after the signal; log:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
