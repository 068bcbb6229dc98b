//! Caller credentials: the uid, gid and pid the kernel reports for each
//! client (`SO_PEERCRED`) appear in the decision lines, and `--allow-uid` /
//! `--allow-gid` serve only the callers they list, refusing the others
//! before anything reaches the daemon.
//!
//! The test process itself is the client, so the expected credentials are
//! its own: the effective ids of `/proc/self/status` and
//! `std::process::id()`.

mod common;

use std::fs;

use common::{
    http, json_message, wait_until, FakeDaemon, Launch, Proxy, Ready, Response, TempDir, DEADLINE,
};

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
    let mut proxy = start(dir, &daemon, &[]);
    assert_eq!(get(&proxy, "/_ping").status, 200);
    assert_eq!(request(&proxy, "POST", "/containers/create").status, 403);
    let fields = credentials();

    assert!(
        wait_until(DEADLINE, || proxy.logs().contains("deny conn=")),
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
    let mut proxy = start(dir, &daemon, &["--allow-uid", &uid.to_string()]);
    let response = get(&proxy, "/_ping");
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
    let mut proxy = start(dir, &daemon, &["--allow-uid", &other.to_string()]);
    for method in ["GET", "HEAD"] {
        let response = request(&proxy, method, "/_ping");
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
            assert_eq!(response.text(), "", "HEAD gets no body");
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
    let mut proxy = start(dir, &daemon, &["--allow-gid", &gid.to_string()]);
    let response = get(&proxy, "/v1.41/info");
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
    let mut proxy = start(
        dir,
        &daemon,
        &[
            "--allow-uid",
            &other_than(uid).to_string(),
            "--allow-gid",
            &gid.to_string(),
        ],
    );
    assert_eq!(get(&proxy, "/_ping").status, 200, "log:\n{}", proxy.logs());
    assert_eq!(proxy.terminate().code(), Some(0));

    let (dir, daemon) = setup("neither");
    let mut proxy = start(
        dir,
        &daemon,
        &[
            "--allow-uid",
            &other_than(uid).to_string(),
            "--allow-gid",
            &other_than(gid).to_string(),
        ],
    );
    assert_eq!(get(&proxy, "/_ping").status, 403, "log:\n{}", proxy.logs());
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
        let mut proxy = start(dir, &daemon, &args);
        assert_eq!(
            get(&proxy, "/_ping").status,
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

#[test]
fn json_message_is_read_from_an_error_body() {
    assert_eq!(
        json_message(b"{\"message\":\"a \\\"b\\\" c\"}\n").as_deref(),
        Some("a \"b\" c")
    );
    assert_eq!(json_message(b"{}"), None);
}

// ---------------------------------------------------------------------------
// Harness.

fn setup(tag: &str) -> (TempDir, FakeDaemon) {
    (TempDir::new(&format!("peer-{tag}")), FakeDaemon::start())
}

/// The real binary in front of `daemon`, listening in `dir`, with
/// `RUST_LOG=debug`; ready once it logs that it listens (a probe
/// connection would be counted, and the tests count connections).
fn start(dir: TempDir, daemon: &FakeDaemon, extra: &[&str]) -> Proxy {
    let socket = dir.join("safe.sock");
    let launch = Launch::listen(&socket, daemon.path(), extra)
        .env("RUST_LOG", "debug")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .ready(Ready::Log("listening on".to_owned()));
    Proxy::launch(dir, &socket, launch)
}

fn get(proxy: &Proxy, path: &str) -> Response {
    http(proxy.socket(), "GET", path)
}

/// One request on a new connection, read until the proxy closes it.
fn request(proxy: &Proxy, method: &str, path: &str) -> Response {
    http(proxy.socket(), method, path)
}
