//! What the daemon may ever receive (POLICY.md rules 1, 2, 3, 5 and 7): only
//! request heads that the proxy wrote itself, in the one shape `forward.rs`
//! writes, and no byte outside them. The hostile-input and load tests audit
//! everything a [`FakeDaemon`] recorded against this shape, so that a
//! forbidden request, a body or a copied client byte fails the test whatever
//! the client was answered.

use super::{show, FakeDaemon};

/// The headers the proxy writes, spelled as it writes them.
const WRITTEN_HEADERS: [&str; 5] = [
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Connection",
];

/// Why `head` cannot be a head written by the proxy, or `None` if it can.
pub fn forwarded_head_problem(head: &[u8]) -> Option<String> {
    let Some(text) = head.strip_suffix(b"\r\n\r\n") else {
        return Some("does not end in CRLF CRLF".to_owned());
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return Some("is not ASCII".to_owned());
    };
    if !only_crlf(text.as_bytes()) {
        return Some("has a bare CR or LF".to_owned());
    }
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    if let Some(problem) = request_line_problem(line) {
        return Some(format!("request line {line:?} {problem}"));
    }
    let mut seen: Vec<&str> = Vec::new();
    for header in lines {
        let Some((name, value)) = header.split_once(": ") else {
            return Some(format!("header line {header:?} is not `Name: value`"));
        };
        if !WRITTEN_HEADERS.contains(&name) {
            return Some(format!("header {name:?} is never written by the proxy"));
        }
        if seen.contains(&name) {
            return Some(format!("header {name:?} appears twice"));
        }
        seen.push(name);
        let printable = value
            .bytes()
            .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b));
        if !printable || value.trim() != value {
            return Some(format!("header {name} has the value {value:?}"));
        }
        if name == "Connection" && value != "close" {
            return Some(format!("Connection: {value} is never written by the proxy"));
        }
    }
    None
}

fn only_crlf(text: &[u8]) -> bool {
    text.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => text.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && text[i - 1] == b'\r',
        _ => true,
    })
}

/// Why a request line is not `GET|HEAD SP canonical-target SP HTTP/1.x`.
fn request_line_problem(line: &str) -> Option<&'static str> {
    let words: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = words[..] else {
        return Some("is not three words separated by single spaces");
    };
    if method != "GET" && method != "HEAD" {
        return Some("has a method other than GET and HEAD");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Some("has a version other than HTTP/1.0 and HTTP/1.1");
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Some("has a target that is not a path");
    }
    let path_byte = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@' | b'/')
    };
    if !path.bytes().all(path_byte) {
        return Some("has a path byte that is not a plain name character (an escape?)");
    }
    if path
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Some("has an empty, . or .. path segment");
    }
    let query_byte = |b: u8| (0x21..=0x7e).contains(&b) && b != b'#' && b != b'\\';
    if query.is_some_and(|q| !q.bytes().all(query_byte)) {
        return Some("has a query byte outside printable ASCII, or # or \\");
    }
    None
}

/// Audits everything `daemon` received: the bytes are exactly the heads it
/// split them into (nothing between or after them: no body), and each head
/// is one the proxy could have written. Returns the problems, one line each.
pub fn audit_daemon(daemon: &FakeDaemon) -> Vec<String> {
    let seen = daemon.seen();
    let received = daemon.received();
    let mut problems: Vec<String> = seen
        .iter()
        .filter_map(|r| forwarded_head_problem(&r.head).map(|p| format!("{p}: {}", show(&r.head))))
        .collect();
    let in_heads: usize = seen.iter().map(|r| r.head.len()).sum();
    if in_heads != received.len() {
        problems.push(format!(
            "the daemon received {} bytes but only {in_heads} of them in request heads: {}",
            received.len(),
            show(&received)
        ));
    }
    problems
}
