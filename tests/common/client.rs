//! [`Client`]: a minimal HTTP/1.1 client on the safe socket that reads one
//! [`Response`] at a time (Content-Length, chunked or close-delimited), the
//! way a Docker client does, with a deadline on every read.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{find, request, show, READ_TIMEOUT};

/// One HTTP response as the client read it.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line.
    pub status_line: String,
    /// Header lines (name, value) in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The exact bytes of the whole response.
    pub raw: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks that this is an error response shaped as the contract says:
    /// the status, `Content-Type: application/json`, a Content-Length that
    /// matches, `Connection: close`, and a body that is exactly
    /// `{"message": "..."}` whose message holds each of `mentions`.
    pub fn check_error(&self, statuses: &[u16], mentions: &[&str]) -> Result<(), String> {
        self.check_error_head(statuses)?;
        let what = format!("{} {}", self.status_line, show(&self.body));
        let length = self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        if length != Some(self.body.len()) {
            return Err(format!("Content-Length does not match the body: {what}"));
        }
        let Some(message) = json_message(&self.body) else {
            return Err(format!("body is not {{\"message\": \"...\"}}: {what}"));
        };
        for m in mentions {
            if !message.contains(m) {
                return Err(format!("message {message:?} does not mention {m:?}"));
            }
        }
        Ok(())
    }

    /// The part of [`Response::check_error`] that holds for an answer to
    /// HEAD, which has the headers of the JSON error but no body.
    pub fn check_error_head(&self, statuses: &[u16]) -> Result<(), String> {
        let what = format!("{} {}", self.status_line, show(&self.body));
        if !statuses.contains(&self.status) {
            return Err(format!(
                "status {} not in {statuses:?}: {what}",
                self.status
            ));
        }
        if self.header("content-type") != Some("application/json") {
            return Err(format!("Content-Type is not application/json: {what}"));
        }
        let close = self
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !close {
            return Err(format!("no Connection: close: {what}"));
        }
        if self.header("content-length").is_none() {
            return Err(format!("no Content-Length: {what}"));
        }
        Ok(())
    }
}

/// Parses a body that is exactly one JSON object with one string member
/// `message`, and returns the message.
pub fn json_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let rest = text.strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"message\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let (message, rest) = json_string(rest)?;
    (rest.trim() == "}").then_some(message)
}

/// Reads one JSON string at the start of `text`; returns it and the rest.
fn json_string(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &text[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|p| p.1)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other @ ('"' | '\\' | '/') => out.push(other),
                _ => return None,
            },
            c if u32::from(c) < 0x20 => return None,
            c => out.push(c),
        }
    }
    None
}

/// Why a read stopped early.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection; what was read of the response so far.
    Closed(Vec<u8>),
    /// Nothing came for the whole timeout; what was read so far.
    TimedOut(Vec<u8>),
}

