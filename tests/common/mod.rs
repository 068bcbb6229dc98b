//! Harness shared by the black-box tests in `tests/proxy_*.rs` and the
//! others (metrics, peer credentials, systemd, man page...).
//!
//! It has four parts: [`TempDir`], a private folder per test; [`FakeDaemon`],
//! a stand-in for dockerd on a unix socket that records every byte the proxy
//! sends it and answers with responses the test chooses; [`Proxy`], the real
//! `docker-filter` binary started against a fake daemon; and [`Client`], a
//! minimal HTTP/1.1 client that reads one response at a time the way a Docker
//! client does (status line, headers, then Content-Length, chunked or
//! close-delimited body).
//!
//! Two more serve the fault, hostile-input and load tests: [`audit_daemon`]
//! checks that everything a fake daemon received is heads in the one shape
//! the proxy writes, and [`Usage`] reads a process's threads, descriptors
//! and resident memory from `/proc`.
//!
//! Every wait has a generous deadline: a slow machine makes a test slower,
//! never red. Nothing here is global, so tests run in parallel.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses its own part of the harness"
)]

mod audit;
mod client;
mod daemon;
mod procfs;
mod proxy;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use audit::{audit_daemon, forwarded_head_problem};
pub use client::{http, json_message, request_once, Client, ReadError, Response};
pub use daemon::{default_reply, FakeDaemon, Reply, SeenRequest};
pub use procfs::{settled_usage, wait_back_to, Usage};
pub use proxy::{run, Launch, Proxy, Ready, Run};

/// How long any single wait may take before the test gives up.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How long a read may block before the test reports a hang.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments for the policy tables: a header timeout short enough that a
/// case which wrongly waits for more bytes fails quickly, long enough never
/// to fire on a sound case.
pub const POLICY_ARGS: &[&str] = &["--header-timeout", "5"];

/// The original HAProxy docker-filter's whitelist, which must load
/// unchanged. It is not copied into this project: it is read from the
/// `shared/seed/` folder that sits beside the checkout (as in CI). Returns
/// `None`, after saying so, where that folder is absent; under `CI=true` its
/// absence is a failure.
pub fn seed_whitelist() -> Option<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/seed/url-whitelist.lst"
    );
    if std::path::Path::new(path).is_file() {
        return Some(path.to_owned());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the original whitelist is missing at {path}"
    );
    eprintln!("skipped: the original whitelist is not at {path}");
    None
}

/// The path of `name` on PATH, or `None` after saying that the test (or
/// check) that needs it is skipped; under `CI=true` a missing tool is a
/// failure. `package` is the Debian package that provides it.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {name} is missing: install Debian's {package} package"
        );
        eprintln!("skipped: {name} is not installed (Debian package {package})");
    }
    found
}

/// The path of the binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_docker-filter");

/// Polls `done` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Finds `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Shows bytes as text with anything unprintable escaped, for messages.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Percent-decodes `text` once, the way dockerd decodes a request path.
/// Returns `None` for a malformed escape.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A GET request for `target` with only a Host header.
pub fn get(target: &str) -> Vec<u8> {
    request("GET", target, "")
}

/// A request with the given method and target, a Host header, and
/// `extra` (header lines, each ending in CRLF) after it.
pub fn request(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: docker\r\n{extra}\r\n").into_bytes()
}

/// A fresh folder under the system temp dir, removed on drop.
///
/// Names are short so that socket paths stay well under the 108-byte limit
/// of `sun_path`.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty, uniquely named folder.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("df-{tag}-{}-{n}-{nanos:x}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// One request the proxy must refuse.
pub struct Denied {
    /// What the case is, for the failure message.
    pub name: String,
    /// The exact bytes sent.
    pub raw: Vec<u8>,
    /// The statuses the contract allows for it.
    pub statuses: &'static [u16],
    /// Text the error message must hold (the method, the path...).
    pub mentions: Vec<String>,
}

impl Denied {
    /// A case: its name, the bytes sent, the statuses allowed and the text
    /// the message must hold.
    pub fn new(
        name: impl Into<String>,
        raw: impl Into<Vec<u8>>,
        statuses: &'static [u16],
        mentions: &[&str],
    ) -> Denied {
        Denied {
            name: name.into(),
            raw: raw.into(),
            statuses,
            mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

/// Sends each case on its own connection and checks that it gets an error
/// response of the right shape and then the connection closes. Returns the
/// failures, one line each.
pub fn check_denials(proxy: &Proxy, cases: &[Denied]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let mut client = proxy.connect();
        client.send(&case.raw);
        // An answer to HEAD has the error's headers and no body.
        let head = case.raw.starts_with(b"HEAD ");
        let resp = match client.try_read_response(head, READ_TIMEOUT) {
            Ok(resp) => resp,
            Err(e) => {
                let sent = show(&case.raw);
                failures.push(format!("{}: sent {sent} got no response: {e:?}", case.name));
                continue;
            }
        };
        let mentions: Vec<&str> = case.mentions.iter().map(String::as_str).collect();
        let checked = if head {
            resp.check_error_head(case.statuses)
        } else {
            resp.check_error(case.statuses, &mentions)
        };
        let failure = match (checked, client.wait_closed(Duration::from_secs(10))) {
            (Err(why), _) => format!("sent {}: {why}", show(&case.raw)),
            (Ok(()), Err(got)) => format!("not closed after the error; then got {}", show(&got)),
            (Ok(()), Ok(got)) if !got.is_empty() => {
                format!("bytes after the error response: {}", show(&got))
            }
            (Ok(()), Ok(_)) => continue,
        };
        failures.push(format!("{}: {failure}", case.name));
    }
    failures
}

/// Runs the cases and asserts that all are refused and that the daemon
/// received nothing at all: no connection, no byte.
pub fn assert_all_denied(cases: &[Denied], extra_args: &[&str]) {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, extra_args);
    let failures = check_denials(&proxy, cases);
    // Whatever the proxy forwarded was written before it closed the client;
    // give the daemon's reader a moment to record it.
    thread::sleep(Duration::from_millis(100));
    let received = daemon.received();
    assert!(
        failures.is_empty() && received.is_empty() && daemon.connections() == 0,
        "{} of {} cases failed:\n  {}\ndaemon connections: {}, daemon received: {}",
        failures.len(),
        cases.len(),
        failures.join("\n  "),
        daemon.connections(),
        show(&received)
    );
}

/// Sends a GET for each target on its own connection and checks that it is
/// answered by the daemon and that the daemon saw exactly `expected`.
/// Returns the failures.
pub fn check_forwarded(proxy: &Proxy, cases: &[(&str, &str)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (target, expected) in cases {
        let mut client = proxy.connect();
        client.send(&get(target));
        match client.try_read_response(false, READ_TIMEOUT) {
            Err(e) => failures.push(format!("GET {target}: no response: {e:?}")),
            Ok(resp) => {
                let want = format!("GET {expected} HTTP/1.1");
                if resp.status != 200 || resp.header("x-seen") != Some(want.as_str()) {
                    failures.push(format!(
                        "GET {target}: expected the daemon to see {want:?}, got {} {:?} {}",
                        resp.status_line,
                        resp.header("x-seen"),
                        show(&resp.body)
                    ));
                }
            }
        }
    }
    failures
}
