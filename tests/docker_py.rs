//! docker-py (the Python Docker SDK) against the proxy, with a real daemon
//! behind it: runs `tests/e2e/docker_py_suite.py` and requires it to pass.
//!
//! Needs `DOCKER_FILTER_TEST_PYTHON` (a Python with the `docker` package,
//! for example a virtualenv's `bin/python`) and `DOCKER_FILTER_TEST_DOCKERD`
//! (the socket of a daemon seeded by `tests/e2e/dockerd.sh`). Without them
//! the test is skipped, except under `CI=true`, where it fails. With
//! `DOCKER_FILTER_TEST_SAFE_SOCKET` it uses an already running proxy
//! instead of starting the binary.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
#[path = "e2e/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{required_env, run, Proxy, TempDir, ENV_DOCKERD, ENV_PYTHON};

/// The suite holds two streams open for 25 s; everything else takes a few
/// seconds.
const SUITE_DEADLINE: Duration = Duration::from_secs(110);

#[test]
fn docker_py_reads_through_the_proxy_and_every_change_is_denied() {
    let Some(python) = required_env(ENV_PYTHON) else {
        return;
    };
    let Some(real_socket) = required_env(ENV_DOCKERD) else {
        return;
    };
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/docker_py_suite.py");

    let tmp = TempDir::new("py");
    let mut proxy = Proxy::for_tests(tmp.path(), &real_socket);
    let out = run(
        Command::new(&python)
            .arg(&suite)
            .arg("--proxy")
            .arg(proxy.socket())
            .arg("--daemon")
            .arg(&real_socket)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONFIG"),
        SUITE_DEADLINE,
    );
    println!("{}", out.stdout);
    eprintln!("{}", out.stderr);

    let terminated = proxy.terminate();
    assert!(
        out.success(),
        "the docker-py suite failed: {}\n--- proxy log\n{}",
        out.describe(),
        proxy.log_text()
    );
    if let Some(status) = terminated {
        assert!(
            status.success(),
            "the proxy exited with {status} on SIGTERM"
        );
    }
}
