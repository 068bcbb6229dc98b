//! The whitelist (POLICY.md rule 6): the default list forwards the reads
//! monitoring needs and nothing dangerous, rules match the whole path, HEAD
//! goes where GET goes, and no list can let a write method through.

mod common;

use common::{
    assert_all_denied, check_denials, check_forwarded, get, request, Denied, FakeDaemon, Proxy,
    TempDir, POLICY_ARGS,
};

/// Paths the default whitelist allows, each tried with and without a prefix.
const ALLOWED_READS: &[&str] = &[
    "/_ping",
    "/version",
    "/info",
    "/containers/json",
    "/containers/json?all=1&size=0",
    "/containers/4fa6e0f0c678/json",
    "/containers/my-app_1.web/json",
    "/containers/abc/logs?stdout=1&stderr=1&tail=10",
    "/containers/abc/stats?stream=false",
    "/containers/abc/top",
    "/containers/abc/top?foo=bar",
    "/images/json",
    "/images/sha256:0123456789abcdef/json",
    "/images/redis:7/json",
    "/images/docker.io/library/redis:7/json",
    "/images/redis/history",
    "/networks",
    "/networks/bridge",
    "/volumes",
    "/volumes/my-volume",
];

#[test]
fn default_whitelist_forwards_the_monitoring_reads() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    let mut cases = Vec::new();
    for path in ALLOWED_READS {
        for prefix in ["", "/v1.41", "/v1.24"] {
            let target = format!("{prefix}{path}");
            cases.push((target.clone(), target));
        }
    }
    let borrowed: Vec<(&str, &str)> = cases
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let failures = check_forwarded(&proxy, &borrowed);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn events_stream_is_on_the_default_whitelist() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    for target in ["/events", "/v1.41/events?since=0"] {
        let mut client = proxy.connect();
        client.send(&get(target));
        assert!(
            client.read_until(b"first-event", common::READ_TIMEOUT),
            "GET {target}: got {}",
            common::show(client.buffered())
        );
    }
}

/// Dangerous GET endpoints from POLICY.md, without the version prefix.
const DANGEROUS: &[&str] = &[
    "/containers/abc/archive?path=/etc/shadow",
    "/containers/abc/export",
    "/images/get?names=redis",
    "/images/redis/get",
    "/images/redis:7/get",
    "/images/x/json/get",
    "/images/docker.io/library/redis:7/get",
    "/containers/abc/attach/ws",
    "/containers/abc/attach",
    "/containers/abc/changes",
    "/swarm",
    "/swarm/unlockkey",
    "/secrets",
    "/secrets/abc",
    "/configs",
    "/configs/abc",
    "/debug/pprof/",
    "/debug/pprof/cmdline",
    "/debug/vars",
    "/exec/abc/json",
    "/system/df",
    "/images/search?term=x",
    "/distribution/redis/json",
    "/distribution/docker.io/library/redis:7/json",
    "/plugins/privileges?remote=x",
    "/plugins",
    "/session",
    "/grpc",
    "/containers/abc",
    "/",
    "/v1.41",
];

#[test]
fn dangerous_endpoints_are_denied_and_never_reach_the_daemon() {
    let mut cases = Vec::new();
    for path in DANGEROUS {
        for prefix in ["", "/v1.41"] {
            for method in ["GET", "HEAD"] {
                // A trailing slash (`/debug/pprof/`, `/v1.41/`) is an empty
                // segment, a 400 before it is a 403; the contract does not
                // say whether the root `/` counts as one.
                let target = format!("{prefix}{path}");
                let statuses: &'static [u16] = if target.ends_with('/') {
                    &[400, 403]
                } else {
                    &[403]
                };
                cases.push(Denied::new(
                    "dangerous endpoint",
                    request(method, &target, ""),
                    statuses,
                    &[method],
                ));
            }
        }
    }
    assert_all_denied(&cases, POLICY_ARGS);
}

