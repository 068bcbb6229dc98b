//! The real docker CLI against the proxy, with a real daemon behind it.
//!
//! Every read-only command a monitoring agent or a person uses must work
//! through the safe socket, and every command that changes anything or
//! reads files out of a container must fail with the proxy's reason,
//! printed by the CLI as `Error response from daemon: docker-filter denied
//! ...`. Afterwards the daemon must hold exactly what it held before.
//!
//! Needs `DOCKER_FILTER_TEST_DOCKERD`: the socket of a daemon seeded by
//! `tests/e2e/dockerd.sh start DIR` (or `seed SOCKET`). Without it the test
//! is skipped, except under `CI=true`, where it fails. With
//! `DOCKER_FILTER_TEST_SAFE_SOCKET` it uses an already running proxy (the
//! container image, in CI) instead of starting the binary.
//!
//! A second test needs only the CLI: the proxy answers denials itself, so
//! `docker run` must print the 403 reason even when no daemon is there.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
#[path = "e2e/support.rs"]
mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    cli_version, docker_cli, required_env, Docker, Inventory, Proxy, Tally, TempDir, CLI_DENIAL,
    CONTAINER, ENV_DOCKERD, IMAGE, VOLUME,
};

/// A read-only command and a text its output must contain.
struct Allowed {
    args: &'static [&'static str],
    expect: &'static str,
}

/// Read-only commands that must succeed through the proxy.
const ALLOWED: &[Allowed] = &[
    Allowed {
        args: &["version"],
        expect: "Server:",
    },
    Allowed {
        args: &["info"],
        expect: "Server Version",
    },
    Allowed {
        args: &["ps", "-a"],
        expect: CONTAINER,
    },
    Allowed {
        args: &["images"],
        expect: "busybox",
    },
    Allowed {
        args: &["inspect", CONTAINER],
        expect: "E2E_GREETING=hello",
    },
    Allowed {
        args: &["container", "inspect", CONTAINER],
        expect: "E2E_GREETING=hello",
    },
    Allowed {
        args: &["image", "inspect", IMAGE],
        expect: "busybox:e2e",
    },
    // `docker inspect NAME` asks for a container first and moves on to
    // images, networks and volumes only on 404: the proxy must let the
    // daemon answer that, even for names no container can have.
    Allowed {
        args: &["inspect", IMAGE],
        expect: "busybox:e2e",
    },
    Allowed {
        args: &["inspect", VOLUME],
        expect: "\"Driver\": \"local\"",
    },
    Allowed {
        args: &["image", "history", IMAGE],
        expect: "Imported",
    },
    Allowed {
        args: &["logs", "--tail", "5", CONTAINER],
        expect: "tick",
    },
    Allowed {
        args: &["stats", "--no-stream"],
        expect: CONTAINER,
    },
    Allowed {
        args: &["stats", "--no-stream", CONTAINER],
        expect: CONTAINER,
    },
    Allowed {
        args: &["top", CONTAINER],
        expect: "while true",
    },
    Allowed {
        args: &["events", "--since", "30s", "--until", "0s"],
        expect: "",
    },
    Allowed {
        args: &["network", "ls"],
        expect: "none",
    },
    Allowed {
        args: &["network", "inspect", "none"],
        expect: "\"Driver\": \"null\"",
    },
    Allowed {
        args: &["volume", "ls"],
        expect: VOLUME,
    },
    Allowed {
        args: &["volume", "inspect", VOLUME],
        expect: "\"Driver\": \"local\"",
    },
];

/// A command that must be refused by the proxy, and what the reason must
/// name: the method and a piece of the path.
struct Denied {
    args: &'static [&'static str],
    method: &'static str,
    path: &'static str,
    shown: Shown,
}

/// How the CLI shows the proxy's 403.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// `Error response from daemon: docker-filter denied METHOD PATH: ...`.
    Message,
    /// Only the status: for requests that ask to take over the connection
    /// (`attach`), the CLI prints `unable to upgrade to tcp, received 403`
    /// and never reads the body. The proxy's log must then name the request.
    StatusOnly,
}

