//! Caller credentials: the uid, gid and pid the kernel reports for each
//! client (`SO_PEERCRED`) appear in the decision lines, and `--allow-uid` /
//! `--allow-gid` serve only the callers they list, refusing the others
//! before anything reaches the daemon.
//!
//! The test process itself is the client, so the expected credentials are
//! its own: the effective ids of `/proc/self/status` and
//! `std::process::id()`.
//!
//! Self-contained: a fake daemon, a client and process handling of its own,
//! std only.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_docker-filter");
/// Generous: a slow machine makes a test slower, never red.
const DEADLINE: Duration = Duration::from_secs(30);

/// This process's effective uid and gid, as `/proc/self/status` lists them
/// (`Uid:` real, effective, saved, file system).
fn own_ids() -> (u32, u32) {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let effective = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no {key} line in /proc/self/status"))
    };
    (effective("Uid:"), effective("Gid:"))
}

/// An id that is not `id` (and not the special -1).
fn other_than(id: u32) -> u32 {
    if id == 4242 {
        4243
    } else {
        4242
    }
}

/// The name of entry `id` in an `/etc/passwd` or `/etc/group` file.
fn name_of(database: &str, id: u32) -> Option<String> {
    let text = fs::read_to_string(database).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 2 && fields[2] == id.to_string()).then(|| fields[0].to_owned())
    })
}

fn credentials() -> String {
    let (uid, gid) = own_ids();
    format!("uid={uid} gid={gid} pid={}", std::process::id())
}

#[test]
fn decision_lines_carry_the_callers_uid_gid_and_pid() {
    let (dir, daemon) = setup("log");
    let mut proxy = Proxy::start(&dir, &daemon, &[]);
    assert_eq!(proxy.get("/_ping").status, 200);
    assert_eq!(proxy.request("POST", "/containers/create").status, 403);
    let fields = credentials();

    assert!(
        wait_until(|| proxy.logs().contains("deny conn=")),
        "no deny line; log:\n{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    let allow = line_with(&logs, "allow conn=");
    let deny = line_with(&logs, "deny conn=");
    assert!(
        allow.contains(&format!("conn=1 {fields} method=GET path=\"/_ping\"")),
        "allow line without the caller's credentials {fields}: {allow}"
    );
    assert!(
        deny.contains(&format!(
            "conn=2 {fields} status=403 reason=method method=POST"
        )),
        "deny line without the caller's credentials {fields}: {deny}"
    );
    assert_eq!(proxy.terminate().code(), Some(0));
}

#[test]
fn allow_uid_with_the_callers_uid_serves_it() {
    let (uid, _) = own_ids();
    let (dir, daemon) = setup("uid-own");
    let mut proxy = Proxy::start(&dir, &daemon, &["--allow-uid", &uid.to_string()]);
    let response = proxy.get("/_ping");
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", proxy.logs());
    assert_eq!(daemon.requests(), vec!["GET /_ping HTTP/1.1".to_owned()]);
    let logs = proxy.logs();
    assert!(
        logs.contains(&format!("allowed uids [{uid}] gids []")),
        "the start line names the allowed ids:\n{logs}"
    );
    assert_eq!(proxy.terminate().code(), Some(0));
}

#[test]
fn allow_uid_without_the_callers_uid_refuses_it_before_the_daemon() {
    let (uid, gid) = own_ids();
    let other = other_than(uid);
    let (dir, daemon) = setup("uid-other");
    let mut proxy = Proxy::start(&dir, &daemon, &["--allow-uid", &other.to_string()]);
    for method in ["GET", "HEAD"] {
        let response = proxy.request(method, "/_ping");
        assert_eq!(
            response.status,
            403,
            "{method}: {response:?}; log:\n{}",
            proxy.logs()
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{response:?}"
        );
        if method == "GET" {
            let message = json_message(&response.body)
                .unwrap_or_else(|| panic!("no JSON message in {:?}", response.body));
            assert!(
                message.contains(&format!("uid {uid}")) && message.contains("not allowed"),
                "the message says the uid is not allowed: {message}"
            );
        } else {
            assert_eq!(response.body, "", "HEAD gets no body");
        }
    }
    let logs = proxy.logs();
    let deny = line_with(&logs, "reason=peer");
    assert!(
        deny.contains(&format!("uid={uid} gid={gid} pid={}", std::process::id()))
            && deny.contains("status=403"),
        "{deny}"
    );
    assert_eq!(proxy.terminate().code(), Some(0));
    assert_eq!(
        daemon.connections(),
        0,
        "a refused caller must not reach the daemon: {:?}",
        daemon.requests()
    );
}

#[test]
fn allow_gid_with_the_callers_gid_serves_it() {
    let (_, gid) = own_ids();
    let (dir, daemon) = setup("gid-own");
    let mut proxy = Proxy::start(&dir, &daemon, &["--allow-gid", &gid.to_string()]);
    let response = proxy.get("/v1.41/info");
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", proxy.logs());
    assert_eq!(
        daemon.requests(),
        vec!["GET /v1.41/info HTTP/1.1".to_owned()]
    );
    assert_eq!(proxy.terminate().code(), Some(0));
}

#[test]
fn either_list_admits_and_neither_refuses() {
    let (uid, gid) = own_ids();
    let (dir, daemon) = setup("either");
    let mut proxy = Proxy::start(
        &dir,
        &daemon,
        &[
            "--allow-uid",
            &other_than(uid).to_string(),
            "--allow-gid",
            &gid.to_string(),
        ],
    );
    assert_eq!(proxy.get("/_ping").status, 200, "log:\n{}", proxy.logs());
    assert_eq!(proxy.terminate().code(), Some(0));

    let (dir, daemon) = setup("neither");
    let mut proxy = Proxy::start(
        &dir,
        &daemon,
        &[
            "--allow-uid",
            &other_than(uid).to_string(),
            "--allow-gid",
            &other_than(gid).to_string(),
        ],
    );
    assert_eq!(proxy.get("/_ping").status, 403, "log:\n{}", proxy.logs());
    assert_eq!(proxy.terminate().code(), Some(0));
    assert_eq!(daemon.connections(), 0);
}

#[test]
fn names_are_looked_up_in_etc_passwd_and_etc_group() {
    let (uid, gid) = own_ids();
    let (Some(user), Some(group)) = (name_of("/etc/passwd", uid), name_of("/etc/group", gid))
    else {
        eprintln!("skipped: uid {uid} or gid {gid} has no entry in /etc/passwd or /etc/group");
        return;
    };
    for args in [
        ["--allow-uid", user.as_str()],
        ["--allow-gid", group.as_str()],
    ] {
        let (dir, daemon) = setup("names");
        let mut proxy = Proxy::start(&dir, &daemon, &args);
        assert_eq!(
            proxy.get("/_ping").status,
            200,
            "{args:?}; log:\n{}",
            proxy.logs()
        );
        assert_eq!(proxy.terminate().code(), Some(0));
    }
}

fn line_with<'a>(logs: &'a str, needle: &str) -> &'a str {
    logs.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in the log:\n{logs}"))
}

