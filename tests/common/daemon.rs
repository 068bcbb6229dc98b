//! [`FakeDaemon`]: a stand-in for dockerd on a unix socket. It records every
//! byte the proxy sends it, splits what it reads into request heads, and
//! answers each with a [`Reply`] that the test chooses: a small JSON
//! response by default, a chunked stream that the test drives, raw bytes, or
//! a hang-up.

use std::fs;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{find, wait_until, TempDir, DEADLINE};

/// A request head as the fake daemon received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Which accepted connection it came on (0 is the first).
    pub conn: usize,
    /// The whole head, including the final CRLFCRLF.
    pub head: Vec<u8>,
    /// The request line, lossily decoded.
    pub line: String,
    /// The method word of the request line.
    pub method: String,
    /// The request target of the request line.
    pub target: String,
}

impl SeenRequest {
    fn parse(conn: usize, head: Vec<u8>) -> SeenRequest {
        let end = find(&head, b"\r\n").unwrap_or(head.len());
        let line = String::from_utf8_lossy(&head[..end]).into_owned();
        let mut words = line.split(' ');
        let method = words.next().unwrap_or("").to_owned();
        let target = words.next().unwrap_or("").to_owned();
        SeenRequest {
            conn,
            head,
            line,
            method,
            target,
        }
    }

    /// Header lines (name, value) after the request line, split on CRLF.
    pub fn headers(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(&self.head);
        text.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_owned(), v.trim().to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect()
    }

    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether the daemon should close after answering, as dockerd would.
    fn wants_close(&self) -> bool {
        let close = self
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        let keep = self
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("keep-alive"));
        close || (self.line.ends_with("HTTP/1.0") && !keep)
    }
}

/// What the fake daemon does with one request head.
pub enum Reply {
    /// `200 OK`, a small JSON body with Content-Length, and the request line
    /// echoed in `X-Seen` (no body for HEAD).
    Ok,
    /// These exact bytes, then go on reading (keep-alive).
    Raw(Vec<u8>),
    /// These exact bytes, then close the connection.
    RawThenClose(Vec<u8>),
    /// A chunked `200 OK` with one chunk, then hold the connection open: the
    /// test sends more with [`FakeDaemon::push_chunk`] and ends it with
    /// [`FakeDaemon::end_streams`] or [`FakeDaemon::cut_streams`].
    Stream,
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// `200 OK` with `body` as `application/json` and its Content-Length
    /// (no body for HEAD), then go on reading, as [`Reply::Raw`] does.
    pub fn json(req: &SeenRequest, body: &str) -> Reply {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        if req.method != "HEAD" {
            out.push_str(body);
        }
        Reply::Raw(out.into_bytes())
    }
}

/// The default policy: `/events` streams, everything else is [`Reply::Ok`].
pub fn default_reply(req: &SeenRequest) -> Reply {
    if req.target.contains("/events") {
        Reply::Stream
    } else {
        Reply::Ok
    }
}

type Responder = dyn Fn(&SeenRequest) -> Reply + Send + Sync;

struct OpenStream {
    conn: usize,
    socket: UnixStream,
    close_after: bool,
}

#[derive(Default)]
struct DaemonState {
    received: Vec<u8>,
    requests: Vec<SeenRequest>,
    accepted: usize,
    closed: usize,
    sockets: Vec<UnixStream>,
    streams: Vec<OpenStream>,
}

struct DaemonShared {
    state: Mutex<DaemonState>,
    responder: Mutex<Arc<Responder>>,
}

impl DaemonShared {
    fn state(&self) -> MutexGuard<'_, DaemonState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A stand-in for dockerd listening on a unix socket.
pub struct FakeDaemon {
    dir: Option<TempDir>,
    path: PathBuf,
    shared: Arc<DaemonShared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    /// Starts a daemon on `docker.sock` in a fresh temp dir.
    pub fn start() -> FakeDaemon {
        let dir = TempDir::new("dmn");
        let path = dir.join("docker.sock");
        let mut daemon = FakeDaemon::unstarted(&path);
        daemon.dir = Some(dir);
        daemon.restart();
        daemon
    }

    /// Starts a daemon at `path` (whose folder the caller owns).
    pub fn start_at(path: &Path) -> FakeDaemon {
        let mut daemon = FakeDaemon::unstarted(path);
        daemon.restart();
        daemon
    }

    fn unstarted(path: &Path) -> FakeDaemon {
        let responder: Arc<Responder> = Arc::new(default_reply);
        FakeDaemon {
            dir: None,
            path: path.to_owned(),
            shared: Arc::new(DaemonShared {
                state: Mutex::new(DaemonState::default()),
                responder: Mutex::new(responder),
            }),
            stop: Arc::new(AtomicBool::new(false)),
            acceptor: None,
        }
    }

