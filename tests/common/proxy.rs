//! [`Proxy`]: the real `docker-filter` binary, started against a fake
//! daemon with its log captured to a file (or, through [`Launch`], with
//! any arguments, environment and wrapper command), and [`run`] for
//! one-shot command-line runs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{wait_until, Client, FakeDaemon, TempDir, BINARY, DEADLINE};

/// The real `docker-filter` binary, running as a proxy in its own temp dir.
pub struct Proxy {
    dir: TempDir,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proxy {
    /// Starts the proxy in front of `daemon` with `extra` arguments.
    pub fn start(daemon: &FakeDaemon, extra: &[&str]) -> Proxy {
        Proxy::start_upstream(daemon.path(), extra)
    }

    /// Starts the proxy with `--upstream upstream` (which may not exist).
    pub fn start_upstream(upstream: &Path, extra: &[&str]) -> Proxy {
        let dir = TempDir::new("prx");
        let socket = dir.join("safe.sock");
        Proxy::start_in(dir, &socket, upstream, extra)
    }

    /// Starts the proxy listening on `socket`; `dir` holds its log.
    pub fn start_in(dir: TempDir, socket: &Path, upstream: &Path, extra: &[&str]) -> Proxy {
        let mut args: Vec<String> = vec![
            "--listen".into(),
            socket.display().to_string(),
            "--upstream".into(),
            upstream.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut proxy = Proxy::spawn(dir, socket, &args);
        proxy.wait_ready();
        proxy
    }

    /// Starts the proxy in front of `daemon` with `RUST_LOG` unset, so at
    /// the default log level.
    pub fn start_default_log(daemon: &FakeDaemon) -> Proxy {
        let dir = TempDir::new("prx");
        let socket = dir.join("safe.sock");
        let args: Vec<String> = vec![
            "--listen".into(),
            socket.display().to_string(),
            "--upstream".into(),
            daemon.path().display().to_string(),
        ];
        let mut proxy = Proxy::spawn_logging(dir, &socket, &args, None);
        proxy.wait_ready();
        proxy
    }

    /// Spawns the binary with exactly `args` and `RUST_LOG=debug`, without
    /// waiting for readiness.
    pub fn spawn(dir: TempDir, socket: &Path, args: &[String]) -> Proxy {
        Proxy::spawn_logging(dir, socket, args, Some("debug"))
    }

    fn spawn_logging(
        dir: TempDir,
        socket: &Path,
        args: &[String],
        rust_log: Option<&str>,
    ) -> Proxy {
        let log = dir.join("proxy.log");
        let stderr = fs::File::create(&log).expect("create log file");
        let stdout = fs::File::create(dir.join("proxy.out")).expect("create stdout file");
        let mut command = Command::new(BINARY);
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn docker-filter");
        Proxy {
            dir,
            socket: socket.to_owned(),
            log,
            child: Some(child),
        }
    }

    /// Starts the proxy through `wrapper`, a command that runs the binary
    /// given as its last argument (such as `setpriv --reuid=65534 ...`,
    /// which executes it in place, so that [`Proxy::pid`] is the proxy's),
    /// listening on `socket` in `dir`, with `RUST_LOG=debug`, and waits
    /// until it accepts connections.
    pub fn start_wrapped(
        wrapper: &[&str],
        dir: TempDir,
        socket: &Path,
        upstream: &Path,
        extra: &[&str],
    ) -> Proxy {
        let (program, wrapper_args) = wrapper.split_first().expect("a wrapper command");
        let log = dir.join("proxy.log");
        let stderr = fs::File::create(&log).expect("create log file");
        let stdout = fs::File::create(dir.join("proxy.out")).expect("create stdout file");
        let child = Command::new(program)
            .args(wrapper_args)
            .arg(BINARY)
            .arg("--listen")
            .arg(socket)
            .arg("--upstream")
            .arg(upstream)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let mut proxy = Proxy {
            dir,
            socket: socket.to_owned(),
            log,
            child: Some(child),
        };
        proxy.wait_ready();
        proxy
    }

    /// Starts what `launch` describes, with its log in `dir`, and waits
    /// until it is ready as [`Launch::ready`] says. `socket` is the safe
    /// socket that [`Proxy::connect`] uses.
    pub fn launch(dir: TempDir, socket: &Path, launch: Launch) -> Proxy {
        let Launch {
            wrapper,
            args,
            env,
            ready,
        } = launch;
        let log = dir.join("proxy.log");
        let stderr = fs::File::create(&log).expect("create log file");
        let stdout = fs::File::create(dir.join("proxy.out")).expect("create stdout file");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(BINARY);
                command
            }
            None => Command::new(BINARY),
        };
        command.args(&args);
        for (key, value) in &env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
        let mut proxy = Proxy {
            dir,
            socket: socket.to_owned(),
            log,
            child: Some(child),
        };
        match ready {
            Ready::Now => {}
            Ready::Connect(path) => {
                let note = format!(": {} accepts no connection", path.display());
                proxy.wait_ready_by(&note, || UnixStream::connect(&path).is_ok());
            }
            Ready::Log(needle) => {
                let note = format!(": no {needle:?} in the log");
                let log = proxy.log.clone();
                proxy.wait_ready_by(&note, || {
                    fs::read_to_string(&log).is_ok_and(|text| text.contains(needle.as_str()))
                });
            }
        }
        proxy
    }

