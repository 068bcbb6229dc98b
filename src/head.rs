//! Reading request heads from a client, one at a time, with limits.
//!
//! The reader keeps whatever the client sent after a head: with keep-alive
//! and pipelining that is the next head, and it will be checked in its turn
//! (docs/POLICY.md rule 2). Nothing after a head is ever a body, because bodies
//! are refused. The buffer starts small and grows only up to
//! [`MAX_HEAD_BYTES`], so an idle connection holds little memory.

use std::io::{self, Read};
use std::time::Instant;

use crate::buffer::Buffer;
use crate::denial::{Denial, Reason};
use crate::limits::MAX_HEAD_BYTES;

/// The first allocation of a connection's buffer: room for a typical docker
/// CLI head.
const INITIAL_BYTES: usize = 1024;

/// Buffered input from one client.
#[derive(Debug)]
pub struct HeadReader {
    input: Buffer,
    /// How much of the buffered input has been searched for the end of a
    /// head, so that a head arriving a byte at a time is not searched again
    /// from its start on every byte.
    scanned: usize,
}

impl Default for HeadReader {
    fn default() -> HeadReader {
        HeadReader {
            input: Buffer::new(INITIAL_BYTES, MAX_HEAD_BYTES),
            scanned: 0,
        }
    }
}

/// What [`HeadReader::read_head`] ended with, other than a head.
#[derive(Debug)]
pub enum HeadError {
    /// The client closed (or half-closed) its side.
    Closed,
    /// The head is refused before parsing (too large, too slow).
    Refused(Denial),
    /// The socket failed.
    Io(io::Error),
}

/// A source of bytes whose read deadline can be set; a `UnixStream` in the
/// proxy, a scripted source in tests.
pub trait Source: Read {
    /// Sets how long the next `read` may block; `None` blocks forever.
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()>;
}

impl HeadReader {
    /// Whether bytes of a next head are already buffered.
    pub fn has_buffered(&self) -> bool {
        !self.input.is_empty()
    }

    /// Reads once into the buffer; `Ok(0)` at end of input.
    pub fn fill(&mut self, source: &mut impl Read) -> io::Result<usize> {
        self.input.fill(source)
    }

    /// The length of the next complete head if it is all buffered, without
    /// reading; a refusal if the buffer holds [`MAX_HEAD_BYTES`] without one.
    pub fn next_head(&mut self) -> Result<Option<usize>, Denial> {
        let data = self.input.data();
        if let Some(len) = head_length(data, self.scanned) {
            self.scanned = 0;
            return Ok(Some(len));
        }
        self.scanned = data.len();
        if data.len() >= MAX_HEAD_BYTES {
            return Err(too_large());
        }
        Ok(None)
    }

    /// Returns the length of the next complete head, reading until it is
    /// there. The whole head must arrive by `deadline`; `timeout_secs` is
    /// what the refusal says.
    pub fn read_head(
        &mut self,
        source: &mut impl Source,
        deadline: Instant,
        timeout_secs: u64,
    ) -> Result<usize, HeadError> {
        loop {
            if let Some(len) = self.next_head().map_err(HeadError::Refused)? {
                return Ok(len);
            }
            if Instant::now() >= deadline {
                return Err(HeadError::Refused(timed_out(timeout_secs)));
            }
            source.set_deadline(Some(deadline)).map_err(HeadError::Io)?;
            match self.input.fill(source) {
                Ok(0) => return Err(HeadError::Closed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    return Err(HeadError::Refused(timed_out(timeout_secs)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// The buffered bytes of the head that [`next_head`](Self::next_head)
    /// found.
    pub fn head(&self, len: usize) -> &[u8] {
        &self.input.data()[..len]
    }

    /// Gives the buffer's memory back if nothing is buffered.
    pub fn release_if_empty(&mut self) {
        self.input.release_if_empty();
    }

    /// Drops a head that has been dealt with.
    pub fn consume(&mut self, len: usize) {
        self.input.consume(len);
    }
}

/// Where the head in `data` ends, looking for the blank line from
/// `scanned - 3` on (so that a terminator split across reads is found).
/// A bare `LF LF` also ends a head, so that `request.rs` can refuse it by
/// name instead of the client waiting for a timeout.
fn head_length(data: &[u8], scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(3);
    let limit = data.len().min(MAX_HEAD_BYTES);
    (from..limit).find_map(|i| match &data[i..limit.min(i + 3)] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n'] => Some(i + 3),
        _ => None,
    })
}

/// Whether a read error is `SO_RCVTIMEO` expiring.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn too_large() -> Denial {
    Denial::new(
        Reason::HeadTooLarge,
        format!("the request head is larger than {MAX_HEAD_BYTES} bytes"),
    )
}

fn timed_out(secs: u64) -> Denial {
    Denial::new(
        Reason::HeaderTimeout,
        format!("the request head was not received within {secs} s"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Hands out its chunks one read at a time, then end of input.
    struct Script(Vec<Vec<u8>>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let chunk = &mut self.0[0];
            let n = chunk.len().min(out.len());
            out[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    impl Source for Script {
        fn set_deadline(&mut self, _: Option<Instant>) -> io::Result<()> {
            Ok(())
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn pipelined_heads_come_out_one_at_a_time() {
        let mut source = Script(vec![
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n".to_vec()
        ]);
        let mut reader = HeadReader::default();
        let first = reader.read_head(&mut source, later(), 1).unwrap();
        assert_eq!(reader.head(first), b"GET /a HTTP/1.1\r\n\r\n");
        reader.consume(first);
        assert!(reader.has_buffered());
        let second = reader.read_head(&mut source, later(), 1).unwrap();
        assert_eq!(reader.head(second), b"GET /b HTTP/1.1\r\n\r\n");
        reader.consume(second);
        assert!(!reader.has_buffered());
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        let parts = ["GET / HTTP/1.1\r", "\n", "\r", "\n"];
        let mut source = Script(parts.iter().map(|p| p.as_bytes().to_vec()).collect());
        let mut reader = HeadReader::default();
        let len = reader.read_head(&mut source, later(), 1).unwrap();
        assert_eq!(reader.head(len), b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        let mut source = Script(vec![big]);
        let mut reader = HeadReader::default();
        match reader.read_head(&mut source, later(), 1) {
            Err(HeadError::Refused(d)) => assert_eq!(d.reason, Reason::HeadTooLarge),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn head_of_exactly_the_limit_is_accepted() {
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD_BYTES - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        let mut source = Script(vec![head]);
        let mut reader = HeadReader::default();
        assert_eq!(
            reader.read_head(&mut source, later(), 1).unwrap(),
            MAX_HEAD_BYTES
        );
    }

    #[test]
    fn end_of_input_inside_a_head_is_reported_as_closed() {
        let mut source = Script(vec![b"GET / HT".to_vec()]);
        let mut reader = HeadReader::default();
        assert!(matches!(
            reader.read_head(&mut source, later(), 1),
            Err(HeadError::Closed)
        ));
    }

    #[test]
    fn past_deadline_is_a_timeout() {
        let mut source = Script(vec![b"GET / HT".to_vec()]);
        let mut reader = HeadReader::default();
        match reader.read_head(&mut source, Instant::now(), 7) {
            Err(HeadError::Refused(d)) => {
                assert_eq!(d.reason, Reason::HeaderTimeout);
                assert!(d.detail.contains("7 s"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_lf_terminator_ends_the_head_for_refusal() {
        assert_eq!(head_length(b"GET / HTTP/1.1\n\nX", 0), Some(16));
    }
}