/// The `message` of a Docker-style JSON error body, unescaped enough for
/// these messages (quotes and backslashes).
fn json_message(body: &str) -> Option<String> {
    let start = body.find("\"message\"")? + "\"message\"".len();
    let rest = body[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

#[test]
fn json_message_is_read_from_an_error_body() {
    assert_eq!(
        json_message("{\"message\":\"a \\\"b\\\" c\"}\n").as_deref(),
        Some("a \"b\" c")
    );
    assert_eq!(json_message("{}"), None);
}

// ---------------------------------------------------------------------------
// Harness.

fn setup(tag: &str) -> (TempDir, FakeDaemon) {
    let dir = TempDir::new(tag);
    let daemon = FakeDaemon::start(&dir);
    (dir, daemon)
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
            std::env::temp_dir().join(format!("df-peer-{tag}-{}-{}", std::process::id(), unique()));
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

/// What the fake daemon answers.
const BODY: &str = "{\"server\":\"fake-dockerd\"}";

/// A stand-in for dockerd: answers every request head with 200 and a small
/// JSON body; counts connections and records request lines.
struct FakeDaemon {
    path: PathBuf,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(dir: &TempDir) -> FakeDaemon {
        let path = dir.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, requests, stop) = (
                Arc::clone(&connections),
                Arc::clone(&requests),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        connections.fetch_add(1, Ordering::AcqRel);
                        let requests = Arc::clone(&requests);
                        thread::spawn(move || answer(stream, &requests));
                    }
                }
            })
        };
        FakeDaemon {
            path,
            connections,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
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

fn answer(mut stream: UnixStream, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let line = head.lines().next().unwrap_or_default().to_owned();
            let body = if line.starts_with("HEAD ") { "" } else { BODY };
            requests.lock().unwrap().push(line);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The real binary in front of a fake daemon, with `RUST_LOG=debug` and
/// its log in a file; killed on drop if still running.
struct Proxy {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proxy {
    fn start(dir: &TempDir, daemon: &FakeDaemon, extra: &[&str]) -> Proxy {
        let socket = dir.join("safe.sock");
        let log = dir.join("proxy.log");
        let child = Command::new(BINARY)
            .arg("--listen")
            .arg(&socket)
            .arg("--upstream")
            .arg(daemon.path())
            .args(extra)
            .env("RUST_LOG", "debug")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn docker-filter");
        let mut proxy = Proxy {
            child,
            socket,
            log,
            status: None,
        };
        let ready = wait_until(|| {
            proxy.logs().contains("listening on") || proxy.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            ready && proxy.child.try_wait().unwrap().is_none(),
            "docker-filter did not start; log:\n{}",
            proxy.logs()
        );
        proxy
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path)
    }

    /// One request on a new connection, read until the proxy closes it.
    fn request(&self, method: &str, path: &str) -> Response {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still running {DEADLINE:?} after SIGTERM; log:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
