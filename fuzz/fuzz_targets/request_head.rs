//! Fuzz target `request_head`: arbitrary client bytes through the request-head
//! reader and the decision, in the order a live connection takes them
//! (`src/connection.rs`), with properties checked on every head.
//!
//! The first input byte chooses how many bytes each read hands out, so that
//! heads and their terminators are split across reads; the rest is what the
//! client sends. The heads go to two connections at once: one with the
//! built-in whitelist, one with a whitelist that allows every path, so that
//! the rewrite is exercised for every path the target rules let through.
//! Each stops at its first refusal or at a request that closes, as a live
//! connection does.
//!
//! A property violation panics with a message that names the property and
//! shows the bytes involved.

#![no_main]

use std::io::{self, Read};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use docker_filter::denial::{Denial, Reason};
use docker_filter::forward::write_head;
use docker_filter::head::{HeadError, HeadReader, Source};
use docker_filter::limits::MAX_HEAD_BYTES;
use docker_filter::policy::{decide, Allowed};
use docker_filter::reply::error_response;
use docker_filter::request::Method;
use docker_filter::whitelist::Whitelist;
use libfuzzer_sys::fuzz_target;

/// Headers that must never reach the daemon, whatever the client sent.
const NEVER_FORWARDED: [&str; 5] = [
    "Transfer-Encoding",
    "Upgrade",
    "Content-Length",
    "Expect",
    "X-Registry-Auth",
];

/// Every header the proxy may write: `Host`, the forwarded ones and its own
/// `Connection: close`.
const MAY_BE_WRITTEN: [&str; 5] = [
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Connection",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let mut source = Pieces {
        rest: input,
        piece: piece_size(first),
    };
    let mut reader = HeadReader::default();
    let deadline = Instant::now() + Duration::from_hours(24);
    let mut offset = 0;
    // One connection per whitelist: like `connection.rs`, each stops at its
    // first refusal or at a request that closes.
    let mut open = [true, true];
    loop {
        let expected = expected_head(&input[offset..]);
        match reader.read_head(&mut source, deadline, 86_400) {
            Ok(len) => {
                let head = reader.head(len);
                assert_eq!(
                    Expected::Head(len),
                    expected,
                    "the head reader split the stream at a different place than its first \
                     blank line (piece size {}): {}",
                    source.piece,
                    shown(&input[offset..]),
                );
                assert_eq!(
                    head,
                    &input[offset..offset + len],
                    "the head reader changed bytes"
                );
                let [builtin, any] = whitelists();
                let decided = [decide(head, builtin), decide(head, any)];
                check_whitelist_only_matches_paths(head, &decided);
                for ((decision, list), open) in decided.iter().zip(whitelists()).zip(&mut open) {
                    if *open {
                        *open = check_decision(head, decision, list);
                    }
                }
                if open == [false, false] {
                    break;
                }
                reader.consume(len);
                offset += len;
            }
            Err(HeadError::Closed) => {
                assert_eq!(
                    expected,
                    Expected::Closed,
                    "the head reader reported end of input where a head or a refusal was due: {}",
                    shown(&input[offset..])
                );
                break;
            }
            Err(HeadError::Refused(denial)) => {
                assert_eq!(
                    expected,
                    Expected::TooLarge,
                    "the head reader refused ({denial}) where a head or end of input was due: {}",
                    shown(&input[offset..])
                );
                check_refusal(&denial);
                break;
            }
            Err(HeadError::Io(e)) => panic!("the in-memory source cannot fail, yet: {e}"),
        }
    }
});

/// The client's bytes, at most `piece` of them per read.
struct Pieces<'a> {
    rest: &'a [u8],
    piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.rest.len().min(out.len()).min(self.piece);
        out[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

impl Source for Pieces<'_> {
    fn set_deadline(&mut self, _: Option<Instant>) -> io::Result<()> {
        Ok(())
    }
}

/// 0: everything in one read; 1 to 127: that many bytes; 128 to 255: steps
/// of 128 bytes, up to the head limit.
fn piece_size(first: u8) -> usize {
    match first {
        0 => usize::MAX,
        1..=127 => usize::from(first),
        _ => usize::from(first - 127) * 128,
    }
}

/// The built-in whitelist, and one that allows every path.
fn whitelists() -> &'static [Whitelist; 2] {
    static LISTS: OnceLock<[Whitelist; 2]> = OnceLock::new();
    LISTS.get_or_init(|| {
        [
            Whitelist::builtin(),
            Whitelist::parse("any", ".*").expect("the allow-all whitelist is valid"),
        ]
    })
}

/// What the head reader must produce from `rest`, worked out on the whole
/// input at once: the first blank line (CRLF CRLF, or LF LF so that bare LF
/// can be refused by name) ends a head, which may not exceed the limit.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Head(usize),
    TooLarge,
    Closed,
}

fn expected_head(rest: &[u8]) -> Expected {
    let end = (0..rest.len()).find_map(|i| match &rest[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    });
    match end {
        Some(len) if len <= MAX_HEAD_BYTES => Expected::Head(len),
        _ if rest.len() >= MAX_HEAD_BYTES => Expected::TooLarge,
        _ => Expected::Closed,
    }
}

