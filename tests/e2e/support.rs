//! Shared pieces of the real-engine tests (`tests/docker_cli.rs`,
//! `tests/docker_py.rs`): which daemon and which client to use, a proxy
//! process that is always stopped, commands with a deadline, and a tally of
//! checks that reports every failure at once instead of stopping at the
//! first.
//!
//! The daemon is never started here. `tests/e2e/dockerd.sh start DIR`
//! starts a private one and seeds it with the fixtures named below; the
//! tests find it through `DOCKER_FILTER_TEST_DOCKERD`. Std only, like every
//! test of this crate.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of a real Docker daemon socket, seeded by `tests/e2e/dockerd.sh`.
pub const ENV_DOCKERD: &str = "DOCKER_FILTER_TEST_DOCKERD";
/// A proxy socket that is already being served (by the container image in
/// CI); when set, the tests use it instead of starting the binary.
pub const ENV_SAFE_SOCKET: &str = "DOCKER_FILTER_TEST_SAFE_SOCKET";
/// The Python interpreter of a virtualenv that has `docker` (docker-py).
pub const ENV_PYTHON: &str = "DOCKER_FILTER_TEST_PYTHON";
/// The docker CLI to use instead of the default search.
pub const ENV_DOCKER_CLI: &str = "DOCKER_FILTER_TEST_DOCKER";

/// The fixtures that `tests/e2e/dockerd.sh` puts on the daemon.
pub const CONTAINER: &str = "e2e-web_1";
/// The only image on the test daemon.
pub const IMAGE: &str = "busybox:e2e";
/// A volume on the test daemon, mounted in [`CONTAINER`].
pub const VOLUME: &str = "e2e-data";

/// The text every denial of the proxy starts with, as the docker CLI
/// prints it.
pub const CLI_DENIAL: &str = "Error response from daemon: docker-filter denied";

/// Whether this run is CI, where a missing daemon is a failure, not a skip.
fn in_ci() -> bool {
    env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// The value of a variable the real-engine tests need, or `None` after
/// printing why the test is skipped. In CI a missing variable fails.
pub fn required_env(name: &str) -> Option<String> {
    match env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if in_ci() => panic!(
            "{name} is not set, and CI=true: the real-engine tests must run in CI \
             (.ci/run starts a daemon with tests/e2e/dockerd.sh and sets it)"
        ),
        _ => {
            println!("skipped: set {name} (see README)");
            None
        }
    }
}

/// The docker CLI: `$DOCKER_FILTER_TEST_DOCKER`, else `/usr/local/bin/docker`
/// (the newer CLI on the development machines) when present, else `docker`
/// on `PATH`. `None` when there is none at all.
pub fn docker_cli() -> Option<PathBuf> {
    if let Ok(path) = env::var(ENV_DOCKER_CLI) {
        return Some(PathBuf::from(path));
    }
    let preferred = Path::new("/usr/local/bin/docker");
    if preferred.is_file() {
        return Some(preferred.to_path_buf());
    }
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("docker"))
            .find(|candidate| candidate.is_file())
    })
}

/// `docker --version` of `cli`, for the test output.
pub fn cli_version(cli: &Path) -> String {
    let out = run(Command::new(cli).arg("--version"), Duration::from_secs(10));
    out.stdout.trim().to_string()
}

/// A folder under the system temp dir, removed on drop. Kept short: unix
/// socket paths must fit in 108 bytes.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty folder.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!("df-{label}-{}-{n}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What a finished (or timed out) command printed.
pub struct Output {
    /// `None` when the command was killed at its deadline.
    pub status: Option<ExitStatus>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// Both streams, for matching and for failure messages.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A one-paragraph description for a failure message.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => "killed at its deadline".to_string(),
        };
        format!(
            "{status}\n--- stdout\n{}\n--- stderr\n{}",
            excerpt(&self.stdout),
            excerpt(&self.stderr)
        )
    }
}

/// The first 2,000 bytes of `text` (on a char boundary).
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(2000);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Runs `command` with no stdin, killing it at `deadline`.
pub fn run(command: &mut Command, deadline: Duration) -> Output {
    let mut child = spawn_piped(command);
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };

    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Starts `command` with no stdin and both outputs piped.