    /// Replaces the reply policy for requests read from now on.
    pub fn respond(&self, f: impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static) {
        *self
            .shared
            .responder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(f);
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every byte received, on all connections, in arrival order.
    pub fn received(&self) -> Vec<u8> {
        self.shared.state().received.clone()
    }

    /// Every request head received, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.state().requests.clone()
    }

    /// The request lines received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen().into_iter().map(|r| r.line).collect()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state().accepted
    }

    /// How many accepted connections have been closed (by either side).
    pub fn closed_connections(&self) -> usize {
        self.shared.state().closed
    }

    /// How many streams ([`Reply::Stream`]) are open.
    pub fn open_streams(&self) -> usize {
        self.shared.state().streams.len()
    }

    /// Waits until `n` request heads have been received.
    pub fn wait_for_requests(&self, n: usize) -> bool {
        wait_until(DEADLINE, || self.shared.state().requests.len() >= n)
    }

    /// Waits until `n` streams are open.
    pub fn wait_for_streams(&self, n: usize) -> bool {
        wait_until(DEADLINE, || self.open_streams() >= n)
    }

    /// Sends one chunk holding `data` on every open stream.
    pub fn push_chunk(&self, data: &[u8]) {
        let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
        frame.extend_from_slice(data);
        frame.extend_from_slice(b"\r\n");
        for s in &mut self.shared.state().streams {
            let _ = s.socket.write_all(&frame);
        }
    }

    /// Ends every open stream with the last chunk; connections whose request
    /// asked to close are closed after it.
    pub fn end_streams(&self) {
        let streams = std::mem::take(&mut self.shared.state().streams);
        for mut s in streams {
            let _ = s.socket.write_all(b"0\r\n\r\n");
            if s.close_after {
                let _ = s.socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// Closes every open stream's connection in the middle of the stream.
    pub fn cut_streams(&self) {
        let streams = std::mem::take(&mut self.shared.state().streams);
        for s in streams {
            let _ = s.socket.shutdown(Shutdown::Both);
        }
    }

    /// Stops listening, removes the socket file and closes every connection.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = fs::remove_file(&self.path);
        let mut state = self.shared.state();
        state.streams.clear();
        for s in state.sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same path (after [`FakeDaemon::stop`]); the
    /// records and counters carry on.
    pub fn restart(&mut self) {
        let _ = fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind fake daemon");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = Arc::clone(&stop);
        let shared = Arc::clone(&self.shared);
        self.acceptor = Some(thread::spawn(move || {
            accept_loop(&listener, &shared, &stop);
        }));
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<DaemonShared>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((socket, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = socket.set_nonblocking(false);
        let conn = {
            let mut state = shared.state();
            state.accepted += 1;
            if let Ok(clone) = socket.try_clone() {
                state.sockets.push(clone);
            }
            state.accepted - 1
        };
        let shared = Arc::clone(shared);
        thread::spawn(move || serve_connection(&shared, socket, conn));
    }
}

fn serve_connection(shared: &DaemonShared, mut socket: UnixStream, conn: usize) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    'read: loop {
        let n = match socket.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        shared.state().received.extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);

        while let Some(end) = find(&pending, b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let req = SeenRequest::parse(conn, head);
            shared.state().requests.push(req.clone());
            let responder = Arc::clone(
                &shared
                    .responder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if !answer(shared, &mut socket, conn, &req, responder(&req)) {
                break 'read;
            }
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
    let mut state = shared.state();
    state.closed += 1;
    state.streams.retain(|s| s.conn != conn);
}

/// Writes the reply; returns whether to keep reading the connection.
fn answer(
    shared: &DaemonShared,
    socket: &mut UnixStream,
    conn: usize,
    req: &SeenRequest,
    reply: Reply,
) -> bool {
    match reply {
        Reply::Ok => {
            let body = br#"{"ok":true}"#;
            let seen: String = req
                .line
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\
                 X-Seen: {seen}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if req.method != "HEAD" {
                out.extend_from_slice(body);
            }
            socket.write_all(&out).is_ok() && !req.wants_close()
        }
        Reply::Raw(bytes) => socket.write_all(&bytes).is_ok() && !req.wants_close(),
        Reply::RawThenClose(bytes) => {
            let _ = socket.write_all(&bytes);
            false
        }
        Reply::Stream => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Seen: {}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n",
                req.line
            );
            let first = b"{\"status\":\"first-event\"}\n";
            let mut out = head.into_bytes();
            let _ = write!(out, "{:x}\r\n", first.len());
            out.extend_from_slice(first);
            out.extend_from_slice(b"\r\n");
            if socket.write_all(&out).is_err() {
                return false;
            }
            if let Ok(clone) = socket.try_clone() {
                shared.state().streams.push(OpenStream {
                    conn,
                    socket: clone,
                    close_after: req.wants_close(),
                });
            }
            true
        }
        Reply::Close => false,
    }
}
