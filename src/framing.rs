//! Where one response from the daemon ends (RFC 9112 section 6.3).
//!
//! Responses are relayed byte for byte; the proxy only needs to know where
//! each one ends, to deliver a refusal after the responses before it, to
//! apply the idle limit only between responses, and to stop when the daemon
//! breaks its framing. [`Body`] follows the framing of one body as bytes pass
//! through, without copying or changing them.

use std::fmt;

/// How a response body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 1xx, 204, 304), or the body is complete.
    Done,
    /// This many bytes remain.
    Length(u64),
    /// A chunked body, at this point of its grammar.
    Chunked(Chunk),
    /// The body runs until the daemon closes the connection.
    UntilClose,
}

/// The position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the hex size; holds the value so far and the digit count.
    Size(u64, u8),
    /// After the size: whitespace or a chunk extension up to CR; holds the
    /// size and how many extension bytes were skipped.
    Extension(u64, u16),
    /// After the CR that ends the size line.
    SizeLf(u64),
    /// Inside chunk data; this many bytes remain.
    Data(u64),
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data and CR, expecting LF.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line, up to CR; holds its length so far.
    Trailer(u16),
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
}

/// The daemon's response broke its own framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The most hex digits in a chunk size (16 digits: up to 2^64 - 1).
const MAX_SIZE_DIGITS: u8 = 16;

impl Body {
    /// The framing of a response with `status` and `headers` to a request
    /// that was (or was not) `HEAD`.
    pub fn of_response(
        status: u16,
        headers: &[httparse::Header<'_>],
        head_request: bool,
    ) -> Result<Body, FramingError> {
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Body::Done);
        }
        let mut transfer_encoding = None;
        let mut length = None;
        for header in headers {
            if header.name.eq_ignore_ascii_case("Transfer-Encoding") {
                transfer_encoding = Some(header.value);
            } else if header.name.eq_ignore_ascii_case("Content-Length") {
                let value = parse_length(header.value)
                    .ok_or(FramingError("the daemon sent an invalid Content-Length"))?;
                if length.is_some_and(|l| l != value) {
                    return Err(FramingError("the daemon sent conflicting Content-Lengths"));
                }
                length = Some(value);
            }
        }
        Ok(match (transfer_encoding, length) {
            (Some(coding), _) if ends_in_chunked(coding) => Body::Chunked(Chunk::Size(0, 0)),
            (Some(_), _) => Body::UntilClose,
            (None, Some(0)) => Body::Done,
            (None, Some(n)) => Body::Length(n),
            (None, None) => Body::UntilClose,
        })
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        *self == Body::Done
    }

    /// How many of the next bytes are body data that the framing needs not
    /// see (the rest of a Content-Length body or of a chunk, or a body that
    /// runs until close); `None` when the next byte is framing.
    pub fn opaque_len(&self) -> Option<u64> {
        match self {
            Body::Length(remaining) | Body::Chunked(Chunk::Data(remaining)) => Some(*remaining),
            Body::UntilClose => Some(u64::MAX),
            Body::Done | Body::Chunked(_) => None,
        }
    }

    /// Accounts for `n` bytes of body data passed on unseen; `n` is at most
    /// [`Body::opaque_len`].
    pub fn skip_opaque(&mut self, n: u64) {
        match self {
            Body::Length(remaining) => {
                *remaining -= n.min(*remaining);
                if *remaining == 0 {
                    *self = Body::Done;
                }
            }
            Body::Chunked(state) => {
                if let Chunk::Data(remaining) = state {
                    *remaining -= n.min(*remaining);
                    if *remaining == 0 {
                        *state = Chunk::DataCr;
                    }
                }
            }
            Body::UntilClose | Body::Done => {}
        }
    }

    /// Follows the body over `data` and returns how many of its bytes belong
    /// to this body; the rest belongs to the next response.
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, FramingError> {
        match self {
            Body::Done => Ok(0),
            Body::UntilClose => Ok(data.len()),
            Body::Length(remaining) => {
                let taken = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                *remaining -= taken as u64;
                if *remaining == 0 {
                    *self = Body::Done;
                }
                Ok(taken)
            }
            Body::Chunked(state) => {
                let mut used = 0;
                while used < data.len() {
                    if let Chunk::Data(remaining) = state {
                        let taken = usize::try_from(*remaining)
                            .map_or(data.len() - used, |r| r.min(data.len() - used));
                        *remaining -= taken as u64;
                        used += taken;
                        if *remaining == 0 {
                            *state = Chunk::DataCr;
                        }
                        continue;
                    }
                    let next = step(*state, data[used])?;
                    used += 1;
                    if let Some(next) = next {
                        *state = next;
                    } else {
                        *self = Body::Done;
                        return Ok(used);
                    }
                }
                Ok(used)
            }
        }
    }
}

/// The longest chunk extension or trailer line followed; dockerd sends
/// neither.
const MAX_LINE: u16 = 4096;