/// Checks one decision, whichever way it went; returns whether the
/// connection goes on to the next head.
fn check_decision(
    head: &[u8],
    decision: &Result<Allowed<'_, '_>, Denial>,
    list: &Whitelist,
) -> bool {
    match decision {
        Ok(allowed) => {
            check_allowed(head, allowed, list);
            !allowed.request.close
        }
        Err(denial) => {
            check_refusal(denial);
            false
        }
    }
}

/// The whitelist decides on the path alone: the built-in list and the
/// allow-all one agree on every head, except that a path the built-in list
/// does not hold is refused by it (and then the query rule is not reached).
/// No canonical path escapes `.*`.
fn check_whitelist_only_matches_paths(
    head: &[u8],
    [builtin, any]: &[Result<Allowed<'_, '_>, Denial>; 2],
) {
    let reason = |d: &Result<Allowed<'_, '_>, Denial>| d.as_ref().err().map(|d| d.reason);
    assert_ne!(
        reason(any),
        Some(Reason::NotWhitelisted),
        "the allow-all whitelist refused a path: {}",
        shown(head)
    );
    let agree = match (builtin, any) {
        (Ok(a), Ok(b)) => a.request == b.request,
        (Err(a), _) if a.reason == Reason::NotWhitelisted => {
            any.is_ok() || reason(any) == Some(Reason::QueryParameter)
        }
        (Err(a), Err(b)) => a.reason == b.reason,
        _ => false,
    };
    assert!(
        agree,
        "the two whitelists decide differently on something other than the path:\n  \
         built-in:  {:?}\n  allow-all: {:?}\n  head: {}",
        builtin.as_ref().map(|a| &a.request),
        any.as_ref().map(|a| &a.request),
        shown(head)
    );
}

/// The properties of an allowed head and of what the proxy writes for it.
fn check_allowed(head: &[u8], allowed: &Allowed<'_, '_>, list: &Whitelist) {
    let request = &allowed.request;
    let mut out = Vec::new();
    write_head(request, &mut out);
    let context = || {
        format!(
            "\n  whitelist: {}\n  client head: {}\n  forwarded:   {}",
            list.source(),
            shown(head),
            shown(&out)
        )
    };

    let target = match request.target.query() {
        Some(query) => format!("{}?{query}", request.target.path()),
        None => request.target.path().to_owned(),
    };
    check_forwarded_bytes(&out, &target).unwrap_or_else(|problem| panic!("{problem}{}", context()));

    assert!(
        matches!(request.method, Method::Get | Method::Head),
        "a method other than GET or HEAD was allowed{}",
        context()
    );
    let path = request.target.path();
    check_canonical_path(path).unwrap_or_else(|problem| panic!("{problem}{}", context()));
    if routes_to_top(path) {
        if let Some(key) = request.target.query().and_then(ps_args_key) {
            panic!(
                "top was allowed with the query key {key:?}, which decodes to ps_args{}",
                context()
            );
        }
    }

    let again = decide(&out, list).unwrap_or_else(|denial| {
        panic!(
            "the forwarded head is refused when decided again: {denial}{}",
            context()
        )
    });
    assert_eq!(
        again.request,
        *request,
        "the forwarded head decides to a different request (method, version, path, query, \
         host, forwarded headers or close flag){}",
        context()
    );
    assert_eq!(
        again.rule.index,
        allowed.rule.index,
        "the forwarded head is allowed by another rule (line {} instead of {}){}",
        again.rule.line,
        allowed.rule.line,
        context()
    );

    let mut twice = Vec::new();
    write_head(&again.request, &mut twice);
    assert!(
        twice == out,
        "writing the forwarded head again changes it (not a fixed point):\n  again:       {}{}",
        shown(&twice),
        context()
    );
}

