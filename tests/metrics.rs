//! `--stats-socket`: `GET /metrics` counts exactly what the proxy was sent,
//! the socket is private (mode 0600), and the shutdown line carries the same
//! totals. `tests/e2e/metrics_check.py` parses the same text with the real
//! Prometheus parser (`prometheus_client`), with the Python named by
//! `DOCKER_FILTER_TEST_PYTHON`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{http, request_once, wait_until, FakeDaemon, Launch, Proxy, Ready, TempDir, DEADLINE};

const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/metrics_check.py");

/// The whitelist of these tests; rules are on lines 2 to 5. The backslash
/// in line 3 must be escaped in the rule label.
const WHITELIST: &str = "# metrics test whitelist\n\
^/_ping$\n\
^(/v[0-9]+\\.[0-9]+)?/info$\n\
^/containers/json$\n\
^/version$\n";

/// The requests of the scenario, one connection each, and how each is
/// decided: `Ok(rule line)` or `Err(reason code)`.
const REQUESTS: &[(&str, Result<usize, &str>)] = &[
    ("GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Ok(2)),
    ("HEAD /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Ok(2)),
    ("GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Ok(3)),
    ("GET /info HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Ok(3)),
    ("GET /containers/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Ok(4)),
    ("POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", Err("method")),
    ("DELETE /containers/abc HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Err("method")),
    ("GET /secrets HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Err("not-whitelisted")),
    ("GET /v1.41/containers/abc/../json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", Err("dot-segment")),
    ("GET /_ping HTTP/1.1\r\nHost: docker\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", Err("body")),
];

/// The rule lines of [`WHITELIST`] and their patterns.
fn rules() -> Vec<(usize, &'static str)> {
    WHITELIST
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// A proxy with `--stats-socket`, after the scenario's requests; its
/// folder holds the whitelist, the sockets and the log.
struct Scenario {
    daemon: FakeDaemon,
    proxy: Proxy,
    stats: PathBuf,
}

fn run_scenario(tag: &str) -> Scenario {
    let dir = TempDir::new(&format!("metrics-{tag}"));
    let daemon = FakeDaemon::start();
    let whitelist = dir.write("whitelist.lst", WHITELIST);
    let safe = dir.join("safe.sock");
    let stats = dir.join("metrics.sock");
    let launch = Launch::listen(&safe, daemon.path(), &[])
        .args([
            "--whitelist".as_ref(),
            whitelist.as_os_str(),
            "--stats-socket".as_ref(),
            stats.as_os_str(),
        ])
        .env("RUST_LOG", "debug")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        // Not the safe socket: a probe there would be counted.
        .ready(Ready::Connect(stats.clone()));
    let proxy = Proxy::launch(dir, &safe, launch);

    for (raw, decision) in REQUESTS {
        let response = request_once(&safe, raw.as_bytes());
        let expected = match decision {
            Ok(_) => 200,
            Err("body") => 413,
            Err("dot-segment") => 400,
            Err(_) => 403,
        };
        assert_eq!(
            response.status,
            expected,
            "{raw:?} -> {response:?}; log:\n{}",
            proxy.logs()
        );
    }
    let allowed = REQUESTS.iter().filter(|(_, d)| d.is_ok()).count();
    assert_eq!(daemon.requests().len(), allowed, "{:?}", daemon.requests());
    // The counters of a connection are final once it is no longer active.
    let connections = REQUESTS.len().to_string();
    assert!(
        wait_until(DEADLINE, || {
            let metrics = scrape(&stats);
            metrics
                .get("docker_filter_connections_active")
                .map(String::as_str)
                == Some("0")
                && metrics.get("docker_filter_connections_accepted_total") == Some(&connections)
        }),
        "connections not all counted and closed; last scrape:\n{}",
        http(&stats, "GET", "/metrics").text()
    );
    Scenario {
        daemon,
        proxy,
        stats,
    }
}

/// The samples the scenario must produce, as `name{labels}` and value.
fn expected_samples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let allowed = REQUESTS.iter().filter(|(_, d)| d.is_ok()).count();
    out.push((
        "docker_filter_requests_total{decision=\"allow\",reason=\"whitelist\"}".to_owned(),
        allowed.to_string(),
    ));
    let mut denied: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, decision) in REQUESTS {
        if let Err(reason) = decision {
            *denied.entry(reason).or_default() += 1;
        }
    }
    for (reason, count) in &denied {
        out.push((
            format!("docker_filter_requests_total{{decision=\"deny\",reason=\"{reason}\"}}"),
            count.to_string(),
        ));
    }
    for (line, pattern) in rules() {
        let hits = REQUESTS.iter().filter(|(_, d)| *d == Ok(line)).count();
        out.push((
            format!(
                "docker_filter_rule_hits_total{{line=\"{line}\",rule=\"{}\"}}",
                pattern.replace('\\', "\\\\")
            ),
            hits.to_string(),
        ));
    }
    out.push((
        "docker_filter_connections_accepted_total".to_owned(),
        REQUESTS.len().to_string(),
    ));
    out.push((
        "docker_filter_connections_active".to_owned(),
        "0".to_owned(),
    ));
    out.push((
        "docker_filter_connections_refused_total{reason=\"limit\"}".to_owned(),
        "0".to_owned(),
    ));
    out.push((
        "docker_filter_upstream_errors_total".to_owned(),
        "0".to_owned(),
    ));
    out.push((
        format!(
            "docker_filter_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        "1".to_owned(),
    ));
    out
}

#[test]
fn metrics_count_what_was_sent_and_match_the_shutdown_line() {
    let Scenario {
        daemon,
        mut proxy,
        stats,
    } = run_scenario("count");

    let meta = fs::symlink_metadata(&stats).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "the stats socket is for its owner only"
    );

    let (metrics, length) = check_counts(&stats, &daemon);
    check_head_and_other_paths(&stats, length);

    let status = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.logs());
    assert!(!stats.exists(), "the stats socket is removed at shutdown");
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find_map(|l| l.split_once(" stopped: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no shutdown line; log:\n{logs}"));
    check_shutdown_line(line, &metrics);
}

/// Scrapes `GET /metrics` and checks every expected sample; returns the
/// samples and the length of the body.
fn check_counts(stats: &Path, daemon: &FakeDaemon) -> (BTreeMap<String, String>, usize) {
    let response = http(stats, "GET", "/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{response:?}"
    );
    let body = response.text();
    let metrics = parse(&body);
    for (sample, value) in expected_samples() {
        assert_eq!(
            metrics.get(&sample),
            Some(&value),
            "{sample}; metrics:\n{body}"
        );
    }
    // Every reason the scenario did not use is at 0.
    let used: Vec<&str> = REQUESTS.iter().filter_map(|(_, d)| d.err()).collect();
    let mut reasons = 0;
    for (sample, value) in &metrics {
        // decision="deny" for refusals, "error" for the daemon's failures.
        let refusal = ["deny", "error"].iter().find_map(|decision| {
            sample
                .strip_prefix(&format!(
                    "docker_filter_requests_total{{decision=\"{decision}\",reason=\""
                ))
                .and_then(|r| r.strip_suffix("\"}"))
        });
        if let Some(reason) = refusal {
            reasons += 1;
            if !used.contains(&reason) {
                assert_eq!(value, "0", "{sample}");
            }
        }
    }
    assert!(reasons >= 20, "only {reasons} deny reasons exported");
    let to_daemon = number(&metrics, TO_DAEMON);
    let to_clients = number(&metrics, TO_CLIENTS);
    assert!(to_daemon > 0 && to_clients > 0, "{body}");
    // The request heads the daemon got are what was counted.
    let heads: usize = daemon.seen().iter().map(|r| r.head.len()).sum();
    assert_eq!(to_daemon, heads as u64, "bytes_total to_daemon");

    // Scraping is not proxy traffic: a second scrape reads the same.
    let again = http(stats, "GET", "/metrics");
    assert_eq!(parse(&again.text()), metrics);
    (metrics, response.body.len())
}

const TO_DAEMON: &str = "docker_filter_bytes_total{direction=\"to_daemon\"}";
const TO_CLIENTS: &str = "docker_filter_bytes_total{direction=\"to_clients\"}";

/// HEAD /metrics has the headers of GET and no body; other paths are 404.
fn check_head_and_other_paths(stats: &Path, length: usize) {
    let head = http(stats, "HEAD", "/metrics");
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.text(), "", "HEAD has no body");
    assert_eq!(
        head.header("content-length"),
        Some(length.to_string().as_str()),
        "{head:?}"
    );
    for path in [
        "/",
        "/metric",
        "/metrics/",
        "/metrics/x",
        "/_ping",
        "/v1.41/info",
    ] {
        let other = http(stats, "GET", path);
        assert_eq!(other.status, 404, "GET {path}: {other:?}");
        let other = http(stats, "HEAD", path);
        assert_eq!(other.status, 404, "HEAD {path}: {other:?}");
    }
    let post = http(stats, "POST", "/metrics");
    assert!((400..500).contains(&post.status), "POST /metrics: {post:?}");
}

/// The totals of the `stopped:` line are those of the last scrape.
fn check_shutdown_line(line: &str, metrics: &BTreeMap<String, String>) {
    let totals: BTreeMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    let allowed = REQUESTS.iter().filter(|(_, d)| d.is_ok()).count();
    let expected = [
        ("connections", REQUESTS.len().to_string()),
        ("refused_at_limit", "0".to_owned()),
        ("allowed", allowed.to_string()),
        ("denied", (REQUESTS.len() - allowed).to_string()),
        ("upstream_errors", "0".to_owned()),
        ("bytes_to_daemon", number(metrics, TO_DAEMON).to_string()),
        ("bytes_to_clients", number(metrics, TO_CLIENTS).to_string()),
    ];
    for (key, value) in &expected {
        assert_eq!(totals.get(key), Some(&value.as_str()), "{key} in {line}");
    }
    let by_reason: BTreeMap<String, usize> = totals
        .get("denied_by_reason")
        .unwrap_or_else(|| panic!("no denied_by_reason in {line}"))
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(reason, n)| (reason.to_owned(), n.parse().unwrap()))
        .collect();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for reason in REQUESTS.iter().filter_map(|(_, d)| d.err()) {
        *sent.entry(reason.to_owned()).or_default() += 1;
    }
    assert_eq!(by_reason, sent, "{line}");
}

#[test]
fn prometheus_client_parses_the_metrics() {
    let Some(python) = python_with_prometheus_client() else {
        return;
    };
    let Scenario {
        daemon: _daemon,
        mut proxy,
        stats,
    } = run_scenario("promclient");
    let body = http(&stats, "GET", "/metrics").text();
    let dir = proxy.dir();
    let metrics_file = dir.join("metrics.txt");
    fs::write(&metrics_file, &body).unwrap();

    let mut json = String::new();
    let _ = write!(
        json,
        "{{\"version\": {},\n \"samples\": [",
        json_string(env!("CARGO_PKG_VERSION"))
    );
    let mut first = true;
    for (sample, value) in expected_samples() {
        let (name, labels) = split_sample(&sample);
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}: {}", json_string(k), json_string(v)))
            .collect();
        let _ = write!(
            json,
            "{}\n  {{\"name\": {}, \"labels\": {{{}}}, \"value\": {value}}}",
            if first { "" } else { "," },
            json_string(name),
            labels.join(", ")
        );
        first = false;
    }
    json.push_str("],\n \"positive\": [\n");
    json.push_str("  {\"name\": \"docker_filter_bytes_total\", \"labels\": {\"direction\": \"to_daemon\"}},\n");
    json.push_str("  {\"name\": \"docker_filter_bytes_total\", \"labels\": {\"direction\": \"to_clients\"}}]}\n");
    let expected_file = dir.join("expected.json");
    fs::write(&expected_file, &json).unwrap();

    let output = Command::new(&python)
        .arg(CHECKER)
        .arg(&metrics_file)
        .arg(&expected_file)
        .stdin(Stdio::null())
        .output()
        .expect("run metrics_check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "metrics_check.py failed ({}):\n{stderr}{stdout}\nmetrics:\n{body}\nexpected:\n{json}",
        output.status
    );
    assert!(stdout.contains("metrics_check: ok"), "{stdout}");
    assert_eq!(proxy.terminate().code(), Some(0), "log:\n{}", proxy.logs());
}

/// The Python of `DOCKER_FILTER_TEST_PYTHON`, if it has prometheus_client.
/// Without the variable, or without the package, the test is skipped,
/// except under `CI=true`.
fn python_with_prometheus_client() -> Option<PathBuf> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let Some(python) = std::env::var_os("DOCKER_FILTER_TEST_PYTHON") else {
        assert!(
            !ci,
            "CI=true but DOCKER_FILTER_TEST_PYTHON is not set (a Python with prometheus_client)"
        );
        eprintln!(
            "skipped: set DOCKER_FILTER_TEST_PYTHON to a Python with prometheus_client to run it"
        );
        return None;
    };
    let probe = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(PathBuf::from(python)),
        other => {
            let python = python.to_string_lossy();
            assert!(
                !ci,
                "CI=true but DOCKER_FILTER_TEST_PYTHON={python} cannot import prometheus_client \
                 ({other:?}): pip install prometheus_client into it"
            );
            eprintln!(
                "skipped: DOCKER_FILTER_TEST_PYTHON={python} has no prometheus_client (pip install prometheus_client)"
            );
            None
        }
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `name{a="x",b="y"}` as the name and unescaped label pairs.
fn split_sample(sample: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = sample.split_once('{') else {
        return (sample, Vec::new());
    };
    let rest = rest.strip_suffix('}').unwrap_or(rest);
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{sample}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name, labels)
}

#[test]
fn sample_labels_are_split_and_unescaped() {
    let (name, labels) = split_sample("m_total{line=\"3\",rule=\"^a\\\\.b\\\"c$\"}");
    assert_eq!(name, "m_total");
    assert_eq!(
        labels,
        vec![
            ("line".to_owned(), "3".to_owned()),
            ("rule".to_owned(), "^a\\.b\"c$".to_owned())
        ]
    );
    assert_eq!(split_sample("plain"), ("plain", Vec::new()));
    assert_eq!(json_string("a\\b\"c\n"), "\"a\\\\b\\\"c\\u000a\"");
}

/// The samples of a Prometheus text body, keyed by `name{labels}` as
/// written.
fn parse(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(metrics: &BTreeMap<String, String>, sample: &str) -> u64 {
    metrics
        .get(sample)
        .unwrap_or_else(|| panic!("no {sample}"))
        .parse()
        .unwrap_or_else(|e| panic!("{sample}: {e}"))
}

fn scrape(stats: &Path) -> BTreeMap<String, String> {
    parse(&http(stats, "GET", "/metrics").text())
}
