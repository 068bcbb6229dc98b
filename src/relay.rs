//! Relaying the daemon's responses to the client, one response per forwarded
//! request, in order.
//!
//! Bytes go through unchanged; the response head is parsed only to learn the
//! body's framing (`framing.rs`), so that the relay knows where each response
//! ends. That is what lets a refusal follow the responses before it, and the
//! idle limit apply only between responses, never inside a stream.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::buffer::Buffer;
use crate::framing::{Body, FramingError};
use crate::limits::{MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEAD_BYTES};

/// The first allocation of the response buffer; a typical JSON answer of a
/// few kilobytes fits, and a busy stream grows it.
const INITIAL_BYTES: usize = 4 * 1024;

/// How a relayed response left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The next response may follow on the same connections.
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
pub struct Relay {
    upstream: Arc<UnixStream>,
    client: Arc<UnixStream>,
    input: Buffer,
    written: u64,
}

impl Relay {
    /// A relay from `upstream` to `client`.
    pub fn new(upstream: Arc<UnixStream>, client: Arc<UnixStream>) -> Relay {
        Relay {
            upstream,
            client,
            input: Buffer::new(INITIAL_BYTES, MAX_RESPONSE_HEAD_BYTES),
            written: 0,
        }
    }

    /// The bytes written to the client since the last call.
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Switches to a new daemon connection (after the old one closed between
    /// requests).
    pub fn set_upstream(&mut self, upstream: Arc<UnixStream>) {
        self.upstream = upstream;
        self.input = Buffer::new(INITIAL_BYTES, MAX_RESPONSE_HEAD_BYTES);
    }

    /// Shuts the daemon connection in both directions, which ends a stream
    /// whose client is gone.
    pub fn shutdown_upstream(&self) {
        let _ = self.upstream.shutdown(std::net::Shutdown::Both);
    }

    /// Relays the whole response to one request (`head_request` for HEAD,
    /// whose response has no body), including any 1xx interim responses.
    pub fn relay_one(&mut self, head_request: bool) -> Result<Relayed, RelayError> {
        let mut answered = false;
        loop {
            let (head_len, status, mut body, close) = self.read_head(head_request, answered)?;
            if status == 101 {
                // The proxy never forwards Upgrade; a switch it did not ask
                // for would turn the connection into an unchecked tunnel.
                return Err(RelayError::Upstream {
                    problem: "the daemon switched protocols unasked".to_owned(),
                    answered,
                });
            }
            // The head and whatever of the body came with it go out in one
            // write: for a typical small JSON answer, the whole response.
            let interim = (100..200).contains(&status);
            let with_head = if interim {
                0
            } else {
                body.advance(&self.input.data()[head_len..])
                    .map_err(|e| framing_problem(&e, answered))?
            };
            self.write_client(head_len + with_head)?;
            answered = true;
            if interim {
                continue;
            }
            while !body.is_done() {
                if self.input.is_empty() {
                    match self.fill() {
                        Ok(0) if body == Body::UntilClose => return Ok(Relayed::Close),
                        Ok(0) => {
                            return Err(upstream_problem(
                                "the daemon closed the connection in the middle of a response",
                                true,
                            ))
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(upstream_problem(
                                &format!("reading from the daemon failed: {e}"),
                                true,
                            ))
                        }
                    }
                }
                let n = body
                    .advance(self.input.data())
                    .map_err(|e| framing_problem(&e, true))?;
                self.write_client(n)?;
            }
            return Ok(if close {
                Relayed::Close
            } else {
                Relayed::KeepAlive
            });
        }
    }

    /// Reads one response head; returns its length, status, body framing and
    /// whether the daemon closes after it.
    fn read_head(
        &mut self,
        head_request: bool,
        answered: bool,
    ) -> Result<(usize, u16, Body, bool), RelayError> {
        loop {
            if !self.input.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(self.input.data()) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = response.code.unwrap_or(0);
                        let body = Body::of_response(status, response.headers, head_request)
                            .map_err(|e| framing_problem(&e, answered))?;
                        let close = closes_after(response.version, response.headers)
                            || body == Body::UntilClose;
                        return Ok((len, status, body, close));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(upstream_problem(
                            &format!("the daemon sent an invalid response head ({e})"),
                            answered,
                        ))
                    }
                }
            }
            match self.fill() {
                Ok(0) if self.input.is_empty() => {
                    return Err(upstream_problem(
                        "the daemon closed the connection without answering",
                        answered,
                    ))
                }
                Ok(0) => {
                    return Err(upstream_problem(
                        "the daemon closed the connection inside a response head",
                        answered,
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                    return Err(upstream_problem(
                        &format!(
                            "the daemon sent a response head over {MAX_RESPONSE_HEAD_BYTES} bytes"
                        ),
                        answered,
                    ))
                }
                Err(e) => {
                    return Err(upstream_problem(
                        &format!("reading from the daemon failed: {e}"),
                        answered,
                    ))
                }
            }
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        loop {
            match self.input.fill(&mut &*self.upstream) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// Writes the first `n` buffered bytes to the client and consumes them.
    fn write_client(&mut self, n: usize) -> Result<(), RelayError> {
        (&*self.client)
            .write_all(&self.input.data()[..n])
            .map_err(RelayError::Client)?;
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
    let mut scratch = [0u8; 4096];
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
    use std::io::Read;
    use std::thread;

    /// Runs `relay_one` over a daemon that sends `response`, returning what the
    /// client received and the result.
    fn relay(
        response: &'static [u8],
        head_request: bool,
    ) -> (Vec<u8>, Result<Relayed, RelayError>) {
        let (daemon, upstream) = UnixStream::pair().unwrap();
        let (client, client_peer) = UnixStream::pair().unwrap();
        let writer = thread::spawn(move || {
            let mut daemon = daemon;
            daemon.write_all(response).unwrap();
        });
        let mut relay = Relay::new(Arc::new(upstream), Arc::new(client));
        let result = relay.relay_one(head_request);
        writer.join().unwrap();
        drop(relay);
        let mut received = Vec::new();
        (&client_peer).read_to_end(&mut received).unwrap();
        (received, result)
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