    /// Waits until the safe socket accepts a connection.
    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        self.wait_ready_by("", || UnixStream::connect(&socket).is_ok());
    }

    /// Polls `ready` until it holds; panics, with `note` (empty, or what it
    /// waited for) in the message, if the process exits first or
    /// [`DEADLINE`] passes.
    fn wait_ready_by(&mut self, note: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                panic!(
                    "docker-filter exited before it was ready ({status}){note}; log:\n{}",
                    self.logs()
                );
            }
            if ready() {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "docker-filter not ready after {DEADLINE:?}{note}; log:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already reaped")
    }

    /// The safe socket the proxy listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The proxy's temp dir.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// A new client connection to the safe socket.
    pub fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// Connects, sends `raw`, and reads until the proxy closes.
    pub fn exchange(&self, raw: &[u8]) -> Vec<u8> {
        let mut client = self.connect();
        client.send(raw);
        client.read_to_close()
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        wait_until(DEADLINE, || self.logs().contains(needle))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child already reaped").id()
    }

    /// Sends a signal (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit and returns how it ended; panics,
    /// with the log, if it is still running after [`DEADLINE`].
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_exit(DEADLINE).unwrap_or_else(|| {
            panic!(
                "still running {DEADLINE:?} after the signal; log:\n{}",
                self.logs()
            )
        })
    }

    /// Sends SIGTERM and waits for the exit, as [`Proxy::wait`] does.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// When [`Proxy::launch`] counts the process as started.
pub enum Ready {
    /// At once: the test waits in its own way.
    Now,
    /// When this socket accepts a connection. Not the proxy's safe socket
    /// where its connections are counted: the probe would be one of them.
    Connect(PathBuf),
    /// When the log holds this text (such as `listening on`).
    Log(String),
}

/// A start of the binary that [`Proxy::start`] does not cover: exactly
/// the given arguments (no `--listen` or `--upstream` is added), the
/// environment set or removed variable by variable (the rest, `RUST_LOG`
/// included, is the test's), an optional wrapper command that runs the
/// binary given as its next argument (such as `systemd-socket-activate`,
/// which executes it in place, so that [`Proxy::pid`] is the proxy's), and
/// a readiness check of the test's choosing.
pub struct Launch {
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    ready: Ready,
}

impl Launch {
    /// The binary with `args`, ready at once, environment untouched.
    pub fn new<I, S>(args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Launch {
            wrapper: Vec::new(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
            ready: Ready::Now,
        }
    }

    /// The binary with `--listen socket --upstream upstream` and `extra`.
    pub fn listen(socket: &Path, upstream: &Path, extra: &[&str]) -> Launch {
        Launch::new([OsStr::new("--listen"), socket.as_os_str()])
            .args([OsStr::new("--upstream"), upstream.as_os_str()])
            .args(extra)
    }

    /// More arguments for the binary.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the binary through `wrapper` (a program and its arguments),
    /// which gets the binary's path and its arguments after its own.
    #[must_use]
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Sets `key` to `value` in the environment.
    #[must_use]
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Launch {
        self.env.push((key.into(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes `key` from the environment.
    #[must_use]
    pub fn env_remove(mut self, key: &str) -> Launch {
        self.env.push((key.into(), None));
        self
    }

    /// How [`Proxy::launch`] knows the process is ready.
    #[must_use]
    pub fn ready(mut self, ready: Ready) -> Launch {
        self.ready = ready;
        self
    }
}

/// What one run of the binary printed, and how it ended.
pub struct Run {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs the binary with `args` (`RUST_LOG` unset) and waits for it to exit;
/// panics if it is still running after [`DEADLINE`].
pub fn run(args: &[&str]) -> Run {
    let dir = TempDir::new("run");
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut child = Command::new(BINARY)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn docker-filter");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "docker-filter {args:?} still running after {DEADLINE:?}; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