fn spawn_piped(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"))
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A long-running command whose output lines arrive on a channel, each with
/// the time it was read. Killed on drop.
pub struct Streaming {
    child: Child,
    /// Lines of standard output as they arrive.
    pub lines: mpsc::Receiver<(Instant, String)>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Streaming {
    /// Starts `command`.
    pub fn start(command: &mut Command) -> Streaming {
        let mut child = spawn_piped(command);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Streaming {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The lines that arrive until `until`.
    pub fn collect_until(&self, until: Instant) -> Vec<(Instant, String)> {
        let mut got = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => return got,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(left);
                    return got;
                }
            }
        }
    }

    /// `None` while the command is still running, else its exit status.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the command and returns what it wrote on stderr.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy socket the tests talk to: a `docker-filter` started here, or
/// one given by [`ENV_SAFE_SOCKET`].
pub struct Proxy {
    socket: PathBuf,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Proxy {
    /// Uses `$DOCKER_FILTER_TEST_SAFE_SOCKET` when set, else starts the
    /// binary with the default whitelist in `dir`, forwarding to `upstream`.
    pub fn for_tests(dir: &Path, upstream: &str) -> Proxy {
        match env::var(ENV_SAFE_SOCKET) {
            Ok(socket) if !socket.is_empty() => {
                println!("using the running proxy at {socket} ({ENV_SAFE_SOCKET})");
                Proxy {
                    socket: PathBuf::from(socket),
                    child: None,
                    log: None,
                }
            }
            _ => Proxy::start(dir, upstream, &[]),
        }
    }

    /// Starts `docker-filter --listen DIR/safe.sock --upstream UPSTREAM`
    /// plus `extra` arguments and waits until it accepts connections.
    pub fn start(dir: &Path, upstream: impl AsRef<OsStr>, extra: &[&str]) -> Proxy {
        let socket = dir.join("safe.sock");
        let log = dir.join("proxy.log");
        let log_file = fs::File::create(&log).expect("create proxy log");
        let child = Command::new(env!("CARGO_BIN_EXE_docker-filter"))
            .arg("--listen")
            .arg(&socket)
            .arg("--upstream")
            .arg(upstream.as_ref())
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start docker-filter");
        let mut proxy = Proxy {
            socket,
            child: Some(child),
            log: Some(log),
        };
        proxy.wait_ready();
        proxy
    }

    /// Ready means: the socket file exists and accepts a connection.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "docker-filter exited at start ({status}):\n{}",
                        self.log_text()
                    );
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "docker-filter did not accept connections on {} within 10 s:\n{}",
                self.socket.display(),
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The safe socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The proxy's log so far (empty for a proxy not started here).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// Whether the proxy logged a denial of `method` on a path containing
    /// `path`. Always true for a proxy not started here, whose log is not
    /// at hand.
    pub fn logged_denial(&self, method: &str, path: &str) -> bool {
        if self.log.is_none() {
            return true;
        }
        self.log_text().lines().any(|line| {
            line.contains("deny conn=")
                && line.contains(&format!("method={method} "))
                && line.contains(path)
        })
    }

    /// Stops a proxy started here with SIGTERM and returns its exit status
    /// (`None` if it had to be killed after 15 s, or was not started here).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.child = None;
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A docker CLI bound to one socket, with a private configuration folder so
/// that the user's contexts and credentials play no part.
pub struct Docker {
    cli: PathBuf,
    host: String,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Docker {
    /// The CLI `cli` talking to `socket`, with its config kept in `dir`.
    pub fn new(cli: &Path, socket: &Path, dir: &Path) -> Docker {
        let config = dir.join("docker-config");
        fs::create_dir_all(&config).expect("create docker config dir");
        Docker {
            cli: cli.to_path_buf(),
            host: format!("unix://{}", socket.display()),
            config,
            env: Vec::new(),
        }
    }

    /// The same CLI with one more environment variable set.
    #[must_use]
    pub fn with_env(mut self, name: &str, value: &str) -> Docker {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The command line `docker ARGS...`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.cli);
        command
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs `docker ARGS...` with a 30 s deadline.
    pub fn run(&self, args: &[&str]) -> Output {
        run(&mut self.command(args), Duration::from_secs(30))
    }

    /// Starts `docker ARGS...` as a stream.
    pub fn stream(&self, args: &[&str]) -> Streaming {
        Streaming::start(&mut self.command(args))
    }

    /// The lines of `docker ARGS...`, sorted; panics if it fails.
    pub fn sorted_lines(&self, args: &[&str]) -> Vec<String> {
        let out = self.run(args);
        assert!(
            out.success(),
            "docker {} on {} failed: {}",
            args.join(" "),
            self.host,
            out.describe()
        );
        let mut lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }
}

/// What is on a daemon, as the tests compare it before and after.
#[derive(Debug, PartialEq, Eq)]
pub struct Inventory {
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Inventory {
    /// Reads the inventory of the daemon `docker` talks to (directly, not
    /// through the proxy).
    pub fn read(docker: &Docker) -> Inventory {
        Inventory {
            containers: docker.sorted_lines(&[
                "ps",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Names}} {{.State}}",
            ]),
            images: docker.sorted_lines(&[
                "images",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ]),
            volumes: docker.sorted_lines(&["volume", "ls", "-q"]),
            networks: docker.sorted_lines(&["network", "ls", "-q", "--no-trunc"]),
        }
    }

    /// Panics unless the seeded fixtures are there.
    pub fn assert_seeded(&self) {
        let seeded = self
            .containers
            .iter()
            .any(|line| line.contains(&format!(" {CONTAINER} running")))
            && self.images.iter().any(|line| line.ends_with(IMAGE))
            && self.volumes.iter().any(|line| line == VOLUME);
        assert!(
            seeded,
            "the daemon in ${ENV_DOCKERD} lacks the fixtures (running container \
             {CONTAINER}, image {IMAGE}, volume {VOLUME}): run \
             `tests/e2e/dockerd.sh seed <socket>` first\n{self:#?}"
        );
    }
}

/// Counts checks and keeps the failures, so that one run shows all of them.
#[derive(Default)]
pub struct Tally {
    suite: String,
    checked: usize,
    failures: Vec<String>,
}

impl Tally {
    /// A tally named after its suite, for the summary line.
    pub fn new(suite: &str) -> Tally {
        Tally {
            suite: suite.to_string(),
            ..Tally::default()
        }
    }

    /// Records one check: `ok`, or a failure described by `detail`.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        self.checked += 1;
        if ok {
            println!("ok    {name}");
        } else {
            let detail = detail();
            println!("FAIL  {name}\n{detail}\n");
            self.failures.push(format!("{name}: {detail}"));
        }
    }

    /// Prints the counts and panics if anything failed.
    pub fn finish(self) {
        let failed = self.failures.len();
        let passed = self.checked - failed;
        println!(
            "{}: {passed} passed, {failed} failed, {} checked",
            self.suite, self.checked
        );
        if failed > 0 {
            let mut report = String::new();
            for failure in &self.failures {
                let first = failure.lines().next().unwrap_or_default();
                let _ = writeln!(report, "  {first}");
            }
            panic!(
                "{}: {failed} of {} checks failed:\n{report}",
                self.suite, self.checked
            );
        }
    }
}