#[test]
fn dangerous_endpoint_denial_names_the_path() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    let cases = vec![Denied::new(
        "export",
        get("/v1.41/containers/abc/export"),
        &[403],
        &["GET", "/v1.41/containers/abc/export"],
    )];
    let failures = check_denials(&proxy, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn top_with_ps_args_is_denied() {
    let cases: Vec<Denied> = [
        "/containers/abc/top?ps_args=aux",
        "/v1.41/containers/abc/top?ps_args=aux",
        "/v1.41/containers/abc/top?ps_args=",
        "/v1.41/containers/abc/top?ps_args",
        "/v1.41/containers/abc/top?a=1&ps_args=-ef",
        // dockerd decodes query keys: these are ps_args too.
        "/v1.41/containers/abc/top?%70s_args=aux",
        "/v1.41/containers/abc/top?ps%5Fargs=aux",
    ]
    .into_iter()
    .map(|t| Denied::new("ps_args", get(t), &[403], &["GET"]))
    .collect();
    assert_all_denied(&cases, POLICY_ARGS);
}

#[test]
fn head_is_allowed_exactly_where_get_is() {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, POLICY_ARGS);
    for target in [
        "/_ping",
        "/v1.41/_ping",
        "/v1.41/containers/abc/json",
        "/images/redis:7/json",
    ] {
        let mut client = proxy.connect();
        client.send(&request("HEAD", target, ""));
        let resp = client.read_head_response();
        assert_eq!(
            resp.status,
            200,
            "HEAD {target}: {}",
            common::show(&resp.raw)
        );
        assert_eq!(
            resp.header("x-seen"),
            Some(format!("HEAD {target} HTTP/1.1").as_str())
        );
    }
    let cases = vec![
        Denied::new(
            "HEAD archive",
            request("HEAD", "/v1.41/containers/abc/archive?path=/", ""),
            &[403],
            &["HEAD"],
        ),
        Denied::new(
            "HEAD export",
            request("HEAD", "/containers/abc/export", ""),
            &[403],
            &["HEAD"],
        ),
    ];
    let before = daemon.requests().len();
    let failures = check_denials(&proxy, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(daemon.requests().len(), before, "{:?}", daemon.requests());
}

// --- Rules 1 and 6 with a custom whitelist -----------------------------------

#[test]
fn rules_match_the_whole_path_whether_or_not_anchored() {
    let dir = TempDir::new("wl");
    let list = dir.write(
        "anchors.lst",
        "# test list\n/_ping\n^/info\n/version$\n/a|/b\n",
    );
    let daemon = FakeDaemon::start();
    let list_arg = list.display().to_string();
    let proxy = Proxy::start(&daemon, &["--whitelist", &list_arg]);

    let allowed = [
        ("/_ping", "/_ping"),
        ("/info", "/info"),
        ("/version", "/version"),
        ("/a", "/a"),
        ("/b", "/b"),
    ];
    let failures = check_forwarded(&proxy, &allowed);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let cases: Vec<Denied> = [
        "/_pingx",
        "/x/_ping",
        "/v1.41/_ping",
        "/infox",
        "/info/containers/abc/export",
        "/xversion",
        "/containers/abc/export/version",
        "/a/containers/abc/export",
        "/containers/abc/export/b",
    ]
    .into_iter()
    .map(|t| Denied::new("unanchored rule", get(t), &[403], &["GET"]))
    .collect();
    let before = daemon.requests().len();
    let failures = check_denials(&proxy, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(daemon.requests().len(), before, "{:?}", daemon.requests());
}

#[test]
fn no_whitelist_can_allow_a_write_method() {
    let dir = TempDir::new("wl");
    let list = dir.write("all.lst", ".*\n^/.*$\n");
    let daemon = FakeDaemon::start();
    let list_arg = list.display().to_string();
    let proxy = Proxy::start(&daemon, &["--whitelist", &list_arg]);

    let failures = check_forwarded(&proxy, &[("/anything/at/all", "/anything/at/all")]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let cases: Vec<Denied> = ["POST", "PUT", "DELETE", "PATCH", "get"]
        .into_iter()
        .map(|m| {
            Denied::new(
                "write method",
                request(m, "/v1.41/containers/create", ""),
                &[403],
                &[],
            )
        })
        .collect();
    let failures = check_denials(&proxy, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        daemon.requests(),
        vec!["GET /anything/at/all HTTP/1.1".to_owned()]
    );
}
