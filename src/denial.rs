//! Why a request was refused, as one type shared by every check.
//!
//! Each [`Reason`] has a fixed HTTP status and a stable code that appears in
//! the `reason=` field of decision log lines, so that a log pipeline can count
//! denials by kind. The human explanation goes into the JSON error body,
//! which the docker CLI prints as `Error response from daemon: ...`.

use std::fmt;

use crate::text::printable;

/// The kinds of refusal, each mapped to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The head is not valid HTTP/1.x (httparse refused it, or it ended early).
    Malformed,
    /// A line ended in a bare LF or a bare CR instead of CRLF.
    BareLineEnding,
    /// The head is larger than the head limit.
    HeadTooLarge,
    /// The head has more header lines than the limit.
    TooManyHeaders,
    /// The head did not arrive in time.
    HeaderTimeout,
    /// A method other than exactly `GET` or `HEAD`.
    Method,
    /// A request body (`Transfer-Encoding`, or `Content-Length` other than 0).
    Body,
    /// A `Content-Length` that is not one plain decimal number.
    BadContentLength,
    /// `Upgrade`, `Connection: upgrade` or `HTTP2-Settings`.
    Upgrade,
    /// An `Expect` header.
    Expect,
    /// A header name that is not an RFC 9110 token.
    HeaderName,
    /// A header value with bytes outside printable ASCII and tab.
    HeaderValue,
    /// No `Host` on HTTP/1.1, or more than one.
    Host,
    /// The target is not origin-form (`/path?query`).
    TargetForm,
    /// A percent sign not followed by two hex digits.
    BadEscape,
    /// `%2F` in the path: a slash the router would see but segments would not.
    EncodedSlash,
    /// A `.` or `..` segment, raw or encoded.
    DotSegment,
    /// An empty segment (`//` or a trailing `/`).
    EmptySegment,
    /// A byte that may not appear in a path or query.
    BadByte,
    /// The path matched no whitelist rule.
    NotWhitelisted,
    /// A query parameter that the policy forbids on this endpoint.
    QueryParameter,
    /// The Docker daemon could not be reached or broke off before answering.
    Upstream,
    /// The proxy is serving its maximum number of connections.
    ConnectionLimit,
    /// The connecting process is not in `--allow-uid` / `--allow-gid`.
    Peer,
}

impl Reason {
    /// The HTTP status code sent for this reason.
    pub fn status(self) -> u16 {
        match self {
            Reason::Malformed
            | Reason::BareLineEnding
            | Reason::BadContentLength
            | Reason::HeaderName
            | Reason::HeaderValue
            | Reason::Host
            | Reason::TargetForm
            | Reason::BadEscape
            | Reason::EncodedSlash
            | Reason::DotSegment
            | Reason::EmptySegment
            | Reason::BadByte => 400,
            Reason::Method
            | Reason::Upgrade
            | Reason::Expect
            | Reason::NotWhitelisted
            | Reason::QueryParameter
            | Reason::Peer => 403,
            Reason::HeaderTimeout => 408,
            Reason::Body => 413,
            Reason::HeadTooLarge | Reason::TooManyHeaders => 431,
            Reason::Upstream => 502,
            Reason::ConnectionLimit => 503,
        }
    }

    /// The stable code used in log lines.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::BareLineEnding => "bare-line-ending",
            Reason::HeadTooLarge => "head-too-large",
            Reason::TooManyHeaders => "too-many-headers",
            Reason::HeaderTimeout => "header-timeout",
            Reason::Method => "method",
            Reason::Body => "body",
            Reason::BadContentLength => "bad-content-length",
            Reason::Upgrade => "upgrade",
            Reason::Expect => "expect",
            Reason::HeaderName => "header-name",
            Reason::HeaderValue => "header-value",
            Reason::Host => "host",
            Reason::TargetForm => "target-form",
            Reason::BadEscape => "bad-escape",
            Reason::EncodedSlash => "encoded-slash",
            Reason::DotSegment => "dot-segment",
            Reason::EmptySegment => "empty-segment",
            Reason::BadByte => "bad-byte",
            Reason::NotWhitelisted => "not-whitelisted",
            Reason::QueryParameter => "query-parameter",
            Reason::Upstream => "upstream",
            Reason::ConnectionLimit => "connection-limit",
            Reason::Peer => "peer",
        }
    }

    /// Every reason, in declaration order; `index` is the position here.
    pub const ALL: [Reason; 24] = [
        Reason::Malformed,
        Reason::BareLineEnding,
        Reason::HeadTooLarge,
        Reason::TooManyHeaders,
        Reason::HeaderTimeout,
        Reason::Method,
        Reason::Body,
        Reason::BadContentLength,
        Reason::Upgrade,
        Reason::Expect,
        Reason::HeaderName,
        Reason::HeaderValue,
        Reason::Host,
        Reason::TargetForm,
        Reason::BadEscape,
        Reason::EncodedSlash,
        Reason::DotSegment,
        Reason::EmptySegment,
        Reason::BadByte,
        Reason::NotWhitelisted,
        Reason::QueryParameter,
        Reason::Upstream,
        Reason::ConnectionLimit,
        Reason::Peer,
    ];

    /// The position of this reason in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refused request: the reason, what was asked (when it could be read),
/// and a sentence saying what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The kind of refusal.
    pub reason: Reason,
    /// The method and raw target, already made printable, if the request line
    /// could be parsed.
    pub request: Option<(String, String)>,
    /// What was wrong, for the error body and the log.
    pub detail: String,
}

impl Denial {
    /// A denial for a request whose request line could not be read.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Denial {
        Denial {
            reason,
            request: None,
            detail: detail.into(),
        }
    }

    /// Attaches the method and raw target to this denial.
    #[must_use]
    pub fn of_request(mut self, method: &str, target: &str) -> Denial {
        self.request = Some((printable(method.as_bytes()), printable(target.as_bytes())));
        self
    }

    /// The HTTP status for this denial.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// The sentence the client sees.
    pub fn message(&self) -> String {
        let verb = match self.status() {
            403 => "denied",
            500.. => "could not serve",
            _ => "rejected",
        };
        match &self.request {
            Some((method, target)) => {
                format!("docker-filter {verb} {method} {target}: {}", self.detail)
            }
            None => format!("docker-filter {verb} the request: {}", self.detail),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_method_target_and_detail() {
        let denial = Denial::new(Reason::Method, "only GET and HEAD are allowed")
            .of_request("POST", "/v1.41/containers/create");
        assert_eq!(
            denial.message(),
            "docker-filter denied POST /v1.41/containers/create: only GET and HEAD are allowed"
        );
        assert_eq!(denial.status(), 403);
    }

    #[test]
    fn every_reason_is_listed_once_at_its_index_with_a_unique_code() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn message_without_request_line_says_so() {
        let denial = Denial::new(Reason::Malformed, "invalid token");
        assert_eq!(
            denial.message(),
            "docker-filter rejected the request: invalid token"
        );
    }

    #[test]
    fn hostile_target_is_escaped_in_message() {
        let denial = Denial::new(Reason::BadByte, "x").of_request("GET", "/a\r\nb");
        assert!(denial.message().contains("/a\\x0d\\x0ab"));
    }
}