/// The forwarded head is one head: a request line and header lines of
/// printable ASCII, each ending in CRLF, then the blank line and nothing
/// after it. A tab is accepted inside a header value only (POLICY.md rule 7
/// lets values hold printable ASCII or tab). The method is GET or HEAD, the
/// version HTTP/1.0 or 1.1, the target exactly the canonical path and the
/// checked query, and no header outside the few the proxy writes.
fn check_forwarded_bytes(out: &[u8], target_shown: &str) -> Result<(), String> {
    let Some(lines) = out
        .strip_suffix(b"\r\n")
        .filter(|lines| lines.ends_with(b"\r\n"))
    else {
        return Err("the forwarded head does not end in CRLF CRLF".to_owned());
    };
    let mut lines = lines.split_inclusive(|&b| b == b'\n').map(|line| {
        line.strip_suffix(b"\r\n")
            .ok_or("a forwarded line does not end in CRLF")
    });
    let request_line = lines.next().ok_or("the forwarded head is empty")??;
    if let Some(&b) = request_line.iter().find(|&&b| !(0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "the forwarded request line holds the byte 0x{b:02x}"
        ));
    }
    let request_line = std::str::from_utf8(request_line).expect("checked ASCII");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the forwarded request line is not METHOD TARGET VERSION".to_owned());
    };
    if method != "GET" && method != "HEAD" {
        return Err(format!("the forwarded method is {method:?}"));
    }
    if target != target_shown {
        return Err(format!(
            "the forwarded target {target:?} is not the decided one {target_shown:?}"
        ));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("the forwarded version is {version:?}"));
    }

    for line in lines {
        let line = line?;
        if let Some(&b) = line
            .iter()
            .find(|&&b| b != b'\t' && !(0x20..=0x7e).contains(&b))
        {
            return Err(format!("a forwarded header line holds the byte 0x{b:02x}"));
        }
        let line = std::str::from_utf8(line).expect("checked ASCII");
        let (name, _value) = line
            .split_once(": ")
            .ok_or_else(|| format!("the forwarded line {line:?} is not NAME: VALUE"))?;
        if name.contains('\t') {
            return Err(format!("the forwarded header name {name:?} holds a tab"));
        }
        if let Some(never) = NEVER_FORWARDED
            .iter()
            .find(|never| never.eq_ignore_ascii_case(name))
        {
            return Err(format!("the forwarded head carries {never}"));
        }
        if !MAY_BE_WRITTEN.contains(&name) {
            return Err(format!("the forwarded head carries the header {name:?}"));
        }
    }
    if out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') || out.first() == Some(&b'\n') {
        return Err("the forwarded head holds a bare LF".to_owned());
    }
    if out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') {
        return Err("the forwarded head holds a bare CR".to_owned());
    }
    Ok(())
}

/// The canonical path starts with `/`, decodes to itself (no `%` at all) and
/// has no empty, `.` or `..` segment that a router would clean.
fn check_canonical_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("the canonical path {path:?} does not start with /"));
    }
    if path.contains('%') {
        return Err(format!("the canonical path {path:?} holds a %"));
    }
    if percent_decode(path).as_deref() != Some(path.as_bytes()) {
        return Err(format!(
            "the canonical path {path:?} does not decode to itself"
        ));
    }
    if let Some(segment) = path
        .split('/')
        .skip(1)
        .find(|s| matches!(*s, "" | "." | ".."))
    {
        return Err(format!(
            "the canonical path {path:?} has the segment {segment:?}"
        ));
    }
    Ok(())
}

/// Whether dockerd would route `path` to the top handler: its routes are
/// `/containers/{name:.*}/top` and the same behind `/v{version:[0-9.]+}`.
fn routes_to_top(path: &str) -> bool {
    let unversioned = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(version, _)| {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
        .map_or(path, |(version, _)| &path[2 + version.len()..]);
    unversioned
        .strip_prefix("/containers/")
        .and_then(|name| name.strip_suffix("/top"))
        .is_some()
}

/// The first query key that Go's `url.ParseQuery` would read as `ps_args`:
/// pairs split on `&` (and `;`, as Go before 1.17 did), `+` a space, `%XX`
/// decoded.
fn ps_args_key(query: &str) -> Option<&str> {
    query.split(['&', ';']).find_map(|pair| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        let decoded = percent_decode(&key.replace('+', " "))?;
        (decoded == b"ps_args").then_some(key)
    })
}

/// `%XX` decoding; `None` for a malformed escape.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A refusal becomes one well-framed JSON error response that a Docker
/// client can print: printable ASCII only, `Content-Length` right, and the
/// HEAD form being the same head without the body.
fn check_refusal(denial: &Denial) {
    let full = error_response(denial, false);
    let head_only = error_response(denial, true);
    let text = std::str::from_utf8(&full)
        .unwrap_or_else(|_| panic!("the error response for {denial:?} is not UTF-8"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("the error response for {denial:?} has no blank line"));
    assert_eq!(
        head_only,
        full[..head.len() + 4],
        "the HEAD form of the error response is not the head of the full one"
    );
    assert!(
        head.starts_with(&format!("HTTP/1.1 {} ", denial.status())),
        "the error response for {denial:?} starts {head:?}"
    );
    assert!(
        head.contains("\r\nContent-Type: application/json\r\n")
            && head.contains(&format!("\r\nContent-Length: {}\r\n", body.len()))
            && head.ends_with("\r\nConnection: close"),
        "the error response head for {denial:?} is {head:?}"
    );
    assert!(
        head.split("\r\n")
            .all(|line| line.bytes().all(|b| (0x20..=0x7e).contains(&b))),
        "the error response head for {denial:?} holds a control byte"
    );
    let inner = body
        .strip_prefix("{\"message\":\"")
        .and_then(|b| b.strip_suffix("\"}\n"))
        .unwrap_or_else(|| panic!("the error body for {denial:?} is {body:?}"));
    assert!(
        inner.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "the error message for {denial:?} holds bytes outside printable ASCII: {inner:?}"
    );
}

/// Bytes as escaped ASCII, cut to a readable length.
fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let cut = &bytes[..bytes.len().min(MAX)];
    let more = if bytes.len() > MAX {
        format!(" ... ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    format!("\"{}\"{more}", cut.escape_ascii())
}
