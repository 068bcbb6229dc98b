//! The decision log lines: stable `key=value` text that a log pipeline can
//! parse, denials at warn and allowed requests at debug.

mod common;

use common::{get, request, FakeDaemon, Proxy, TempDir};

/// The `key=value` fields of a log line from the first `deny ` or `allow `
/// on; quoted values keep their quotes off and their escapes as written.
fn fields(line: &str, verdict: &str) -> Option<Vec<(String, String)>> {
    let start = line.find(&format!("{verdict} conn="))? + verdict.len() + 1;
    let mut rest = &line[start..];
    let mut out = Vec::new();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().to_owned();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end?;
            (quoted[..end].to_owned(), &quoted[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start();
    }
    Some(out)
}

/// The first log line with `verdict` whose fields include all of `want`.
fn find_decision<'a>(
    logs: &'a str,
    verdict: &str,
    want: &[(&str, &str)],
) -> Option<(&'a str, Vec<(String, String)>)> {
    logs.lines().find_map(|line| {
        let f = fields(line, verdict)?;
        let has = |k: &str, v: &str| f.iter().any(|(fk, fv)| fk == k && fv == v);
        want.iter().all(|(k, v)| has(k, v)).then_some((line, f))
    })
}

fn value<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn each_denial_is_logged_with_method_path_status_and_reason() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let mut client = proxy.connect();
    client.send(&request("POST", "/v1.41/containers/create", ""));
    assert_eq!(client.read_response().status, 403);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/containers/abc/export"));
    assert_eq!(client.read_response().status, 403);

    for (method, path) in [
        ("POST", "/v1.41/containers/create"),
        ("GET", "/v1.41/containers/abc/export"),
    ] {
        let want = [("method", method), ("path", path), ("status", "403")];
        let found = common::wait_until(common::DEADLINE, || {
            find_decision(&proxy.logs(), "deny", &want).is_some()
        });
        assert!(found, "no deny line with {want:?}:\n{}", proxy.logs());
        let logs = proxy.logs();
        let (line, f) = find_decision(&logs, "deny", &want).unwrap();
        assert!(
            value(&f, "conn").is_some_and(|c| c.parse::<u64>().is_ok()),
            "{line}"
        );
        assert!(value(&f, "reason").is_some_and(|r| !r.is_empty()), "{line}");
        assert!(
            line.to_ascii_uppercase().contains("WARN"),
            "denial not at warn: {line}"
        );
    }
}

#[test]
fn each_allowed_request_is_logged_with_the_rule_that_allowed_it() {
    let dir = TempDir::new("wl");
    let list = dir.write("custom.lst", "# comment\n^/_ping$\n^/v1.41/info$\n");
    let daemon = FakeDaemon::start();
    let list_arg = list.display().to_string();
    let proxy = Proxy::start(&daemon, &["--whitelist", &list_arg]);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/info"));
    assert_eq!(client.read_response().status, 200);

    let want = [("method", "GET"), ("path", "/v1.41/info")];
    let found = common::wait_until(common::DEADLINE, || {
        find_decision(&proxy.logs(), "allow", &want).is_some()
    });
    assert!(found, "no allow line with {want:?}:\n{}", proxy.logs());
    let logs = proxy.logs();
    let (line, f) = find_decision(&logs, "allow", &want).unwrap();
    assert!(
        value(&f, "conn").is_some_and(|c| c.parse::<u64>().is_ok()),
        "{line}"
    );
    assert!(
        value(&f, "rule").is_some_and(|r| r.ends_with("custom.lst:3")),
        "rule is not custom.lst:3: {line}"
    );
    assert!(
        line.to_ascii_uppercase().contains("DEBUG"),
        "allow line not at debug: {line}"
    );
}

#[test]
fn start_line_names_the_socket() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let socket = proxy.socket().display().to_string();
    let found = common::wait_until(common::DEADLINE, || {
        proxy
            .logs()
            .lines()
            .any(|l| l.contains("listening on") && l.contains(&socket))
    });
    assert!(
        found,
        "no \"listening on {socket}\" line in the log:\n{}",
        proxy.logs()
    );
}

#[test]
fn default_log_level_shows_denials_but_not_each_allowed_request() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start_default_log(&daemon);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/info"));
    assert_eq!(client.read_response().status, 200);
    let mut client = proxy.connect();
    client.send(&get("/v1.41/containers/abc/export"));
    assert_eq!(client.read_response().status, 403);

    let denied = [("method", "GET"), ("path", "/v1.41/containers/abc/export")];
    let found = common::wait_until(common::DEADLINE, || {
        find_decision(&proxy.logs(), "deny", &denied).is_some()
    });
    assert!(
        found,
        "denial not logged at the default level:\n{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert!(logs.contains("listening on"), "{logs}");
    assert!(
        !logs.contains("allow conn="),
        "allowed requests logged at the default level:\n{logs}"
    );
}
