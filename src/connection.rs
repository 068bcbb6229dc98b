//! One client connection: every request head is read, decided and, if
//! allowed, rewritten onto one daemon connection; a second thread relays the
//! responses back in order.
//!
//! The reading thread (this module's [`serve`]) owns the decisions. It hands
//! the relay thread one job per forwarded request and, when it refuses one,
//! a final job carrying the error, so the error reaches the client after the
//! responses to the requests before it (POLICY.md rules 2 and 9). The daemon
//! connection is opened at the first allowed request: a connection whose
//! requests are all refused never touches the daemon.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::config::Access;
use crate::denial::{Denial, Reason};
use crate::forward;
use crate::head::{is_timeout, HeadError, HeadReader, Source};
use crate::limits::{MAX_PIPELINED, THREAD_STACK_BYTES, UPSTREAM_WRITE_TIMEOUT_SECS};
use crate::policy::{self, Allowed};
use crate::relay::{self, Relay, RelayError, Relayed};
use crate::reply;
use crate::request::{self, Request};
use crate::stats::Stats;
use crate::sys::{self, Peer};
use crate::text::{log_quoted, printable};
use crate::whitelist::Whitelist;

/// What every connection shares: the settings and the totals.
#[derive(Debug)]
pub struct Context {
    /// The whitelist in force.
    pub whitelist: Whitelist,
    /// The Docker socket.
    pub upstream: PathBuf,
    /// Time allowed for one whole request head.
    pub header_timeout: Duration,
    /// Time allowed between requests.
    pub idle_timeout: Duration,
    /// Who may connect.
    pub access: Access,
    /// Totals since start.
    pub stats: Stats,
}

/// Serves one client connection until it ends. `peer` is who connected, as
/// the kernel reports it.
pub fn serve(id: u64, client: Arc<UnixStream>, peer: io::Result<Peer>, context: Arc<Context>) {
    let caller = Caller::new(id, peer.as_ref().ok());
    if let Err(e) = &peer {
        debug!("{caller} cannot read the peer credentials: {e}");
    }
    let mut connection = Connection {
        id,
        caller,
        peer: peer.ok(),
        context,
        client,
        accepted: Instant::now(),
        progress: Arc::new(Progress::default()),
        upstream: None,
        out: Vec::new(),
    };
    connection.run();
    connection.finish();
}

/// What the relay thread is asked to do next.
enum Job {
    /// Relay the response to one forwarded request, first switching to a new
    /// daemon connection if one is given.
    Response {
        head_request: bool,
        upstream: Option<Arc<UnixStream>>,
        /// The request, for the message of a 502.
        method: &'static str,
        target: String,
    },
    /// Send this error response, then end the connection.
    Error(Vec<u8>),
}

/// Requests forwarded and not answered yet, and when the last answer ended;
/// the idle limit applies only when nothing is outstanding.
#[derive(Debug)]
struct Progress {
    started: Instant,
    outstanding: AtomicUsize,
    last_done_ms: AtomicU64,
    /// The reading thread closed the daemon connection because the client
    /// left: the relay's read failing then is no daemon error.
    client_gone: AtomicBool,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            started: Instant::now(),
            outstanding: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            client_gone: AtomicBool::new(false),
        }
    }
}

impl Progress {
    fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    fn answered(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_done_ms.store(ms, Ordering::Release);
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }

    fn last_done(&self) -> Instant {
        self.started + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire))
    }
}

/// The daemon side of a connection.
struct Upstream {
    stream: Arc<UnixStream>,
    jobs: Option<SyncSender<Job>>,
    relay: JoinHandle<()>,
}

/// How waiting for the next request ended.
enum Waited {
    Data,
    Closed,
    Idle,
    Expired,
    Failed,
}

struct Connection {
    id: u64,
    /// The connection and peer fields of every decision line.
    caller: Caller,
    peer: Option<Peer>,
    context: Arc<Context>,
    client: Arc<UnixStream>,
    accepted: Instant,
    progress: Arc<Progress>,
    upstream: Option<Upstream>,
    /// The rewritten head, reused from request to request.
    out: Vec<u8>,
}