/// One byte of chunked framing outside chunk data; `None` when the body ends.
fn step(state: Chunk, b: u8) -> Result<Option<Chunk>, FramingError> {
    let next = match (state, b) {
        (Chunk::Size(value, digits), _) if b.is_ascii_hexdigit() => {
            if digits == MAX_SIZE_DIGITS {
                return Err(FramingError("the daemon sent an oversized chunk size"));
            }
            let digit = char::from(b).to_digit(16).map_or(0, u64::from);
            Chunk::Size(value << 4 | digit, digits + 1)
        }
        (Chunk::Size(_, 0), _) => {
            return Err(FramingError("the daemon sent a chunk without a size"))
        }
        (Chunk::Size(value, _), b'\r') => Chunk::SizeLf(value),
        (Chunk::Size(value, _), b';' | b' ' | b'\t') => Chunk::Extension(value, 0),
        (Chunk::Extension(value, _), b'\r') => Chunk::SizeLf(value),
        (Chunk::Extension(value, len), _) if b != b'\n' && len < MAX_LINE => {
            Chunk::Extension(value, len + 1)
        }
        (Chunk::SizeLf(0), b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf(value), b'\n') => Chunk::Data(value),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size(0, 0),
        (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
        (Chunk::TrailerStart, _) if b != b'\n' => Chunk::Trailer(1),
        (Chunk::Trailer(_), b'\r') => Chunk::TrailerLf,
        (Chunk::Trailer(len), _) if b != b'\n' && len < MAX_LINE => Chunk::Trailer(len + 1),
        (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
        (Chunk::FinalLf, b'\n') => return Ok(None),
        _ => return Err(FramingError("the daemon broke chunked framing")),
    };
    Ok(Some(next))
}

/// Whether the last transfer coding is `chunked` (RFC 9112 section 6.3,
/// point 4); Go matches it case-insensitively.
fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_opaque_bytes_ends_where_reading_them_would() {
        let mut seen = Body::Length(10);
        let mut skipped = Body::Length(10);
        assert_eq!(skipped.opaque_len(), Some(10));
        seen.advance(&[0; 4]).unwrap();
        skipped.skip_opaque(4);
        assert_eq!(seen, skipped);
        skipped.skip_opaque(6);
        assert!(skipped.is_done());

        let mut chunked = Body::Chunked(Chunk::Size(0, 0));
        assert_eq!(chunked.opaque_len(), None, "a chunk size is framing");
        chunked.advance(b"5\r\n").unwrap();
        assert_eq!(chunked.opaque_len(), Some(5));
        chunked.skip_opaque(5);
        assert_eq!(
            chunked.opaque_len(),
            None,
            "the CRLF after the data is framing"
        );
        assert_eq!(chunked.advance(b"\r\n0\r\n\r\n").unwrap(), 7);
        assert!(chunked.is_done());

        assert_eq!(Body::UntilClose.opaque_len(), Some(u64::MAX));
        assert_eq!(Body::Done.opaque_len(), None);
    }

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    /// Feeds `data` in pieces of `step` bytes; returns the bytes consumed
    /// when the body ended.
    fn consumed(mut body: Body, data: &[u8], step: usize) -> Result<Option<usize>, FramingError> {
        let mut used = 0;
        while used < data.len() {
            let end = (used + step).min(data.len());
            used += body.advance(&data[used..end])?;
            if body.is_done() {
                return Ok(Some(used));
            }
            if used < end {
                unreachable!("a body that is not done takes all it is given");
            }
        }
        Ok(None)
    }

    #[test]
    fn head_1xx_204_304_have_no_body() {
        let cl = [header("Content-Length", "10")];
        assert_eq!(Body::of_response(200, &cl, true).unwrap(), Body::Done);
        for status in [100, 204, 304] {
            assert_eq!(Body::of_response(status, &cl, false).unwrap(), Body::Done);
        }
    }

    #[test]
    fn chunked_beats_content_length() {
        let headers = [
            header("Content-Length", "3"),
            header("Transfer-Encoding", "Chunked"),
        ];
        assert!(matches!(
            Body::of_response(200, &headers, false).unwrap(),
            Body::Chunked(_)
        ));
        let not_last = [header("Transfer-Encoding", "chunked, gzip")];
        assert_eq!(
            Body::of_response(200, &not_last, false).unwrap(),
            Body::UntilClose
        );
    }

    #[test]
    fn conflicting_or_invalid_lengths_are_errors() {
        let two = [header("Content-Length", "3"), header("Content-Length", "4")];
        assert!(Body::of_response(200, &two, false).is_err());
        let bad = [header("Content-Length", "-1")];
        assert!(Body::of_response(200, &bad, false).is_err());
    }

    #[test]
    fn length_body_stops_at_its_end_leaving_the_next_response() {
        let body = Body::of_response(200, &[header("Content-Length", "5")], false).unwrap();
        assert_eq!(consumed(body, b"helloHTTP/1.1 200", 3).unwrap(), Some(5));
    }

    #[test]
    fn chunked_body_ends_after_last_chunk_and_trailers_at_any_split() {
        let data =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..data.len() {
            let body = Body::Chunked(Chunk::Size(0, 0));
            assert_eq!(
                consumed(body, data, step).unwrap(),
                Some(data.len() - 4),
                "step {step}"
            );
        }
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        for data in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            let mut body = Body::Chunked(Chunk::Size(0, 0));
            assert!(
                body.advance(data).is_err(),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn stream_without_length_runs_until_close() {
        let mut body = Body::of_response(200, &[], false).unwrap();
        assert_eq!(body.advance(b"anything").unwrap(), 8);
        assert!(!body.is_done());
    }
}