/// A client connection to the safe socket, with its own read buffer.
pub struct Client {
    socket: UnixStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Connects to `path`.
    pub fn connect(path: &Path) -> Client {
        let socket = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        socket
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        Client {
            socket,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// Writes all of `bytes`. A write refused because the proxy already
    /// closed (it answered an error) is not a failure: the answer is what
    /// the test checks.
    pub fn send(&mut self, bytes: &[u8]) {
        match self.socket.write_all(bytes) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
            Err(e) => panic!("write to proxy: {e}"),
        }
    }

    /// Reads more bytes into the buffer, waiting up to `timeout`.
    /// Returns false at end of stream. A reset counts as end of stream: on
    /// unix sockets the kernel reports one when the proxy closes without
    /// reading all that was sent, after the data it wrote.
    fn fill(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 16 * 1024];
        match self.socket.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes sure at least `n` bytes are buffered.
    fn need(&mut self, n: usize, deadline: Instant) -> Result<(), ReadError> {
        while self.buf.len() < n {
            self.fill_before(deadline)?;
        }
        Ok(())
    }

    /// Reads until `needle` is buffered at or after `from`; returns where.
    fn need_find(
        &mut self,
        from: usize,
        needle: &[u8],
        deadline: Instant,
    ) -> Result<usize, ReadError> {
        loop {
            if let Some(at) = self.buf.get(from..).and_then(|b| find(b, needle)) {
                return Ok(from + at);
            }
            self.fill_before(deadline)?;
        }
    }

    fn fill_before(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::TimedOut(self.buf.clone()));
        }
        match self.fill(left) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReadError::Closed(self.buf.clone())),
            Err(_) => Err(ReadError::TimedOut(self.buf.clone())),
        }
    }

    /// Reads one response (to a request that was not HEAD).
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("no complete response: {e:?}"))
    }

    /// Reads one response to a HEAD request (no body, whatever the headers say).
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("no complete response: {e:?}"))
    }

    /// Reads one response, then everything until the other side closes,
    /// which is added to the body (and to `raw`): the answer to a request
    /// sent with `Connection: close`, with whatever came after it. Panics
    /// if either takes longer than [`READ_TIMEOUT`].
    pub fn read_last_response(&mut self, head_only: bool) -> Response {
        let mut response = self
            .try_read_response(head_only, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("no complete response: {e:?}"));
        let rest = self.read_to_close();
        response.body.extend_from_slice(&rest);
        response.raw.extend_from_slice(&rest);
        response
    }

    /// Reads one response, or says why it could not.
    pub fn try_read_response(
        &mut self,
        head_only: bool,
        timeout: Duration,
    ) -> Result<Response, ReadError> {
        let deadline = Instant::now() + timeout;
        let head_end = self.need_find(0, b"\r\n\r\n", deadline)? + 4;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_owned();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
            .collect();
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let chunked = value("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = value("content-length").and_then(|v| v.parse::<usize>().ok());

        let (body, end) = if head_only || status < 200 || status == 204 || status == 304 {
            (Vec::new(), head_end)
        } else if chunked {
            self.read_chunked(head_end, deadline)?
        } else if let Some(n) = length {
            self.need(head_end + n, deadline)?;
            (self.buf[head_end..head_end + n].to_vec(), head_end + n)
        } else {
            while self.fill_before(deadline).is_ok() {}
            if !self.eof {
                return Err(ReadError::TimedOut(self.buf.clone()));
            }
            (self.buf[head_end..].to_vec(), self.buf.len())
        };
        let raw: Vec<u8> = self.buf.drain(..end).collect();
        Ok(Response {
            status,
            status_line,
            headers,
            body,
            raw,
        })
    }

    fn read_chunked(
        &mut self,
        start: usize,
        deadline: Instant,
    ) -> Result<(Vec<u8>, usize), ReadError> {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let line_end = self.need_find(at, b"\r\n", deadline)?;
            let line = String::from_utf8_lossy(&self.buf[at..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ReadError::Closed(self.buf.clone()))?;
            at = line_end + 2;
            if size == 0 {
                // Trailer fields, then an empty line.
                loop {
                    let end = self.need_find(at, b"\r\n", deadline)?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        return Ok((body, at));
                    }
                }
            }
            self.need(at + size + 2, deadline)?;
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
        }
    }

    /// Reads until the proxy closes and returns everything not yet consumed.
    /// Panics if it does not close within [`READ_TIMEOUT`].
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill_before(deadline) {
                Ok(()) => {}
                Err(ReadError::Closed(_)) => return std::mem::take(&mut self.buf),
                Err(ReadError::TimedOut(got)) => panic!(
                    "proxy did not close the connection within {READ_TIMEOUT:?}; got {}",
                    show(&got)
                ),
            }
        }
    }

    /// Waits up to `timeout` for the proxy to close; returns any bytes that
    /// came first, or `Err` with them if it did not close in time.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill_before(deadline) {
                Ok(()) => {}
                Err(ReadError::Closed(got)) => {
                    self.buf.clear();
                    return Ok(got);
                }
                Err(ReadError::TimedOut(got)) => return Err(got),
            }
        }
    }

    /// Reads until `needle` has arrived (anywhere in what is buffered);
    /// returns false on close or timeout.
    pub fn read_until(&mut self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.need_find(0, needle, deadline).is_ok()
    }

    /// Everything buffered and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// Sends `raw` on a new connection to `socket` (the proxy's, or its stats
/// socket) and reads the answer until the other side closes, as
/// [`Client::read_last_response`] does: an answer without a body if `raw`
/// is a HEAD request.
pub fn request_once(socket: &Path, raw: &[u8]) -> Response {
    let mut client = Client::connect(socket);
    client.send(raw);
    client.read_last_response(raw.starts_with(b"HEAD "))
}

/// `method target` with a Host header and `Connection: close`, sent with
/// [`request_once`].
pub fn http(socket: &Path, method: &str, target: &str) -> Response {
    request_once(socket, &request(method, target, "Connection: close\r\n"))
}