impl Connection {
    /// Reads, decides and forwards requests until one is refused, the client
    /// leaves or asks to close, or the connection idles out.
    fn run(&mut self) {
        let mut reader = HeadReader::default();
        let mut first = true;
        loop {
            if !reader.has_buffered() {
                match self.wait_for_request(&mut reader, first) {
                    Waited::Data => {}
                    Waited::Closed => return self.client_closed(),
                    Waited::Idle => {
                        return debug!("idle conn={} closed after the idle limit", self.id)
                    }
                    Waited::Expired => {
                        return self.refuse(&timed_out(self.context.header_timeout), false)
                    }
                    Waited::Failed => return,
                }
            }

            let deadline = if first {
                self.accepted + self.context.header_timeout
            } else {
                Instant::now() + self.context.header_timeout
            };
            let mut source = ClientSource(&self.client);
            let len = match reader.read_head(
                &mut source,
                deadline,
                self.context.header_timeout.as_secs(),
            ) {
                Ok(len) => len,
                Err(HeadError::Closed) => return self.client_closed(),
                Err(HeadError::Refused(denial)) => return self.refuse(&denial, false),
                Err(HeadError::Io(_)) => return,
            };
            first = false;

            let head = reader.head(len);
            let head_request = head.starts_with(b"HEAD ");
            if let Some(denial) = self.peer_refusal(head) {
                return self.refuse(&denial, head_request);
            }
            match policy::decide(head, &self.context.whitelist) {
                Err(denial) => return self.refuse(&denial, head_request),
                Ok(allowed) => {
                    self.log_allowed(&allowed);
                    Stats::bump(&self.context.stats.rule_hits[allowed.rule.index]);
                    let close = allowed.request.close;
                    forward::write_head(&allowed.request, {
                        self.out.clear();
                        &mut self.out
                    });
                    if !self.forward(&allowed.request, head_request) || close {
                        return;
                    }
                }
            }
            reader.consume(len);
        }
    }

    /// Waits for the first byte of the next head. The first request must
    /// arrive within the header timeout of the accept; later ones within the
    /// idle limit of the last response, which does not run while a response
    /// (a stream, say) is still being relayed.
    fn wait_for_request(&self, reader: &mut HeadReader, first: bool) -> Waited {
        loop {
            let now = Instant::now();
            let outstanding = self.progress.outstanding();
            let deadline = if first {
                self.accepted + self.context.header_timeout
            } else if outstanding > 0 {
                now + self.context.idle_timeout
            } else {
                self.progress.last_done() + self.context.idle_timeout
            };
            if deadline <= now {
                return if first { Waited::Expired } else { Waited::Idle };
            }
            if self.client.set_read_timeout(Some(deadline - now)).is_err() {
                return Waited::Failed;
            }
            match reader.fill(&mut &*self.client) {
                Ok(0) => return Waited::Closed,
                Ok(_) => return Waited::Data,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Waited::Failed,
            }
        }
    }

    /// Sends the head in `self.out` (the rewritten `request`) to the daemon
    /// and queues its response. Returns false when the connection must end
    /// (the refusal, if any, is already queued).
    fn forward(&mut self, request: &Request<'_>, head_request: bool) -> bool {
        let method = request.method.as_str();
        let switched = match self.ensure_upstream().and_then(|()| self.send_head()) {
            Ok(switched) => switched,
            Err(Some(denial)) => {
                let denial = denial.of_request(method, &request.target.to_string());
                self.refuse(&denial, head_request);
                return false;
            }
            Err(None) => return false,
        };
        let Some(upstream) = &mut self.upstream else {
            return false;
        };
        if let Some(stream) = &switched {
            upstream.stream = Arc::clone(stream);
        }

        Stats::bump(&self.context.stats.allowed);
        Stats::add(&self.context.stats.bytes_to_daemon, self.out.len());
        self.progress.outstanding.fetch_add(1, Ordering::AcqRel);
        let job = Job::Response {
            head_request,
            upstream: switched,
            method,
            target: request.target.to_string(),
        };
        upstream
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// Opens the daemon connection and starts the relay thread, at the
    /// first allowed request.
    fn ensure_upstream(&mut self) -> Result<(), Option<Denial>> {
        if self.upstream.is_none() {
            let stream = self.connect()?;
            self.upstream = Some(self.start_relay(&stream)?);
        }
        Ok(())
    }

    /// Writes `self.out` to the daemon. Returns the new daemon connection if
    /// the old one had to be replaced, or the refusal to send (`None` when
    /// the relay thread will report the failure).
    fn send_head(&self) -> Result<Option<Arc<UnixStream>>, Option<Denial>> {
        let Some(upstream) = &self.upstream else {
            return Err(None);
        };
        let Err(error) = (&*upstream.stream).write_all(&self.out) else {
            return Ok(None);
        };
        if self.progress.outstanding() > 0 {
            // The relay is still reading answers from this broken
            // connection; it reports the failure to the client.
            debug!(
                "upstream {} write failed with answers pending: {error}",
                self.caller
            );
            return Err(None);
        }
        // Between requests the daemon may have closed the connection (a
        // restart, say). Nothing is lost by opening a new one.
        debug!("upstream {} reconnecting after: {error}", self.caller);
        let stream = self.connect()?;
        (&*stream)
            .write_all(&self.out)
            .map_err(|e| upstream_denial(&self.context.upstream, "writing to", &e))?;
        Ok(Some(stream))
    }

    fn connect(&self) -> Result<Arc<UnixStream>, Denial> {
        let path = &self.context.upstream;
        let stream =
            UnixStream::connect(path).map_err(|e| upstream_denial(path, "connecting to", &e))?;
        stream
            .set_write_timeout(Some(Duration::from_secs(UPSTREAM_WRITE_TIMEOUT_SECS)))
            .map_err(|e| upstream_denial(path, "configuring the connection to", &e))?;
        Ok(Arc::new(stream))
    }

    fn start_relay(&self, stream: &Arc<UnixStream>) -> Result<Upstream, Denial> {
        let (jobs, queue) = mpsc::sync_channel(MAX_PIPELINED);
        let relay = Relay::new(Arc::clone(stream), Arc::clone(&self.client));
        let client = Arc::clone(&self.client);
        let progress = Arc::clone(&self.progress);
        let id = self.id;
        let caller = self.caller.clone();
        let context = Arc::clone(&self.context);
        let spawned = thread::Builder::new()
            .name(format!("relay-{id}"))
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || respond(&caller, &queue, relay, &client, &progress, &context));
        match spawned {
            Ok(relay) => Ok(Upstream {
                stream: Arc::clone(stream),
                jobs: Some(jobs),
                relay,
            }),
            Err(e) => Err(Denial::new(
                Reason::ConnectionLimit,
                format!("cannot start a relay thread: {e}"),
            )),
        }
    }

