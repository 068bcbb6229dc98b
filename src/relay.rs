//! Relaying the daemon's responses to the client, one response per forwarded
//! request, in order.
//!
//! Bytes go through unchanged; the response head is parsed only to learn the
//! body's framing (`framing.rs`), so that the relay knows where each response
//! ends. That is what lets a refusal follow the responses before it, and the
//! idle limit apply only between responses, never inside a stream.
//!
//! [`Responses`] is driven by the connection's loop: it reads from the daemon
//! (in a blocking read for a prompt answer, after `poll(2)` otherwise) and
//! relays whatever part of the current response that gave; a long stretch
//! of body goes from the daemon to the client with `splice(2)` instead.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::buffer::Buffer;
use crate::framing::{Body, FramingError};
use crate::limits::{MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEAD_BYTES};
use crate::sys::{self, SplicePipe};

/// The first allocation of the response buffer: a JSON answer of a few
/// kilobytes (head and body) fits in one read, and a busy stream grows it.
/// With 4 KiB, a 4.5 kB `/containers/json` answer took two reads, two
/// writes and a second wake-up of the thread (2.45 polls per request under
/// h2load, against 2 now), which cost about a tenth of the keep-alive rate.
const INITIAL_BYTES: usize = 16 * 1024;

/// Bodies with less than this left are read into the buffer: two splice
/// calls cost more than a read and a write of a few kilobytes.
const SPLICE_MIN: u64 = 64 * 1024;

/// Why bytes moved with splice(2) did not arrive.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading from the daemon failed (`WouldBlock`: nothing came within
    /// the read timeout).
    Upstream(io::Error),
    /// Writing to the client failed: it is gone.
    Client(io::Error),
}

/// How a relayed response left the daemon connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The next response may follow on the same connection.
    KeepAlive,
    /// The daemon ends the connection after this response (`Connection:
    /// close`, HTTP/1.0, or a body delimited by closing).
    Close,
}

/// Why a response could not be relayed.
#[derive(Debug)]
pub enum RelayError {
    /// The daemon closed, failed or broke framing. `answered` says whether any
    /// byte of this response already reached the client (if not, the client
    /// can still be sent a 502).
    Upstream {
        /// What went wrong.
        problem: String,
        /// Whether the client has seen part of this response.
        answered: bool,
    },
    /// Writing to the client failed: it is gone.
    Client(io::Error),
}

/// The response side of one client connection.
#[derive(Debug)]
pub struct Responses {
    input: Buffer,
    /// The framing of the current response's body, once its head is relayed.
    body: Option<Body>,
    /// Whether the daemon closes after the current response.
    close: bool,
    /// Whether any byte of the current response reached the client.
    answered: bool,
    written: u64,
    /// How long a client may take no bytes before it counts as gone.
    client_stall: Duration,
    /// The pipe that long bodies go through, made at the first one.
    pipe: Pipe,
}

/// The splice pipe of a connection.
#[derive(Debug)]
enum Pipe {
    /// No long body yet.
    NotYet,
    Ready(SplicePipe),
    /// None could be had, or only one too small to beat copying (the
    /// user's pipe quota is spent): long bodies go through the buffer.
    Unavailable,
}

impl Responses {
    /// Nothing relayed yet; a client that takes no bytes for `client_stall`
    /// while an answer is written to it is gone.
    pub fn new(client_stall: Duration) -> Responses {
        Responses {
            input: Buffer::new(INITIAL_BYTES, MAX_RESPONSE_HEAD_BYTES),
            body: None,
            close: false,
            answered: false,
            written: 0,
            client_stall,
            pipe: Pipe::NotYet,
        }
    }

    /// Forgets everything buffered: the daemon connection was replaced. The
    /// splice pipe stays (every move empties it), and so does the finding
    /// that none can be had: the client socket's send timeout is set once.
    pub fn reset(&mut self) {
        *self = Responses {
            written: self.written,
            pipe: std::mem::replace(&mut self.pipe, Pipe::NotYet),
            ..Responses::new(self.client_stall)
        };
    }

