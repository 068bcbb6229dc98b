//! One client connection, served by one thread: every request head is read,
//! decided and, if allowed, rewritten onto one daemon connection, and the
//! answers are relayed back in order.
//!
//! The thread waits with `poll(2)` on both sockets, so that it can read the
//! client's next heads while a response is still coming, notice at once
//! when the client goes away in the middle of a stream, and apply the idle
//! limit only when nothing is outstanding. The two common waits, for the
//! next head and for a prompt answer, are plain blocking reads instead
//! (`Connection::wait_in_read`): four system calls per keep-alive request
//! rather than six. A refusal is held until the answers to the requests
//! before it are delivered (docs/POLICY.md rules 2 and 9). The daemon
//! connection is opened at the first allowed request: a connection whose
//! requests are all refused never touches the daemon.

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use crate::config::Access;
use crate::decisions::{self, Caller};
use crate::denial::{Denial, Reason};
use crate::forward;
use crate::head::{self, HeadReader};
use crate::limits::{
    ANSWER_READ_WAIT, BUFFER_RELEASE_DELAY, IDLE_READ_SLACK, MAX_PIPELINED, UPSTREAM_WRITE_STALL,
};
use crate::policy;
use crate::relay::{self, RelayError, Relayed, Responses, SpliceError};
use crate::reply;
use crate::request::{self, Request};
use crate::stats::Stats;
use crate::sys::{self, Peer};
use crate::target::Target;
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
    let now = Instant::now();
    let responses = Responses::new(context.idle_timeout);
    let mut connection = Connection {
        caller,
        peer: peer.ok(),
        context,
        client,
        accepted: now,
        first: true,
        reader: HeadReader::default(),
        head_started: None,
        upstream: None,
        responses,
        outstanding: VecDeque::new(),
        refusal: None,
        reading: true,
        last_done: now,
        out: Vec::new(),
        waits: Waits::default(),
    };
    connection.run();
    // Both sockets close when the connection is dropped: the daemon's here,
    // the client's when the listener unregisters it, right after.
}

/// A request forwarded and not fully answered yet.
struct Outstanding {
    head_request: bool,
    /// The request, for the message of a 502.
    method: &'static str,
    /// Moved from the parsed request rather than formatted: only an error
    /// shows it.
    target: Target,
}

struct Connection {
    caller: Caller,
    peer: Option<Peer>,
    context: Arc<Context>,
    client: Arc<UnixStream>,
    accepted: Instant,
    /// No request has been read yet.
    first: bool,
    reader: HeadReader,
    /// When the head being received began (the accept, for the first).
    head_started: Option<Instant>,
    upstream: Option<UnixStream>,
    responses: Responses,
    outstanding: VecDeque<Outstanding>,
    /// The error response to send once the answers before it are out.
    refusal: Option<Vec<u8>>,
    /// Still reading requests: false after a refusal, a `Connection: close`,
    /// or the client's end of input.
    reading: bool,
    /// When the last answer was completed; the idle limit counts from here.
    last_done: Instant,
    /// The rewritten head, reused from request to request.
    out: Vec<u8>,
    waits: Waits,
}

/// What [`Connection::wait_in_read`] needs to remember.
#[derive(Default)]
struct Waits {
    /// The client socket's read timeout, as last set.
    client_read_timeout: Option<Duration>,
    /// Nothing came at once on the new connection: wait for the first
    /// head with poll.
    first_head_is_slow: bool,
    /// The answer being waited for did not come within
    /// [`ANSWER_READ_WAIT`]: wait for the rest of it with poll.
    answer_is_slow: bool,
}