    /// The client closed its side. If answers are still due, they are
    /// delivered while the client is still there to read them (it may only
    /// have half-closed); once it is gone, the daemon connection is closed
    /// too, which ends any stream.
    fn client_closed(&mut self) {
        if self.progress.outstanding() == 0 {
            return;
        }
        let Some(upstream) = &mut self.upstream else {
            return;
        };
        upstream.jobs = None;
        let _ = sys::wait_for_hangup(self.client.as_fd(), None);
        self.progress.client_gone.store(true, Ordering::Release);
        let _ = upstream.stream.shutdown(Shutdown::Both);
    }

    /// Logs and answers a refusal; it goes through the relay thread when
    /// there is one, so that it follows the answers already due.
    fn refuse(&mut self, denial: &Denial, head_request: bool) {
        self.log_denied(denial);
        let response = reply::error_response(denial, head_request);
        if let Some(jobs) = self.upstream.as_ref().and_then(|u| u.jobs.as_ref()) {
            let _ = jobs.send(Job::Error(response));
            return;
        }
        if (&*self.client).write_all(&response).is_ok() {
            Stats::add(&self.context.stats.bytes_to_clients, response.len());
            let _ = self.client.shutdown(Shutdown::Write);
            relay::linger(&self.client);
        }
    }

    /// A refusal for a caller outside `--allow-uid` / `--allow-gid`. Without
    /// credentials (the kernel always has them for a unix socket, but fail
    /// closed) the caller is refused whenever a list is set.
    fn peer_refusal(&self, head: &[u8]) -> Option<Denial> {
        let access = &self.context.access;
        if !access.is_restricted() {
            return None;
        }
        let detail = match self.peer {
            Some(peer) if access.allows(peer.uid, peer.gid) => return None,
            Some(peer) => format!(
                "uid {} (gid {}) is not allowed to use this socket (--allow-uid / --allow-gid)",
                peer.uid, peer.gid
            ),
            None => "the caller's credentials are unknown and --allow-uid / --allow-gid is set"
                .to_owned(),
        };
        let denial = Denial::new(Reason::Peer, detail);
        Some(match request::request_line(head) {
            Some((method, target)) => denial.of_request(method, target),
            None => denial,
        })
    }

    /// Ends the connection: lets the relay thread finish what is due, then
    /// closes both sides.
    fn finish(&mut self) {
        if let Some(mut upstream) = self.upstream.take() {
            upstream.jobs = None;
            let _ = upstream.relay.join();
            let _ = upstream.stream.shutdown(Shutdown::Both);
        }
        let _ = self.client.shutdown(Shutdown::Both);
    }

    fn log_allowed(&self, allowed: &Allowed<'_, '_>) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let path = allowed.request.target.to_string();
        debug!(
            "allow {} method={} path={} rule={}",
            self.caller,
            allowed.request.method.as_str(),
            log_quoted(&path),
            log_quoted(&format!(
                "{}:{}",
                self.context.whitelist.source(),
                allowed.rule.line
            )),
        );
    }

    fn log_denied(&self, denial: &Denial) {
        if denial.reason == Reason::Upstream {
            Stats::bump(&self.context.stats.upstream_errors);
        }
        self.context.stats.count_denial(denial.reason);
        log_decision(&self.caller, denial);
    }
}

