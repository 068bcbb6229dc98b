//! The command line: usage errors, `--version`, the `check` and
//! `healthcheck` subcommands, and compatibility with the original project's
//! whitelist (read from ../shared/seed/url-whitelist.lst beside the checkout).

mod common;

use common::{run, seed_whitelist, FakeDaemon, Proxy, TempDir};

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = TempDir::new("cli");
    let listen = dir.join("safe.sock").display().to_string();
    let cases: &[&[&str]] = &[
        &["--no-such-flag"],
        &["--max-connections", "abc"],
        &["--max-connections=abc"],
        &["--max-connections", "-1"],
        &["--header-timeout", "soon"],
        &["--idle-timeout", ""],
        &["--shutdown-timeout", "1.5.2"],
        &["--socket-mode", "999"],
        &["--socket-mode", "rw"],
        &["--listen"],
        &["--listen", &listen, "extra-positional"],
        &["check", "GET"],
        &["check", "--no-such-flag"],
        &["healthcheck", "--no-such-flag"],
    ];
    let mut failures = Vec::new();
    for args in cases {
        let out = run(args);
        let lines = out.stderr.trim_end().lines().count();
        if out.code() != Some(2) || lines != 1 {
            failures.push(format!(
                "{args:?}: exit {:?}, {lines} stderr lines:\n{}",
                out.code(),
                out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!dir.join("safe.sock").exists());
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&["--version"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        out.stdout
    );
}

#[test]
fn help_lists_the_options() {
    let out = run(&["--help"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for flag in [
        "--listen",
        "--upstream",
        "--whitelist",
        "--socket-mode",
        "--socket-group",
        "--max-connections",
        "--header-timeout",
        "--idle-timeout",
        "--shutdown-timeout",
        "check",
        "healthcheck",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help does not mention {flag}:\n{}",
            out.stdout
        );
    }
}

/// Splits `FILE:LINE: REST` into its parts.
fn located(line: &str) -> Option<(&str, usize, &str)> {
    let mut parts = line.splitn(3, ':');
    let (file, number, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = rest.strip_prefix(' ')?;
    let number = number.parse().ok()?;
    (!file.is_empty() && !rest.is_empty()).then_some((file, number, rest))
}

/// Whether `line` reads `FILE:LINE: REGEX`. The proxy may also print
/// `FILE:LINE: warning: ...` about a rule; that is not a rule line.
fn is_rule_line(line: &str) -> bool {
    located(line).is_some_and(|(_, _, rest)| !rest.starts_with("warning:"))
}

/// Whether `line` is the verdict for exactly `method path`: the verdict
/// word, the request, then a space or a colon before the rule or reason.
fn is_verdict(line: &str, verdict: &str, method: &str, path: &str) -> bool {
    line.strip_prefix(&format!("{verdict} {method} {path}"))
        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with(':'))
}

/// The rules of a whitelist file: (line number, text).
fn rules_of(path: &str) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect()
}

/// Checks that `check` printed exactly the rules of `file`, each as
/// `FILE:LINE: REGEX`, then a summary line.
fn assert_lists_rules(stdout: &str, file: &str) {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let (summary, body) = lines.split_last().expect("no output");
    assert!(located(summary).is_none(), "no summary line:\n{stdout}");
    assert!(
        body.iter().all(|l| located(l).is_some()),
        "not all FILE:LINE: ...:\n{stdout}"
    );
    let listed: Vec<(usize, String)> = body
        .iter()
        .filter(|l| is_rule_line(l))
        .filter_map(|l| located(l))
        .map(|(_, n, rule)| (n, rule.to_owned()))
        .collect();
    assert_eq!(listed, rules_of(file), "{stdout}");
}

#[test]
fn check_without_requests_lists_the_builtin_rules() {
    let out = run(&["check"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_lists_rules(
        &out.stdout,
        concat!(env!("CARGO_MANIFEST_DIR"), "/whitelist.lst"),
    );
}

#[test]
fn check_allows_a_monitoring_read() {
    let out = run(&["check", "GET", "/v1.41/info"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let line = out.stdout.lines().next().unwrap_or("");
    assert!(
        is_verdict(line, "allow", "GET", "/v1.41/info"),
        "{}",
        out.stdout
    );
    assert!(line.contains(':'), "no FILE:LINE of the rule: {line}");
}

#[test]
fn check_with_one_denied_request_exits_1_and_says_which() {
    let out = run(&["check", "POST", "/containers/create", "GET", "/info"]);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| is_verdict(l, "deny", "POST", "/containers/create")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| is_verdict(l, "allow", "GET", "/info")),
        "{}",
        out.stdout
    );
}

#[test]
fn check_denies_what_the_proxy_denies() {
    let cases = [
        ("GET", "/containers/x/top?ps_args=aux"),
        ("GET", "/v1.41/containers/x/export"),
        ("GET", "/v1.41/containers/x/%65xport"),
        ("HEAD", "/v1.41/containers/x/archive"),
        ("get", "/v1.41/info"),
        ("DELETE", "/v1.41/containers/x"),
    ];
    for (method, path) in cases {
        let out = run(&["check", method, path]);
        assert_eq!(
            out.code(),
            Some(1),
            "{method} {path}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(
            is_verdict(&out.stdout, "deny", method, path),
            "{method} {path}: {}",
            out.stdout
        );
    }
}

#[test]
fn check_reports_a_bad_whitelist_with_file_and_line() {
    let dir = TempDir::new("wl");
    let list = dir.write("bad.lst", "^/_ping$\n# ok so far\n^/info[$\n");
    let out = run(&["check", "--whitelist", &list.display().to_string()]);
    assert_eq!(out.code(), Some(2), "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("bad.lst:3:"),
        "does not say bad.lst:3: ...\n{all}"
    );
}

/// The line number of `rule` in the seed list.
fn seed_line(seed: &str, rule: &str) -> usize {
    let text = std::fs::read_to_string(seed).unwrap();
    text.lines()
        .position(|l| l == rule)
        .expect("rule in the seed list")
        + 1
}

#[test]
fn seed_whitelist_from_the_original_project_loads_unchanged() {
    let Some(seed) = seed_whitelist() else { return };
    let out = run(&["check", "--whitelist", &seed]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert_lists_rules(&out.stdout, &seed);
    let files_named = out
        .stdout
        .lines()
        .filter_map(located)
        .all(|(file, _, _)| file.ends_with("url-whitelist.lst"));
    assert!(
        files_named,
        "rule lines do not name the file:\n{}",
        out.stdout
    );
}

#[test]
fn seed_whitelist_decides_as_the_original_did() {
    let Some(seed) = seed_whitelist() else { return };
    let allowed = [
        ("/v1.41/info", r"^\/v[0-9.]+\/info$"),
        ("/info", r"^\/info$"),
        (
            "/v1.41/containers/4fa6e0f0c678/json",
            r"^\/v[0-9.]+\/containers\/[0-9a-z]+\/json$",
        ),
        (
            "/v1.41/images/redis:7/json",
            r"^\/v[0-9.]+\/images\/[^\/]+\/json$",
        ),
        ("/v1.41/system/df", r"^\/v[0-9.]+\/system/df$"),
    ];
    for (path, rule) in allowed {
        let out = run(&["check", "--whitelist", &seed, "GET", path]);
        assert_eq!(
            out.code(),
            Some(0),
            "GET {path}: {}{}",
            out.stdout,
            out.stderr
        );
        let want = format!("url-whitelist.lst:{}", seed_line(&seed, rule));
        assert!(
            is_verdict(&out.stdout, "allow", "GET", path),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&want),
            "GET {path}: expected rule {want}: {}",
            out.stdout
        );
    }
    let denied = [
        // The list has no unprefixed container routes.
        "/containers/json",
        // Container names with `-` are outside [0-9a-z]+.
        "/v1.41/containers/my-app/json",
        "/v1.41/containers/abc/export",
        "/v1.41/images/docker.io/library/redis:7/json",
    ];
    for path in denied {
        let out = run(&["check", "--whitelist", &seed, "GET", path]);
        assert_eq!(
            out.code(),
            Some(1),
            "GET {path}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(
            is_verdict(&out.stdout, "deny", "GET", path),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn proxy_serves_with_the_seed_whitelist() {
    let Some(seed) = seed_whitelist() else { return };
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--whitelist", &seed]);
    let failures = common::check_forwarded(
        &proxy,
        &[("/v1.41/info", "/v1.41/info"), ("/info", "/info")],
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let cases = vec![common::Denied::new(
        "no prefix",
        common::get("/containers/json"),
        &[403],
        &["GET"],
    )];
    let failures = common::check_denials(&proxy, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn equals_form_flags_work() {
    let daemon = FakeDaemon::start();
    let dir = TempDir::new("prx");
    let socket = dir.join("safe.sock");
    let args = vec![
        format!("--listen={}", socket.display()),
        format!("--upstream={}", daemon.path().display()),
        "--max-connections=8".to_owned(),
        "--idle-timeout=30".to_owned(),
    ];
    let proxy = Proxy::spawn(dir, &socket, &args);
    assert!(
        common::wait_until(common::DEADLINE, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "not listening with --flag=value arguments; log:\n{}",
        proxy.logs()
    );
    let mut client = proxy.connect();
    client.send(&common::get("/_ping"));
    assert_eq!(client.read_response().status, 200);
}

#[test]
fn healthcheck_reports_the_daemon_through_the_proxy() {
    let mut daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let listen = proxy.socket().display().to_string();

    let up = run(&["healthcheck", "--listen", &listen]);
    assert_eq!(up.code(), Some(0), "{}{}", up.stdout, up.stderr);
    assert!(
        daemon
            .requests()
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains("/_ping")),
        "{:?}",
        daemon.requests()
    );

    daemon.stop();
    let down = run(&["healthcheck", "--listen", &listen]);
    assert_eq!(down.code(), Some(1), "{}{}", down.stdout, down.stderr);
    assert!(!down.stderr.trim().is_empty(), "no message on stderr");
}

#[test]
fn healthcheck_fails_unless_the_ping_answer_is_200() {
    let daemon = FakeDaemon::start();
    daemon.respond(|_| {
        common::Reply::Raw(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
              Content-Length: 20\r\n\r\n{\"message\":\"broken\"}"
                .to_vec(),
        )
    });
    let proxy = Proxy::start(&daemon, &[]);
    let out = run(&[
        "healthcheck",
        "--listen",
        &proxy.socket().display().to_string(),
    ]);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.trim().is_empty(), "no message on stderr");
    assert_eq!(daemon.requests().len(), 1, "{:?}", daemon.requests());
}

#[test]
fn healthcheck_without_a_proxy_exits_1() {
    let dir = TempDir::new("hc");
    let out = run(&[
        "healthcheck",
        "--listen",
        &dir.join("none.sock").display().to_string(),
    ]);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.trim().is_empty(), "no message on stderr");
}