    /// Gives the buffer's memory back if nothing is buffered.
    pub fn release_if_empty(&mut self) {
        self.input.release_if_empty();
    }

    /// The bytes written to the client since the last call.
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Whether part of the current response has been relayed.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Reads once from the daemon; `Ok(0)` at end of input.
    pub fn fill(&mut self, upstream: &UnixStream) -> io::Result<usize> {
        loop {
            match self.input.fill(&mut &*upstream) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// How many bytes of the current body can go straight from the daemon to
    /// the client with [`Responses::splice`]: some of a long stretch of body
    /// data that the framing needs not see, when nothing is buffered. `None`
    /// when the next bytes must be read into the buffer (a head, chunk
    /// framing, a short rest), or no pipe can be had.
    ///
    /// The first time, it makes the pipe and gives `client` a send timeout
    /// of the client stall limit: a move into the client's socket blocks
    /// while its buffer is full, and a client that reads nothing must not
    /// hold the thread.
    pub fn splice_len(&mut self, client: &UnixStream) -> Option<usize> {
        if !self.input.is_empty() {
            return None;
        }
        let left = self.body.as_ref()?.opaque_len()?;
        if left < SPLICE_MIN {
            return None;
        }
        if let Pipe::NotYet = self.pipe {
            // Out of descriptors, say: the buffer does the job, slower.
            self.pipe = match sys::splice_pipe() {
                Ok(pipe)
                    if pipe.capacity as u64 >= SPLICE_MIN
                        && client.set_write_timeout(Some(self.client_stall)).is_ok() =>
                {
                    Pipe::Ready(pipe)
                }
                _ => Pipe::Unavailable,
            };
        }
        let Pipe::Ready(pipe) = &self.pipe else {
            return None;
        };
        Some(usize::try_from(left).map_or(pipe.capacity, |left| left.min(pipe.capacity)))
    }

    /// Moves up to `len` bytes of the current body (at most
    /// [`Responses::splice_len`]) from the daemon to the client through the
    /// pipe, without copying them into the process: it does for a stream
    /// what a read into the buffer and [`Responses::advance`] do, byte for
    /// byte. Returns how many moved; `Ok(0)` when the daemon closed. Call
    /// it only with a length that `splice_len` gave.
    pub fn splice(
        &mut self,
        upstream: &UnixStream,
        client: &UnixStream,
        len: usize,
    ) -> Result<usize, SpliceError> {
        let (Pipe::Ready(pipe), Some(body)) = (&self.pipe, &mut self.body) else {
            return Ok(0);
        };
        let moved = sys::splice_from_socket(upstream.as_fd(), pipe.into.as_fd(), len)
            .map_err(SpliceError::Upstream)?;
        if moved > 0 {
            sys::splice_to_socket(pipe.out.as_fd(), client.as_fd(), moved, self.client_stall)
                .map_err(SpliceError::Client)?;
            body.skip_opaque(moved as u64);
            self.answered = true;
            self.written += moved as u64;
        }
        Ok(moved)
    }

    /// Relays what is buffered of the response to the oldest outstanding
    /// request (`head_request` for HEAD, whose response has no body).
    /// Returns how the response ended, or `None` if more input is needed.
    pub fn advance(
        &mut self,
        head_request: bool,
        client: &UnixStream,
    ) -> Result<Option<Relayed>, RelayError> {
        loop {
            let Some(body) = &mut self.body else {
                if !self.relay_head(head_request, client)? {
                    return Ok(None);
                }
                continue;
            };
            if body.is_done() {
                return Ok(Some(self.finish()));
            }
            if self.input.is_empty() {
                return Ok(None);
            }
            let answered = self.answered;
            let n = body
                .advance(self.input.data())
                .map_err(|e| framing_problem(&e, answered))?;
            self.write_client(client, n)?;
        }
    }

    /// The daemon closed its side. A body delimited by closing is complete
    /// now; anything else was cut short.
    pub fn end_of_input(&mut self) -> Result<Relayed, RelayError> {
        if self.body == Some(Body::UntilClose) {
            return Ok(self.finish());
        }
        let problem = if self.answered {
            "the daemon closed the connection in the middle of a response"
        } else {
            "the daemon closed the connection without answering"
        };
        Err(upstream_problem(problem, self.answered))
    }

    /// Relays one response head, with whatever of the body came with it, in
    /// one write. Returns false if the head is not complete yet.
    fn relay_head(&mut self, head_request: bool, client: &UnixStream) -> Result<bool, RelayError> {
        if self.input.is_empty() {
            return Ok(false);
        }
        // Uninitialised, as in request.rs: httparse writes what it returns.
        let mut headers =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            self.input.data(),
            &mut headers,
        );
        let head_len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.input.data().len() >= MAX_RESPONSE_HEAD_BYTES => {
                return Err(upstream_problem(
                    &format!(
                        "the daemon sent a response head over {MAX_RESPONSE_HEAD_BYTES} bytes"
                    ),
                    self.answered,
                ))
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(e) => {
                return Err(upstream_problem(
                    &format!("the daemon sent an invalid response head ({e})"),
                    self.answered,
                ))
            }
        };
        let status = response.code.unwrap_or(0);
        if status == 101 {
            // The proxy never forwards Upgrade; a switch it did not ask for
            // would turn the connection into an unchecked tunnel.
            return Err(upstream_problem(
                "the daemon switched protocols unasked",
                self.answered,
            ));
        }
        let mut body = Body::of_response(status, response.headers, head_request)
            .map_err(|e| framing_problem(&e, self.answered))?;
        let close = closes_after(response.version, response.headers) || body == Body::UntilClose;

        if (100..200).contains(&status) {
            // An interim response: relay it and wait for the final one.
            self.write_client(client, head_len)?;
            return Ok(true);
        }
        let with_head = body
            .advance(&self.input.data()[head_len..])
            .map_err(|e| framing_problem(&e, self.answered))?;
        self.write_client(client, head_len + with_head)?;
        self.body = Some(body);
        self.close = close;
        Ok(true)
    }

    fn finish(&mut self) -> Relayed {
        self.body = None;
        self.answered = false;
        if std::mem::take(&mut self.close) {
            Relayed::Close
        } else {
            Relayed::KeepAlive
        }
    }

    /// Writes the first `n` buffered bytes to the client and consumes them.
    fn write_client(&mut self, client: &UnixStream, n: usize) -> Result<(), RelayError> {
        if n == 0 {
            return Ok(());
        }
        sys::send_all(client.as_fd(), &self.input.data()[..n], self.client_stall)
            .map_err(RelayError::Client)?;
        self.answered = true;
        self.written += n as u64;
        self.input.consume(n);
        Ok(())
    }
}

/// Whether the daemon will close after this response (RFC 9112 section 9.3).
fn closes_after(version: Option<u8>, headers: &[httparse::Header<'_>]) -> bool {
    let mut close = version == Some(0);
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Connection"))
    {
        for token in header.value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                return true;
            }
            if token.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    close
}

fn upstream_problem(problem: &str, answered: bool) -> RelayError {
    RelayError::Upstream {
        problem: problem.to_owned(),
        answered,
    }
}

fn framing_problem(error: &FramingError, answered: bool) -> RelayError {
    upstream_problem(&error.to_string(), answered)
}

/// Reads and discards what the client still sends, for a bounded time and
/// amount, after its error reply was written and our side of the connection
/// was shut for writing. Closing a unix socket with unread input makes the
/// peer's next read fail with a reset; a `docker run` still sending its body
/// would then print a broken pipe instead of the refusal.
pub fn linger(client: &UnixStream) {
    use crate::limits::{LINGER_BYTES, LINGER_SECS};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(LINGER_SECS);
    // On the heap: a page of stack touched here would stay resident in the
    // pooled thread for every connection it serves later.
    let mut scratch = vec![0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || client.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*client).read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::thread;

    /// Relays one response from a daemon that sends `response` in pieces of
    /// `piece` bytes, then closes; returns what the client received and how
    /// the response ended.
    fn relay_in_pieces(
        response: &'static [u8],
        head_request: bool,
        piece: usize,
    ) -> (Vec<u8>, Result<Relayed, RelayError>) {
        let (daemon, upstream) = UnixStream::pair().unwrap();
        let (client, client_peer) = UnixStream::pair().unwrap();
        let writer = thread::spawn(move || {
            let mut daemon = daemon;
            for chunk in response.chunks(piece) {
                daemon.write_all(chunk).unwrap();
                thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let mut responses = Responses::new(std::time::Duration::from_secs(30));
        let result = loop {
            match responses.advance(head_request, &client) {
                Ok(Some(done)) => break Ok(done),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            match responses.fill(&upstream) {
                Ok(0) => break responses.end_of_input(),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        };
        writer.join().unwrap();
        drop(client);
        let mut received = Vec::new();
        (&client_peer).read_to_end(&mut received).unwrap();
        (received, result)
    }

    fn relay(
        response: &'static [u8],
        head_request: bool,
    ) -> (Vec<u8>, Result<Relayed, RelayError>) {
        relay_in_pieces(response, head_request, usize::MAX)
    }

    #[test]
    fn a_replaced_daemon_connection_keeps_the_splice_pipe_and_its_absence() {
        let mut responses = Responses::new(std::time::Duration::from_secs(30));
        responses.pipe = Pipe::Ready(sys::splice_pipe().unwrap());
        responses.reset();
        assert!(matches!(responses.pipe, Pipe::Ready(_)));
        responses.pipe = Pipe::Unavailable;
        responses.reset();
        assert!(matches!(responses.pipe, Pipe::Unavailable));
    }

    #[test]
    fn one_response_is_relayed_byte_for_byte_and_no_more() {
        let (received, result) = relay(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokHTTP/1.1 200 OK\r\n",
            false,
        );
        assert_eq!(
            received,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"
        );
        assert_eq!(result.unwrap(), Relayed::KeepAlive);
    }

    #[test]
    fn response_split_into_single_bytes_is_relayed_whole() {
        let sent = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (received, result) = relay_in_pieces(sent, false, 1);
        assert_eq!(received, sent);
        assert_eq!(result.unwrap(), Relayed::KeepAlive);
    }

    #[test]
    fn head_response_ends_after_its_head() {
        let (received, result) = relay(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true);
        assert_eq!(received, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(result.unwrap(), Relayed::KeepAlive);
    }

    #[test]
    fn chunked_response_is_relayed_with_its_framing() {
        let sent = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (received, result) = relay(sent, false);
        assert_eq!(received, sent);
        assert_eq!(result.unwrap(), Relayed::KeepAlive);
    }

    #[test]
    fn interim_response_is_followed_by_the_final_one() {
        let sent = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (received, _) = relay(sent, false);
        assert_eq!(received, sent);
    }

    #[test]
    fn connection_close_from_the_daemon_is_noticed() {
        let (_, result) = relay(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(result.unwrap(), Relayed::Close);
    }

    #[test]
    fn body_until_close_ends_at_the_daemons_close() {
        let (received, result) = relay(b"HTTP/1.0 200 OK\r\n\r\nstream", false);
        assert_eq!(received, b"HTTP/1.0 200 OK\r\n\r\nstream");
        assert_eq!(result.unwrap(), Relayed::Close);
    }

    #[test]
    fn daemon_closing_before_answering_is_unanswered_upstream_error() {
        let (received, result) = relay(b"", false);
        assert!(received.is_empty());
        assert!(matches!(
            result,
            Err(RelayError::Upstream {
                answered: false,
                ..
            })
        ));
    }

    #[test]
    fn daemon_closing_mid_body_is_answered_upstream_error() {
        let (_, result) = relay(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false);
        assert!(matches!(
            result,
            Err(RelayError::Upstream { answered: true, .. })
        ));
    }

    #[test]
    fn unasked_protocol_switch_is_refused_without_relaying() {
        let (received, result) = relay(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n\r\n",
            false,
        );
        assert!(received.is_empty());
        assert!(matches!(result, Err(RelayError::Upstream { .. })));
    }
}