/// Whether the connection loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl Connection {
    /// The connection loop: decide what is buffered, wait for either socket,
    /// move bytes, until there is nothing left to do.
    ///
    /// The steps it calls are kept out of line (`inline(never)`), so that
    /// their locals (header arrays, the parsed request) are off the stack
    /// while the thread waits. A pooled thread keeps every stack page it
    /// ever touched; with the steps inlined, each of 1,000 idle threads held
    /// four pages (16 KiB) instead of three.
    fn run(&mut self) {
        loop {
            self.decide_buffered_heads();
            if self.outstanding.is_empty() {
                if let Some(response) = self.refusal.take() {
                    return self.send_refusal(&response);
                }
                if !self.reading {
                    return;
                }
            }

            if let Some(flow) = self.wait_in_read() {
                if let Flow::Stop = flow {
                    return;
                }
                continue;
            }
            if self.outstanding.is_empty() {
                self.release_buffers();
            }

            let deadline = self.deadline();
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let want_client = self.reading && self.outstanding.len() < MAX_PIPELINED;
            let client = (self.client.as_fd(), want_client);
            let upstream = self.upstream.as_ref().map(|u| (u.as_fd(), true));
            let Ok([client_ready, upstream_ready]) = sys::poll_two(client, upstream, timeout)
            else {
                return;
            };

            if upstream_ready.readable || upstream_ready.hung_up {
                if let Flow::Stop = self.on_upstream_ready() {
                    return;
                }
            }
            if client_ready.hung_up {
                // Gone for good, not just half-closed: nobody will read the
                // answers, and closing the daemon connection ends any stream.
                debug!("close {} the client left", self.caller);
                return;
            }
            if client_ready.readable {
                self.on_client_readable();
            } else if !upstream_ready.readable
                && !upstream_ready.hung_up
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                if let Flow::Stop = self.on_deadline() {
                    return;
                }
            }
        }
    }

    /// The two waits of every keep-alive request, done as one blocking read
    /// rather than a poll(2) and a read: for the next head of a client
    /// between requests, and for the answer to a forwarded request. Returns
    /// `None` when the wait needs poll instead: for a first head that is not
    /// there within [`BUFFER_RELEASE_DELAY`] and for the rest of a partial
    /// head (their limit is the header timeout), and for an answer that
    /// takes longer than [`ANSWER_READ_WAIT`] (a stream, say), during which
    /// the client must be watched for hanging up.
    ///
    /// Neither wait watches the other socket. A client that leaves while its
    /// answer is awaited is noticed when the answer is written (or after
    /// [`ANSWER_READ_WAIT`]); a daemon that closes an idle connection is
    /// noticed when the next head is written to it, which then reconnects
    /// (`send_head`).
    #[inline(never)]
    fn wait_in_read(&mut self) -> Option<Flow> {
        if self.outstanding.is_empty() {
            return self.wait_for_next_head_in_read();
        }
        if self.waits.answer_is_slow {
            return None;
        }
        let upstream = self.upstream.as_ref()?;
        let Received::Read(read) = receive(&mut self.responses, upstream, &self.client) else {
            return Some(Flow::Stop);
        };
        if nothing_came(&read) {
            self.waits.answer_is_slow = true;
            return Some(Flow::Continue);
        }
        Some(self.on_upstream_read(read))
    }

    /// Between requests: reads the next head in two steps. A busy client's
    /// next head comes within [`BUFFER_RELEASE_DELAY`], and the buffers are
    /// kept for it (no allocation per request); otherwise they are given
    /// back, and the read waits for the rest of the idle limit (an idle
    /// keep-alive connection holds no buffers: 1,000 idle clients are 1,000
    /// threads waiting). The client socket's read timeout is set only when
    /// it changes, that is, twice per idle period and never between a busy
    /// client's requests.
    fn wait_for_next_head_in_read(&mut self) -> Option<Flow> {
        if !self.reading || self.reader.has_buffered() {
            return None;
        }
        if self.first {
            return self.wait_for_first_head_in_read();
        }
        if self.last_done.elapsed() >= IDLE_READ_SLACK {
            return None;
        }
        self.set_client_read_timeout(BUFFER_RELEASE_DELAY).ok()?;
        let mut read = self.reader.fill(&mut &*self.client);
        if nothing_came(&read) {
            self.release_buffers();
            let rest = self
                .context
                .idle_timeout
                .saturating_sub(BUFFER_RELEASE_DELAY);
            if rest.is_zero() || self.set_client_read_timeout(rest).is_err() {
                return None;
            }
            read = self.reader.fill(&mut &*self.client);
            if nothing_came(&read) {
                // The idle limit passed between requests.
                return Some(self.on_deadline());
            }
        }
        self.on_client_read(false, read);
        Some(Flow::Continue)
    }

    /// A client sends its first head as soon as it has connected, as a
    /// rule: it is read at once, and only a client that has sent nothing
    /// within [`BUFFER_RELEASE_DELAY`] is waited for with poll, until the
    /// header timeout. The read timeout set here serves the waits between
    /// requests afterwards.
    fn wait_for_first_head_in_read(&mut self) -> Option<Flow> {
        if self.waits.first_head_is_slow {
            return None;
        }
        self.set_client_read_timeout(BUFFER_RELEASE_DELAY).ok()?;
        let read = self.reader.fill(&mut &*self.client);
        if nothing_came(&read) {
            self.waits.first_head_is_slow = true;
        } else {
            self.on_client_read(false, read);
        }
        Some(Flow::Continue)
    }

    fn set_client_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.waits.client_read_timeout != Some(timeout) {
            self.client.set_read_timeout(Some(timeout))?;
            self.waits.client_read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Gives back the memory of both buffers, if they hold nothing.
    fn release_buffers(&mut self) {
        self.reader.release_if_empty();
        self.responses.release_if_empty();
    }

    /// When the wait must end: the header deadline while a head is being
    /// received, the idle limit while nothing is outstanding, and never
    /// while a response (a stream, say) is still being relayed.
    fn deadline(&self) -> Option<Instant> {
        if !self.reading {
            return None;
        }
        if let Some(started) = self.head_started {
            return Some(started + self.context.header_timeout);
        }
        if !self.outstanding.is_empty() {
            return None;
        }
        Some(if self.first {
            self.accepted + self.context.header_timeout
        } else {
            self.last_done + self.context.idle_timeout
        })
    }

    #[inline(never)]
    fn on_deadline(&mut self) -> Flow {
        if self.head_started.is_some() || self.first {
            let denial = Denial::new(
                Reason::HeaderTimeout,
                format!(
                    "no complete request head was received within {} s",
                    self.context.header_timeout.as_secs()
                ),
            );
            self.refuse(&denial, false);
            return Flow::Continue;
        }
        debug!("idle {} closed after the idle limit", self.caller);
        Flow::Stop
    }

    #[inline(never)]
    fn on_client_readable(&mut self) {
        let had_input = self.reader.has_buffered();
        let read = self.reader.fill(&mut &*self.client);
        self.on_client_read(had_input, read);
    }

    /// What a read of the client gave: bytes of a head, or its end of input.
    /// `had_input` says whether part of a head was buffered before it.
    fn on_client_read(&mut self, had_input: bool, read: io::Result<usize>) {
        match read {
            Ok(0) => {
                // End of input: the client half-closed (it may still read
                // the answers due) or shutdown began. Nothing more is read.
                self.reading = false;
                self.head_started = None;
            }
            Ok(_) if !had_input && self.head_started.is_none() => {
                self.head_started = Some(if self.first {
                    self.accepted
                } else {
                    Instant::now()
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.reading = false,
        }
    }

    /// Decides every complete head already buffered, in order, as long as
    /// requests are still being read and the pipeline has room.
    #[inline(never)]
    fn decide_buffered_heads(&mut self) {
        while self.reading && self.outstanding.len() < MAX_PIPELINED {
            let len = match self.reader.next_head() {
                Ok(Some(len)) => len,
                Ok(None) => return,
                Err(denial) => return self.refuse(&denial, false),
            };
            self.first = false;
            if let Some(denial) = self.decide_and_forward(len) {
                // From the parsed request line, which skips the empty lines
                // RFC 9112 section 2.2 lets a client send before it.
                let head_request = request::request_line(self.reader.head(len))
                    .is_some_and(|(method, _)| method == "HEAD");
                return self.refuse(&denial, head_request);
            }
            self.reader.consume(len);
            self.head_started = self.reader.has_buffered().then(Instant::now);
        }
    }

    /// Decides the buffered head of `len` bytes and forwards it if allowed;
    /// returns the refusal otherwise.
    fn decide_and_forward(&mut self, len: usize) -> Option<Denial> {
        let head = self.reader.head(len);
        if let Some(denial) = self.peer_refusal(head) {
            return Some(denial);
        }
        let allowed = match policy::decide(head, &self.context.whitelist) {
            Ok(allowed) => allowed,
            Err(denial) => return Some(denial),
        };
        decisions::allowed(&self.caller, &allowed, &self.context.whitelist);
        Stats::bump(&self.context.stats.rule_hits[allowed.rule.index]);
        self.out.clear();
        forward::write_head(&allowed.request, &mut self.out);
        let close = allowed.request.close;
        let pending = outstanding(allowed.request);
        if let Err(denial) = self.send_head() {
            return denial.map(|d| d.of_request(pending.method, &pending.target.to_string()));
        }

        Stats::bump(&self.context.stats.allowed);
        Stats::add(&self.context.stats.bytes_to_daemon, self.out.len());
        if close {
            self.reading = false;
        }
        self.outstanding.push_back(pending);
        None
    }

    /// Writes `self.out` to the daemon, connecting first if needed. `Err(None)`
    /// means the connection must end without a refusal of its own: the
    /// daemon connection broke with answers pending, and their relay reports
    /// it.
    fn send_head(&mut self) -> Result<(), Option<Denial>> {
        if self.upstream.is_none() {
            self.upstream = Some(connect(&self.context.upstream)?);
        }
        let Some(upstream) = &self.upstream else {
            return Err(None);
        };
        let Err(error) = sys::send_all(upstream.as_fd(), &self.out, UPSTREAM_WRITE_STALL) else {
            return Ok(());
        };
        if !self.outstanding.is_empty() {
            debug!(
                "upstream {} write failed with answers pending: {error}",
                self.caller
            );
            self.reading = false;
            return Err(None);
        }
        // Between requests the daemon may have closed the connection (a
        // restart, say). Nothing is lost by opening a new one.
        debug!("upstream {} reconnecting after: {error}", self.caller);
        let upstream = connect(&self.context.upstream)?;
        self.responses.reset();
        sys::send_all(upstream.as_fd(), &self.out, UPSTREAM_WRITE_STALL)
            .map_err(|e| upstream_denial(&self.context.upstream, "writing to", &e))?;
        self.upstream = Some(upstream);
        Ok(())
    }

    /// The daemon sent something, or closed.
    #[inline(never)]
    fn on_upstream_ready(&mut self) -> Flow {
        let Some(upstream) = &self.upstream else {
            return Flow::Continue;
        };
        match receive(&mut self.responses, upstream, &self.client) {
            Received::Read(read) => self.on_upstream_read(read),
            Received::ClientGone => Flow::Stop,
        }
    }

    /// What a read of the daemon connection gave: answers to relay, its
    /// close, or an error.
    fn on_upstream_read(&mut self, read: io::Result<usize>) -> Flow {
        if self.outstanding.is_empty() {
            // Nothing was asked: the daemon closed an idle connection (or
            // sent what nobody asked for). The next request reconnects.
            debug!("upstream {} closed between requests", self.caller);
            self.upstream = None;
            self.responses.reset();
            return Flow::Continue;
        }
        let relayed = match read {
            Ok(0) => self.responses.end_of_input().map(Some),
            Ok(_) => self.relay_buffered(),
            Err(e) => Err(RelayError::Upstream {
                problem: format!("reading from the daemon failed: {e}"),
                answered: self.responses.answered(),
            }),
        };
        self.count_written();
        match relayed {
            Ok(Some(Relayed::Close)) => {
                // The client was told (by `Connection: close`, HTTP/1.0 or a
                // body that ends at close) that the connection ends here.
                self.answered_one();
                self.upstream = None;
                self.responses.reset();
                self.reading = false;
                if self.outstanding.is_empty() {
                    Flow::Continue
                } else {
                    // Requests sent behind the one the daemon closed after
                    // are lost; the client is told for the next of them.
                    self.upstream_failed(
                        "the daemon closed the connection after an earlier answer",
                        false,
                    )
                }
            }
            Ok(_) => Flow::Continue,
            Err(RelayError::Client(_)) => Flow::Stop,
            Err(RelayError::Upstream { problem, answered }) => {
                self.upstream_failed(&problem, answered)
            }
        }
    }

    /// Relays what is buffered, answer after answer, while the buffered
    /// input completes them.
    fn relay_buffered(&mut self) -> Result<Option<Relayed>, RelayError> {
        while let Some(front) = self.outstanding.front() {
            match self.responses.advance(front.head_request, &self.client)? {
                Some(Relayed::KeepAlive) => self.answered_one(),
                Some(Relayed::Close) => return Ok(Some(Relayed::Close)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    fn answered_one(&mut self) {
        self.waits.answer_is_slow = false;
        self.outstanding.pop_front();
        self.last_done = Instant::now();
    }

    fn count_written(&mut self) {
        let written = usize::try_from(self.responses.take_written()).unwrap_or(usize::MAX);
        Stats::add(&self.context.stats.bytes_to_clients, written);
    }

    /// The daemon failed the oldest outstanding request: a 502 if the client
    /// has seen nothing of its answer, then the connection ends.
    fn upstream_failed(&mut self, problem: &str, answered: bool) -> Flow {
        let Some(front) = self.outstanding.front() else {
            return Flow::Stop;
        };
        let denial = Denial::new(
            Reason::Upstream,
            format!(
                "the Docker daemon at {}: {problem}",
                self.context.upstream.display()
            ),
        )
        .of_request(front.method, &front.target.to_string());
        let head_request = front.head_request;
        self.log_denied(&denial);
        if !answered {
            self.write_client(&reply::error_response(&denial, head_request));
        }
        Flow::Stop
    }

    /// Logs a refusal and holds its response until the answers before it
    /// are out; nothing more is read from the client.
    fn refuse(&mut self, denial: &Denial, head_request: bool) {
        self.log_denied(denial);
        self.refusal = Some(reply::error_response(denial, head_request));
        self.reading = false;
        self.head_started = None;
    }

    #[inline(never)]
    fn send_refusal(&mut self, response: &[u8]) {
        if self.write_client(response) {
            let _ = self.client.shutdown(Shutdown::Write);
            relay::linger(&self.client);
        }
    }

    fn write_client(&self, bytes: &[u8]) -> bool {
        let written = sys::send_all(self.client.as_fd(), bytes, self.context.idle_timeout).is_ok();
        if written {
            Stats::add(&self.context.stats.bytes_to_clients, bytes.len());
        }
        written
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

    fn log_denied(&self, denial: &Denial) {
        if denial.reason == Reason::Upstream {
            Stats::bump(&self.context.stats.upstream_errors);
        }
        self.context.stats.count_denial(denial.reason);
        decisions::denied(&self.caller, denial);
    }
}

/// Whether a blocking read ended because its read timeout passed with
/// nothing to read.
fn nothing_came(read: &io::Result<usize>) -> bool {
    matches!(read, Err(e) if head::is_timeout(e))
}

/// What one read of the daemon connection gave.
enum Received {
    /// Bytes read (into the buffer, or moved on to the client), the end of
    /// input, or the read's error.
    Read(io::Result<usize>),
    /// Moving body bytes on to the client failed: it is gone.
    ClientGone,
}

/// Reads the daemon's next bytes: a long stretch of body goes straight on
/// to the client with splice(2), anything else into the buffer.
fn receive(responses: &mut Responses, upstream: &UnixStream, client: &UnixStream) -> Received {
    let Some(len) = responses.splice_len(client) else {
        return Received::Read(responses.fill(upstream));
    };
    match responses.splice(upstream, client, len) {
        Ok(moved) => Received::Read(Ok(moved)),
        Err(SpliceError::Upstream(e)) => Received::Read(Err(e)),
        Err(SpliceError::Client(e)) => {
            debug!("close the client left in the middle of an answer: {e}");
            Received::ClientGone
        }
    }
}

fn outstanding(request: Request<'_>) -> Outstanding {
    Outstanding {
        head_request: request.method == request::Method::Head,
        method: request.method.as_str(),
        target: request.target,
    }
}

fn connect(path: &Path) -> Result<UnixStream, Denial> {
    let stream =
        UnixStream::connect(path).map_err(|e| upstream_denial(path, "connecting to", &e))?;
    stream
        .set_read_timeout(Some(ANSWER_READ_WAIT))
        .map_err(|e| upstream_denial(path, "configuring the connection to", &e))?;
    Ok(stream)
}

/// A 502 that names the socket, the step and the OS error.
fn upstream_denial(path: &Path, step: &str, error: &io::Error) -> Denial {
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
