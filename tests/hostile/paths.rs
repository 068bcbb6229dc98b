//! Attacks on the one canonical path (POLICY.md rules 5 and 6): escapes
//! that hide `..` or `/`, overlong UTF-8, absolute-form targets, and look-
//! alike paths. Each runs after an allowed request, so that the daemon
//! connection is open, and the daemon must see nothing of it.

use super::{run_attacks, served, Answer, Attack};
use crate::common::{get, POLICY_ARGS};

/// Each target after an allowed ping, refused with one of `statuses`.
fn refused_targets(cases: &[(&str, &str)], statuses: &'static [u16]) -> Vec<Attack> {
    cases
        .iter()
        .map(|(name, target)| Attack::after_ping(*name, get(target), statuses))
        .collect()
}

#[test]
fn dot_dot_hidden_in_percent_encoding_is_refused_wherever_it_sits() {
    let cases = [
        ("first segment", "/%2e%2e/v1.41/containers/json"),
        ("right after the version", "/v1.41/%2E%2e/_ping"),
        ("last segment", "/v1.41/containers/json/%2e%2e"),
        (
            "middle, climbing to export",
            "/v1.41/containers/abc/json/%2e%2e/export",
        ),
        ("first dot encoded", "/v1.41/containers/abc/%2e./export"),
        (
            "second dot encoded, upper case",
            "/v1.41/containers/abc/.%2E/export",
        ),
        ("single encoded dot", "/v1.41/containers/%2e/json"),
        (
            "mixed-case escapes",
            "/v1.41/containers/abc/%2E%2e/%2e%2E/info",
        ),
        (
            "inside an image name the image rule would match",
            "/v1.41/images/library/alpine/%2e%2e/%2e%2e/%2e%2e/containers/abc/json",
        ),
        (
            "followed by an encoded slash",
            "/v1.41/containers/abc/%2e%2e%2fexport",
        ),
        (
            "followed by an encoded backslash",
            "/v1.41/containers/abc/%2e%2e%5cexport",
        ),
        ("double-encoded", "/v1.41/containers/abc/%252e%252e/export"),
        (
            "followed by an encoded NUL",
            "/v1.41/containers/abc/%2e%2e%00/json",
        ),
    ];
    run_attacks(POLICY_ARGS, &refused_targets(&cases, &[400]));
}

#[test]
fn encoded_slashes_that_fold_an_id_into_a_path_are_refused() {
    let cases = [
        (
            "an id that holds the export segment",
            "/v1.41/containers/abc%2Fexport",
        ),
        (
            "an id that climbs out",
            "/v1.41/containers/abc%2F..%2F..%2Fswarm/json",
        ),
        ("lower-case %2f", "/v1.41/containers/abc%2farchive/json"),
        (
            "mixed-case escapes in one path",
            "/v1.41/containers/a%2fb%2Fc/json",
        ),
        (
            "an image name with an encoded slash",
            "/v1.41/images/library%2Falpine/json",
        ),
        (
            "the version folded into the path",
            "/v1.41%2Fcontainers%2Fjson",
        ),
        ("two encoded slashes", "/v1.41/containers/%2F%2F/json"),
        (
            "double-encoded slash",
            "/v1.41/containers/abc%252Fexport/json",
        ),
        ("an encoded slash at the end", "/v1.41/containers/json%2F"),
    ];
    run_attacks(POLICY_ARGS, &refused_targets(&cases, &[400]));
}

