//! The proxy's own responses: JSON errors that Docker clients can print.
//!
//! The docker CLI shows a daemon error as `Error response from daemon: <m>`
//! only when `Content-Type` is exactly `application/json` and the body is
//! `{"message": "<m>"}`; anything else becomes an opaque status line. Every
//! error closes the connection (docs/POLICY.md rule 9), so each reply says
//! `Connection: close`.

use std::io::{self, Write};

use crate::denial::Denial;
use crate::text::json_escape_into;

/// The reason phrase for each status the proxy sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Builds the full response for `denial`. With `head_only` (the request was
/// `HEAD`) the body is left out but its length is still announced.
pub fn error_response(denial: &Denial, head_only: bool) -> Vec<u8> {
    let mut body = String::from("{\"message\":\"");
    json_escape_into(&mut body, &denial.message());
    body.push_str("\"}\n");

    let status = denial.status();
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Writes the response for `denial` in one call.
pub fn send_error(out: &mut impl Write, denial: &Denial, head_only: bool) -> io::Result<()> {
    out.write_all(&error_response(denial, head_only))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denial::Reason;

    #[test]
    fn error_is_json_with_exact_content_type_and_length() {
        let denial = Denial::new(Reason::NotWhitelisted, "the path is not on the whitelist")
            .of_request("GET", "/containers/x/\"archive\"");
        let text = String::from_utf8(error_response(&denial, false)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("\r\nContent-Type: application/json\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(head.ends_with("Connection: close"));
        assert_eq!(
            body,
            "{\"message\":\"docker-filter denied GET /containers/x/\\\"archive\\\": the path is not on the whitelist\"}\n"
        );
    }

    #[test]
    fn head_request_gets_no_body() {
        let denial = Denial::new(Reason::Method, "x");
        let text = String::from_utf8(error_response(&denial, true)).unwrap();
        assert!(text.ends_with("\r\n\r\n"));
        assert!(text.contains("Content-Length: "));
    }
}