/// Commands that change the daemon or read files out of it.
const DENIED: &[Denied] = &[
    Denied {
        args: &["run", "--rm", "--network", "none", IMAGE, "true"],
        method: "POST",
        path: "/containers/create",
        shown: Shown::Message,
    },
    Denied {
        args: &["create", "--network", "none", IMAGE, "true"],
        method: "POST",
        path: "/containers/create",
        shown: Shown::Message,
    },
    Denied {
        args: &["rm", "-f", CONTAINER],
        method: "DELETE",
        path: "/containers/e2e-web_1",
        shown: Shown::Message,
    },
    Denied {
        args: &["stop", "-t", "1", CONTAINER],
        method: "POST",
        path: "/containers/e2e-web_1/stop",
        shown: Shown::Message,
    },
    Denied {
        args: &["kill", CONTAINER],
        method: "POST",
        path: "/containers/e2e-web_1/kill",
        shown: Shown::Message,
    },
    Denied {
        args: &["pause", CONTAINER],
        method: "POST",
        path: "/containers/e2e-web_1/pause",
        shown: Shown::Message,
    },
    Denied {
        args: &["rename", CONTAINER, "e2e-renamed"],
        method: "POST",
        path: "/containers/e2e-web_1/rename",
        shown: Shown::Message,
    },
    Denied {
        args: &["exec", CONTAINER, "true"],
        method: "POST",
        path: "/containers/e2e-web_1/exec",
        shown: Shown::Message,
    },
    Denied {
        args: &["cp", "e2e-web_1:/etc/e2e-secret.txt", "{tmp}/copied.txt"],
        method: "GET",
        path: "/containers/e2e-web_1/archive",
        shown: Shown::Message,
    },
    Denied {
        args: &["export", "-o", "{tmp}/export.tar", CONTAINER],
        method: "GET",
        path: "/containers/e2e-web_1/export",
        shown: Shown::Message,
    },
    Denied {
        args: &["save", "-o", "{tmp}/save.tar", IMAGE],
        method: "GET",
        path: "/images/get",
        shown: Shown::Message,
    },
    Denied {
        args: &["diff", CONTAINER],
        method: "GET",
        path: "/containers/e2e-web_1/changes",
        shown: Shown::Message,
    },
    Denied {
        args: &["attach", "--no-stdin", CONTAINER],
        method: "POST",
        path: "/containers/e2e-web_1/attach",
        shown: Shown::StatusOnly,
    },
    Denied {
        args: &["top", CONTAINER, "aux"],
        method: "GET",
        path: "/containers/e2e-web_1/top",
        shown: Shown::Message,
    },
    Denied {
        args: &["volume", "create", "e2e-denied"],
        method: "POST",
        path: "/volumes/create",
        shown: Shown::Message,
    },
    Denied {
        args: &["volume", "rm", VOLUME],
        method: "DELETE",
        path: "/volumes/e2e-data",
        shown: Shown::Message,
    },
    Denied {
        args: &["network", "create", "e2e-denied"],
        method: "POST",
        path: "/networks/create",
        shown: Shown::Message,
    },
    Denied {
        args: &["system", "prune", "-f"],
        method: "POST",
        path: "/prune",
        shown: Shown::Message,
    },
    Denied {
        args: &["system", "df"],
        method: "GET",
        path: "/system/df",
        shown: Shown::Message,
    },
    Denied {
        args: &["image", "rm", IMAGE],
        method: "DELETE",
        path: "/images/busybox:e2e",
        shown: Shown::Message,
    },
    Denied {
        args: &["tag", IMAGE, "e2e-denied:tag"],
        method: "POST",
        path: "/images/busybox:e2e/tag",
        shown: Shown::Message,
    },
    Denied {
        args: &[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:2377",
        ],
        method: "POST",
        path: "/swarm/init",
        shown: Shown::Message,
    },
    Denied {
        args: &["swarm", "join-token", "manager"],
        method: "GET",
        path: "/swarm",
        shown: Shown::Message,
    },
    Denied {
        args: &["secret", "ls"],
        method: "GET",
        path: "/secrets",
        shown: Shown::Message,
    },
];

#[test]
fn docker_cli_reads_through_the_proxy_and_every_change_is_denied() {
    let Some(real_socket) = required_env(ENV_DOCKERD) else {
        return;
    };
    let cli = docker_cli().expect("no docker CLI found (apt-get install docker.io)");
    println!("docker CLI: {} ({})", cli.display(), cli_version(&cli));

    let tmp = TempDir::new("cli");
    let direct = Docker::new(&cli, Path::new(&real_socket), tmp.path());
    let before = Inventory::read(&direct);
    before.assert_seeded();

    let mut proxy = Proxy::for_tests(tmp.path(), &real_socket);
    let docker = Docker::new(&cli, proxy.socket(), tmp.path());
    let mut tally = Tally::new("docker CLI e2e");

    // The two long streams run while the short commands do.
    let streams = thread::scope(|scope| {
        let logs = scope.spawn(|| check_logs_follow(&docker));
        let events = scope.spawn(|| check_events_stay_open(&docker));

        check_allowed(&mut tally, &docker);
        check_denied(&mut tally, &docker, &proxy, tmp.path());

        [
            logs.join().expect("logs -f thread"),
            events.join().expect("events thread"),
        ]
    });
    for (name, result) in streams {
        tally.check(name, result.is_ok(), || result.unwrap_err());
    }

    let after = Inventory::read(&direct);
    tally.check(
        "the daemon holds exactly what it held before",
        before == after,
        || format!("before: {before:#?}\nafter: {after:#?}"),
    );

    if let Some(status) = proxy.terminate() {
        tally.check("the proxy exits 0 on SIGTERM", status.success(), || {
            format!("{status}\n{}", proxy.log_text())
        });
    }
    tally.finish();
}

/// Each read-only command exits 0 and prints what it should.
fn check_allowed(tally: &mut Tally, docker: &Docker) {
    for allowed in ALLOWED {
        let out = docker.run(allowed.args);
        let name = format!("allowed: docker {}", allowed.args.join(" "));
        tally.check(
            &name,
            out.success() && out.stdout.contains(allowed.expect),
            || {
                format!(
                    "expected exit 0 and {:?} in stdout: {}",
                    allowed.expect,
                    out.describe()
                )
            },
        );
    }
}

