//! A read buffer that starts small, grows only when it must, and keeps the
//! bytes not consumed yet for the next read.
//!
//! Both directions use it: request heads from the client (`head.rs`) and
//! responses from the daemon (`relay.rs`). Memory is taken at the first read,
//! so a connection that never reads holds none, and an idle keep-alive
//! connection holds only its first small allocation.

use std::io::{self, Read};

/// Buffered input from one socket.
#[derive(Debug)]
pub struct Buffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    initial: usize,
    max: usize,
    /// The last read filled every free byte: a busy stream, worth a larger
    /// buffer and fewer system calls.
    filled_last_time: bool,
}

impl Buffer {
    /// A buffer that allocates `initial` bytes at its first read and grows up
    /// to `max`.
    pub fn new(initial: usize, max: usize) -> Buffer {
        Buffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            initial,
            max,
            filled_last_time: false,
        }
    }

    /// The bytes read and not consumed yet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether no unconsumed bytes are held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives the memory back if nothing is buffered, so that an idle
    /// connection holds none; the next read allocates anew.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.filled_last_time = false;
        }
    }

    /// Reads once, appending to the unconsumed bytes; `Ok(0)` at end of
    /// input. Fails with `ErrorKind::OutOfMemory` when `max` unconsumed bytes
    /// are already held.
    pub fn fill(&mut self, source: &mut impl Read) -> io::Result<usize> {
        if self.start > 0 && (self.end == self.buf.len() || self.filled_last_time) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() || (self.filled_last_time && self.buf.len() < self.max) {
            let grown = (self.buf.len() * 2).clamp(self.initial, self.max);
            if grown <= self.end {
                return Err(io::Error::from(io::ErrorKind::OutOfMemory));
            }
            self.buf.resize(grown, 0);
        }
        let n = source.read(&mut self.buf[self.end..])?;
        self.filled_last_time = self.end + n == self.buf.len();
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allocated_before_the_first_read() {
        let buffer = Buffer::new(1024, 4096);
        assert_eq!(buffer.buf.capacity(), 0);
    }

    #[test]
    fn unconsumed_bytes_survive_later_reads() {
        let mut buffer = Buffer::new(4, 16);
        let mut source: &[u8] = b"abcdefgh";
        buffer.fill(&mut source).unwrap();
        assert_eq!(buffer.data(), b"abcd");
        buffer.consume(2);
        buffer.fill(&mut source).unwrap();
        assert_eq!(buffer.data(), b"cdefgh");
    }

    #[test]
    fn an_empty_buffer_gives_its_memory_back_and_a_full_one_keeps_it() {
        let mut buffer = Buffer::new(4, 16);
        let mut source: &[u8] = b"abcdef";
        buffer.fill(&mut source).unwrap();
        buffer.release_if_empty();
        assert_eq!(buffer.data(), b"abcd");
        buffer.consume(4);
        buffer.release_if_empty();
        assert_eq!(buffer.buf.capacity(), 0);
        buffer.fill(&mut source).unwrap();
        assert_eq!(buffer.data(), b"ef");
    }

    #[test]
    fn growth_stops_at_the_maximum() {
        let mut buffer = Buffer::new(4, 8);
        let mut source: &[u8] = &[7; 100];
        buffer.fill(&mut source).unwrap();
        buffer.fill(&mut source).unwrap();
        assert_eq!(buffer.data().len(), 8);
        let error = buffer.fill(&mut source).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
    }

    #[test]
    fn a_busy_stream_gets_a_larger_buffer() {
        let mut buffer = Buffer::new(4, 64);
        let mut source: &[u8] = &[1; 100];
        buffer.fill(&mut source).unwrap();
        let n = buffer.data().len();
        buffer.consume(n);
        assert_eq!(buffer.fill(&mut source).unwrap(), 8);
    }
}