#[test]
fn overlong_and_look_alike_utf8_escapes_are_refused() {
    let cases = [
        ("overlong slash %C0%AF", "/v1.41/containers/abc%C0%AFexport"),
        (
            "overlong slash in lower case",
            "/v1.41/containers/abc%c0%afexport",
        ),
        (
            "overlong dots %C0%AE",
            "/v1.41/containers/abc/%C0%AE%C0%AE/export",
        ),
        (
            "three-byte overlong slash",
            "/v1.41/containers/abc%E0%80%AFexport",
        ),
        (
            "overlong backslash %C1%9C",
            "/v1.41/containers/abc%C1%9Cexport",
        ),
        ("fullwidth solidus", "/v1.41/containers/abc%EF%BC%8Fexport"),
        ("division slash", "/v1.41/containers/abc%E2%88%95export"),
    ];
    let mut attacks = refused_targets(&cases, &[400]);
    attacks.push(Attack::after_ping(
        "raw overlong slash bytes",
        b"GET /v1.41/containers/abc\xc0\xafexport HTTP/1.1\r\nHost: docker\r\n\r\n".to_vec(),
        &[400],
    ));
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn absolute_form_targets_are_refused_even_for_allowed_paths() {
    let cases = [
        ("http with an allowed path", "http://docker/_ping"),
        ("upper-case scheme", "HTTP://docker/v1.41/info"),
        ("with a port", "http://docker:2375/v1.41/version"),
        ("https", "https://docker/v1.41/containers/json"),
        ("a unix URL", "unix:///var/run/docker.sock/_ping"),
        ("scheme-relative", "//docker/v1.41/info"),
        ("authority-form", "docker:2375"),
    ];
    run_attacks(POLICY_ARGS, &refused_targets(&cases, &[400]));
}

#[test]
fn path_parameters_fragments_and_spaces_are_refused() {
    let cases = [
        ("a path parameter", "/v1.41/info;x=1"),
        (
            "a parameter hiding a climb",
            "/v1.41/containers/json;/../abc/export",
        ),
        ("an encoded semicolon", "/v1.41/info%3bx"),
        (
            "an encoded question mark",
            "/v1.41/info%3F/../containers/abc/export",
        ),
        ("an encoded space", "/v1.41/info%20HTTP/1.1"),
        ("an encoded CR LF", "/v1.41/info%0d%0aX-Injected:%201"),
        ("a fragment after the query", "/v1.41/info?a=1#frag"),
        ("a bad escape in the query", "/v1.41/info?a=%zz"),
    ];
    run_attacks(POLICY_ARGS, &refused_targets(&cases, &[400]));
}

#[test]
fn look_alike_paths_are_not_on_the_whitelist() {
    // Rule 6: the whole decoded path must match a rule of the built-in list
    // (proxy_whitelist.rs has prefixes and suffixes with a custom one).
    let cases = [
        ("upper case", "/_PING"),
        ("an extra segment", "/_ping/x"),
        ("a version without a minor", "/v1/_ping"),
        ("an upper-case version", "/V1.41/_ping"),
        ("two versions", "/v1.41/v1.41/_ping"),
        ("a version with a trailing dot", "/v1.41./_ping"),
        (
            "every letter of export escaped",
            "/v1.41/containers/abc/%65%78%70%6f%72%74",
        ),
        (
            "export behind an image name",
            "/v1.41/images/alpine/json/get",
        ),
        ("the swarm tokens with a dot", "/v1.41/swarm."),
    ];
    run_attacks(POLICY_ARGS, &refused_targets(&cases, &[403]));
}

#[test]
fn the_query_cannot_change_the_path_the_daemon_routes() {
    // Everything after the first `?` is the query: forwarded as it was sent
    // (still encoded), never decoded into the path.
    let targets = [
        "/_ping?/../containers/abc/export",
        "/_ping?%2F..%2Fcontainers%2Fabc%2Fexport",
        "/_ping?%0d%0aPOST%20/containers/create%20HTTP/1.1",
        "/_ping??/containers/abc/export",
        "/v1.41/containers/json?filters=%7B%22id%22%3A%5B%22..%2F..%22%5D%7D",
    ];
    let attacks: Vec<Attack> = targets
        .iter()
        .map(|t| Attack::answered(*t, get(t), vec![served(t)]))
        .collect();
    run_attacks(POLICY_ARGS, &attacks);
}

#[test]
fn a_refused_head_in_a_pipeline_gets_a_bodiless_error_and_ends_it() {
    let head = |target: &str| crate::common::request("HEAD", target, "");
    let attacks = vec![Attack::answered(
        "allowed HEAD, denied HEAD, allowed GET",
        [
            &head("/_ping")[..],
            &head("/v1.41/containers/abc/archive?path=/")[..],
            &get("/v1.41/info")[..],
        ]
        .concat(),
        vec![
            Answer::ServedHead("HEAD /_ping HTTP/1.1".into()),
            Answer::RefusedHead(&[403]),
        ],
    )];
    run_attacks(POLICY_ARGS, &attacks);
}
