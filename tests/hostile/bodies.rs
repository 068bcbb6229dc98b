//! Rule 3 attacks: bodies in every spelling of Transfer-Encoding and
//! Content-Length, each carrying a hidden write request, and look-alike
//! names that a lenient parser might take for them.

use super::{chunked_smuggle, run_attacks, served, Answer, Attack, HIDDEN};
use crate::common::POLICY_ARGS;

#[test]
fn smuggling_with_transfer_encoding_in_any_case_spacing_or_list_is_refused() {
    let te = |name: &str, headers: &str| Attack::after_ping(name, chunked_smuggle(headers), &[413]);
    let attacks = vec![
        te(
            "TE.CL: chunked first, then a short Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        ),
        te(
            "CL.TE: Content-Length 0 first",
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        ),
        te("capitalised value", "Transfer-Encoding: Chunked\r\n"),
        te("all upper case", "TRANSFER-ENCODING: CHUNKED\r\n"),
        te("mixed-case name", "tRaNsFeR-eNcOdInG: cHuNkEd\r\n"),
        te("no space after the colon", "Transfer-Encoding:chunked\r\n"),
        te("tab after the colon", "Transfer-Encoding:\tchunked\r\n"),
        te("trailing tab", "Transfer-Encoding: chunked\t\r\n"),
        te(
            "spaces around the value",
            "Transfer-Encoding:    chunked    \r\n",
        ),
        te(
            "chunked last in a list",
            "Transfer-Encoding: gzip, chunked\r\n",
        ),
        te(
            "chunked first in a list",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        te(
            "a list with an empty element",
            "Transfer-Encoding: ,chunked\r\n",
        ),
        te(
            "a value that only contains chunked",
            "Transfer-Encoding: xchunked\r\n",
        ),
        te("an empty value", "Transfer-Encoding:\r\n"),
        te(
            "two headers, identity then chunked",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ),
        Attack::after_ping(
            "Transfer-Encoding on an HTTP/1.0 request",
            chunked_smuggle("Transfer-Encoding: chunked\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1),
            &[413],
        ),
        // A name that is not a token is refused before anyone can disagree
        // about whether it was Transfer-Encoding.
        Attack::after_ping(
            "space before the colon",
            chunked_smuggle("Transfer-Encoding : chunked\r\n"),
            &[400],
        ),
        Attack::after_ping(
            "tab before the colon",
            chunked_smuggle("Transfer-Encoding\t: chunked\r\n"),
            &[400],
        ),
        Attack::after_ping(
            "folded onto the previous header",
            chunked_smuggle("X-Note: a\r\n Transfer-Encoding: chunked\r\n"),
            &[400],
        ),
        Attack::after_ping(
            "tab-folded onto the previous header",
            chunked_smuggle("X-Note: a\r\n\tTransfer-Encoding: chunked\r\n"),
            &[400],
        ),
        Attack::after_ping(
            "NUL inside the name",
            chunked_smuggle("Transfer-\0Encoding: chunked\r\n"),
            &[400],
        ),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn smuggling_with_content_length_spellings_is_refused() {
    let cl = |name: &str, value: &str, statuses: &'static [u16]| {
        let bytes = format!(
            "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: {value}\r\n\r\n{HIDDEN}"
        );
        Attack::after_ping(name, bytes, statuses)
    };
    let attacks = vec![
        cl(
            "the hidden request's length",
            &HIDDEN.len().to_string(),
            &[413],
        ),
        cl("a leading zero", "00", &[400, 413]),
        cl("a length past 2^32", "4294967296", &[400, 413]),
        cl("a length past 2^64", "18446744073709551616", &[400, 413]),
        cl("a negative zero", "-0", &[400, 413]),
        cl("hexadecimal", "0x0", &[400, 413]),
        cl("an exponent", "1e2", &[400, 413]),
        cl("a list of lengths", "5, 5", &[400, 413]),
        cl("a tab before the length", "\t5", &[400, 413]),
        Attack::after_ping(
            "space before the colon",
            format!(
                "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length : 5\r\n\r\n{HIDDEN}"
            ),
            &[400],
        ),
        // Content-Length: 0 is no body: what follows is the next request,
        // and it is checked as one.
        Attack::answered(
            "a write request behind Content-Length: 0",
            format!(
                "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n{HIDDEN}"
            ),
            vec![served("/v1.41/info"), Answer::Refused(&[403])],
        ),
    ];
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn look_alike_body_headers_are_dropped_and_what_follows_is_checked_as_a_request() {
    // Token names that are not Transfer-Encoding or Content-Length are not
    // forwarded, so the daemon cannot read a body either; the would-be body
    // is then the next head, and it is refused.
    let attacks: Vec<Attack> = [
        "Transfer_Encoding: chunked",
        "Transfer-Encodings: chunked",
        "Content_Length: 96",
    ]
    .iter()
    .map(|header| {
        Attack::answered(
            format!("{header:?} followed by a hidden request"),
            chunked_smuggle(&format!("{header}\r\n")),
            vec![served("/v1.41/info"), Answer::Refused(&[400])],
        )
    })
    .collect();
    run_attacks(POLICY_ARGS, &attacks);
}