/// The connection id and the peer's credentials, as `key=value` fields.
#[derive(Debug, Clone)]
struct Caller(String);

impl Caller {
    fn new(id: u64, peer: Option<&Peer>) -> Caller {
        Caller(match peer {
            Some(p) => format!("conn={id} uid={} gid={} pid={}", p.uid, p.gid, p.pid),
            None => format!("conn={id} uid=- gid=- pid=-"),
        })
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `deny` decision line: stable `key=value` fields, values quoted.
fn log_decision(caller: &Caller, denial: &Denial) {
    let (method, path) = match &denial.request {
        Some((method, path)) => (method.as_str(), log_quoted(path)),
        None => ("-", "-".to_owned()),
    };
    warn!(
        "deny {caller} status={} reason={} method={method} path={path} detail={}",
        denial.status(),
        denial.reason.code(),
        log_quoted(&printable(denial.detail.as_bytes())),
    );
}

/// The relay thread: one job at a time until the queue closes or a job ends
/// the connection. Whatever happens, both sockets are shut on the way out,
/// which wakes the reading thread.
fn respond(
    caller: &Caller,
    queue: &Receiver<Job>,
    mut relay: Relay,
    client: &Arc<UnixStream>,
    progress: &Progress,
    context: &Context,
) {
    let _shut = ShutOnDrop(Arc::clone(client));
    while let Ok(job) = queue.recv() {
        match job {
            Job::Response {
                head_request,
                upstream,
                method,
                target,
            } => {
                if let Some(stream) = upstream {
                    relay.set_upstream(stream);
                }
                let relayed = relay.relay_one(head_request);
                Stats::add(
                    &context.stats.bytes_to_clients,
                    usize::try_from(relay.take_written()).unwrap_or(usize::MAX),
                );
                match relayed {
                    Ok(Relayed::KeepAlive) => progress.answered(),
                    Ok(Relayed::Close) | Err(RelayError::Client(_)) => break,
                    Err(RelayError::Upstream { .. })
                        if progress.client_gone.load(Ordering::Acquire) =>
                    {
                        debug!("close {caller} the client left during a response");
                        break;
                    }
                    Err(RelayError::Upstream { problem, answered }) => {
                        let denial = Denial::new(
                            Reason::Upstream,
                            format!(
                                "the Docker daemon at {}: {problem}",
                                context.upstream.display()
                            ),
                        )
                        .of_request(method, &target);
                        Stats::bump(&context.stats.upstream_errors);
                        context.stats.count_denial(Reason::Upstream);
                        log_decision(caller, &denial);
                        if !answered {
                            let response = reply::error_response(&denial, head_request);
                            if (&**client).write_all(&response).is_ok() {
                                Stats::add(&context.stats.bytes_to_clients, response.len());
                            }
                        }
                        break;
                    }
                }
            }
            Job::Error(response) => {
                if (&**client).write_all(&response).is_ok() {
                    Stats::add(&context.stats.bytes_to_clients, response.len());
                    let _ = client.shutdown(Shutdown::Write);
                    relay::linger(client);
                }
                break;
            }
        }
    }
    relay.shutdown_upstream();
}

/// Shuts a socket in both directions when dropped, panics included.
struct ShutOnDrop(Arc<UnixStream>);

impl Drop for ShutOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// The client socket as a [`Source`] for the head reader.
struct ClientSource<'a>(&'a UnixStream);

impl io::Read for ClientSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*self.0, buf)
    }
}

impl Source for ClientSource<'_> {
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let timeout = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        self.0.set_read_timeout(timeout)
    }
}

fn timed_out(timeout: Duration) -> Denial {
    Denial::new(
        Reason::HeaderTimeout,
        format!(
            "no request head was received within {} s",
            timeout.as_secs()
        ),
    )
}

/// A 502 that names the socket, the step and the OS error.
fn upstream_denial(path: &std::path::Path, step: &str, error: &io::Error) -> Denial {
    let hint = match error.kind() {
        io::ErrorKind::NotFound => "; is dockerd running, and is --upstream right?",
        io::ErrorKind::PermissionDenied => {
            "; docker-filter needs read and write access to it (the docker group)"
        }
        io::ErrorKind::ConnectionRefused => "; nothing is listening there (is dockerd running?)",
        _ => "",
    };
    Denial::new(
        Reason::Upstream,
        format!(
            "error {step} the Docker daemon at {}: {error}{hint}",
            path.display()
        ),
    )
}