/// Each changing command fails, and the CLI shows the proxy's reason.
/// `{tmp}` in an argument is the test's scratch folder.
fn check_denied(tally: &mut Tally, docker: &Docker, proxy: &Proxy, tmp: &Path) {
    let tmp = tmp.display().to_string();
    for denied in DENIED {
        let args: Vec<String> = denied
            .args
            .iter()
            .map(|arg| arg.replace("{tmp}", &tmp))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = docker.run(&args);
        let text = out.combined();
        let name = format!("denied:  docker {}", denied.args.join(" "));
        let printed = match denied.shown {
            Shown::Message => text.lines().any(|line| {
                line.contains(CLI_DENIAL)
                    && line.contains(denied.method)
                    && line.contains(denied.path)
            }),
            Shown::StatusOnly => {
                text.contains("received 403") && proxy.logged_denial(denied.method, denied.path)
            }
        };
        tally.check(
            &name,
            out.status.is_some() && !out.success() && printed,
            || {
                format!(
                    "expected a failure with a line holding {CLI_DENIAL:?}, {:?} and {:?}: {}",
                    denied.method,
                    denied.path,
                    out.describe()
                )
            },
        );
    }
}

/// `docker logs -f` keeps delivering new lines: at least three, the last
/// one more than 3 s after the start.
fn check_logs_follow(docker: &Docker) -> (&'static str, Result<(), String>) {
    let name = "stream: docker logs -f keeps delivering lines for 4.5 s";
    let start = Instant::now();
    let mut stream = docker.stream(&["logs", "-f", "--tail", "1", CONTAINER]);
    let lines = stream.collect_until(start + Duration::from_millis(4500));
    let exited = stream.exited();
    let stderr = stream.stop();

    let late = lines
        .iter()
        .filter(|(at, _)| at.duration_since(start) > Duration::from_secs(3))
        .count();
    let result = if exited.is_none() && lines.len() >= 3 && late >= 1 {
        Ok(())
    } else {
        Err(format!(
            "exited: {exited:?}, {} lines, {late} after 3 s: {lines:?}\nstderr: {stderr}",
            lines.len()
        ))
    };
    (name, result)
}

/// `docker events` without bounds stays open and relays the events of the
/// fixture's health check (one every 2 s).
fn check_events_stay_open(docker: &Docker) -> (&'static str, Result<(), String>) {
    let name = "stream: docker events stays open and relays events for 5 s";
    let start = Instant::now();
    let mut stream = docker.stream(&["events"]);
    let lines = stream.collect_until(start + Duration::from_secs(5));
    let exited = stream.exited();
    let stderr = stream.stop();

    let result = if exited.is_none() && !lines.is_empty() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "exited: {exited:?}, {} events: {lines:?}\nstderr: {stderr}",
            lines.len()
        ))
    };
    (name, result)
}

/// Denials come from the proxy itself: with nothing listening upstream,
/// the CLI still prints the 403 reason for each command that changes
/// something.
#[test]
fn cli_prints_the_denial_reason_with_no_daemon_behind_the_proxy() {
    let Some(cli) = docker_cli() else {
        println!("skipped: no docker CLI (apt-get install docker.io)");
        return;
    };
    let tmp = TempDir::new("nod");
    let missing = tmp.path().join("no-such-daemon.sock");
    let proxy = Proxy::start(tmp.path(), &missing, &[]);
    // A fixed API version skips the CLI's version negotiation, which asks
    // the (missing) daemon first.
    let docker =
        Docker::new(&cli, proxy.socket(), tmp.path()).with_env("DOCKER_API_VERSION", "1.41");
    let mut tally = Tally::new("docker CLI without daemon");

    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--rm", "--network", "none", IMAGE, "true"],
            "POST /v1.41/containers/create",
        ),
        (
            &["rm", "-f", CONTAINER],
            "DELETE /v1.41/containers/e2e-web_1",
        ),
        (
            &["stop", CONTAINER],
            "POST /v1.41/containers/e2e-web_1/stop",
        ),
        (&["volume", "create", "x"], "POST /v1.41/volumes/create"),
        (&["network", "create", "x"], "POST /v1.41/networks/create"),
    ];
    for (args, request) in cases {
        let out = docker.run(args);
        let text = out.combined();
        let name = format!("denied without daemon: docker {}", args.join(" "));
        let printed = text
            .lines()
            .any(|line| line.contains(CLI_DENIAL) && line.contains(request));
        tally.check(&name, !out.success() && printed, || {
            format!(
                "expected {CLI_DENIAL:?} and {request:?}: {}",
                out.describe()
            )
        });
    }

    // A read goes to the daemon, which is not there: 502 naming the socket.
    let out = docker.run(&["version"]);
    let missing = missing.display().to_string();
    tally.check(
        "docker version without daemon says the upstream is unreachable",
        !out.success() && out.combined().contains(&missing),
        || format!("expected the upstream path {missing:?}: {}", out.describe()),
    );
    tally.finish();
}
