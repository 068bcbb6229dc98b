//! One canonical path (POLICY.md rule 5): encoded, non-canonical and
//! non-origin-form targets are refused, and what the daemon routes always
//! decodes to exactly the path the proxy checked.

mod common;

use common::{
    assert_all_denied, get, seed_whitelist, Denied, FakeDaemon, Proxy, TempDir, POLICY_ARGS,
};

#[test]
fn encoded_and_non_canonical_paths_are_refused() {
    let path_400 = |name: &str, target: &str| Denied::new(name, get(target), &[400], &["GET"]);
    let cases = vec![
        // %65 is `e`: this is the export endpoint, denied by the whitelist.
        Denied::new(
            "%65xport decodes to export",
            get("/v1.41/containers/x/%65xport"),
            &[403],
            &["GET", "export"],
        ),
        Denied::new(
            "%65xport without prefix",
            get("/containers/x/%65xport"),
            &[403],
            &["GET", "export"],
        ),
        Denied::new(
            "%61rchive decodes to archive",
            get("/v1.41/containers/x/%61rchive?path=/etc/shadow"),
            &[403],
            &["GET", "archive"],
        ),
        path_400("encoded slash %2F", "/v1.41/containers/x%2Fjson"),
        path_400("encoded slash %2f", "/v1.41/containers/x%2fjson"),
        path_400("encoded dot-dot segment", "/v1.41/containers/%2e%2e/json"),
        path_400(
            "upper-case encoded dot-dot",
            "/v1.41/containers/x/%2E%2E/json",
        ),
        path_400("half-encoded dot-dot", "/v1.41/containers/x/.%2e/json"),
        path_400("encoded dot segment", "/v1.41/%2e/info"),
        path_400("dot segment", "/v1.41/./info"),
        path_400("dot-dot segment", "/v1.41/containers/../info"),
        path_400(
            "dot-dot climbing to export",
            "/v1.41/containers/x/json/../export",
        ),
        path_400("trailing dot-dot", "/v1.41/containers/x/.."),
        path_400("empty segment", "/v1.41//info"),
        path_400("leading double slash", "//v1.41/info"),
        path_400("trailing slash", "/v1.41/info/"),
        path_400("raw backslash", "/v1.41/containers/x\\json"),
        path_400("encoded backslash %5C", "/v1.41/containers/x%5Cjson"),
        path_400("encoded backslash %5c", "/v1.41/containers/x%5cjson"),
        path_400("encoded NUL", "/v1.41/info%00"),
        path_400("encoded control byte", "/v1.41/containers/x%01/json"),
        path_400("encoded newline", "/v1.41/containers/x%0a/json"),
        path_400("encoded DEL", "/v1.41/containers/x%7F/json"),
        path_400("fragment", "/v1.41/info#x"),
        path_400("encoded non-ASCII", "/v1.41/containers/caf%C3%A9/json"),
        path_400("bad escape %zz", "/v1.41/containers/%zz/json"),
        path_400("truncated escape %4", "/v1.41/containers/x/json%4"),
        path_400("lone percent", "/v1.41/containers/x%/json"),
        // Raw bytes that httparse itself refuses: the method may be unknown.
        Denied::new(
            "raw control byte",
            b"GET /v1.41/in\x01fo HTTP/1.1\r\nHost: docker\r\n\r\n".to_vec(),
            &[400],
            &[],
        ),
        Denied::new(
            "raw non-ASCII",
            b"GET /v1.41/containers/caf\xc3\xa9/json HTTP/1.1\r\nHost: docker\r\n\r\n".to_vec(),
            &[400],
            &[],
        ),
        Denied::new(
            "absolute-form target",
            get("http://x/containers/json"),
            &[400],
            &[],
        ),
        Denied::new(
            "absolute-form target to a dangerous path",
            get("http://docker/v1.41/containers/abc/archive?path=/"),
            &[400],
            &[],
        ),
        Denied::new("asterisk-form target", get("*"), &[400], &[]),
        Denied::new("query-only target", get("?all=1"), &[400], &[]),
        Denied::new("HTTP/0.9 request line", "GET /_ping\r\n\r\n", &[400], &[]),
    ];
    assert_all_denied(&cases, POLICY_ARGS);
}

#[test]
fn encoded_delimiters_never_change_the_path_the_daemon_routes() {
    // Whatever the proxy decides about these, the daemon must never see a
    // path that decodes to something other than what the proxy checked. An
    // encoded `?` forwarded raw turns an image inspect allowed by the rule
    // `/images/[^/]+/json` into the image export route:
    // `/images/get%3Fnames=alpine&/json` -> `GET /images/get?names=alpine&/json`.
    // The original project's list is one such: its `[^\/]+` admits `?`,
    // `#`, `%` and spaces inside a segment once the path is decoded.
    let dir = TempDir::new("wl");
    let permissive = dir.write("images.lst", "^(/v[0-9.]+)?/images/.+/json$\n");
    let cases = [
        (
            "/v1.41/images/get%3Fnames=alpine&/json",
            "/v1.41/images/get?names=alpine&/json",
        ),
        ("/v1.41/images/x/get%3F/json", "/v1.41/images/x/get?/json"),
        ("/v1.41/images/a%3Fb/json", "/v1.41/images/a?b/json"),
        ("/v1.41/images/a%23b/json", "/v1.41/images/a#b/json"),
        ("/v1.41/images/a%20b/json", "/v1.41/images/a b/json"),
        ("/v1.41/images/a%252Fb/json", "/v1.41/images/a%2Fb/json"),
        ("/v1.41/images/x%252Fget/json", "/v1.41/images/x%2Fget/json"),
        ("/v1.41/images/a%2541/json", "/v1.41/images/a%41/json"),
    ];
    let mut failures = Vec::new();
    let lists = [Some(permissive.display().to_string()), seed_whitelist()];
    for list in lists.into_iter().flatten() {
        let daemon = FakeDaemon::start();
        let proxy = Proxy::start(&daemon, &["--whitelist", &list]);
        for (target, decoded) in cases {
            let before = daemon.seen().len();
            let mut client = proxy.connect();
            client.send(&get(target));
            let resp = client.read_response();
            let after = daemon.seen();
            if resp.status == 200 {
                let Some(seen) = after.get(before) else {
                    failures.push(format!("{list}: {target}: 200 but the daemon saw nothing"));
                    continue;
                };
                // The daemon splits the target at the first `?`, then decodes.
                let forwarded_path = seen.target.split('?').next().unwrap_or("");
                let ok = !seen.target.contains('?')
                    && !seen.target.contains('#')
                    && seen.line.matches(' ').count() == 2
                    && common::percent_decode(forwarded_path).as_deref()
                        == Some(decoded.as_bytes());
                if !ok {
                    failures.push(format!(
                        "{list}: GET {target}: the proxy checked {decoded:?} but the daemon got {:?}",
                        seen.line
                    ));
                }
            } else if let Err(why) = resp.check_error(&[400, 403], &["GET"]) {
                failures.push(format!("{list}: {target}: {why}"));
            } else if after.len() != before {
                failures.push(format!(
                    "{list}: {target}: refused, yet the daemon saw {:?}",
                    after.last()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
