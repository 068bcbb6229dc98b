//! The one place that decides whether a request head may reach the daemon.
//!
//! [`decide`] takes the raw bytes of one head and either refuses them or
//! returns the [`Allowed`] request that the proxy will write itself. The
//! `check` subcommand calls the same function, so it answers exactly what a
//! live connection would get.

use crate::denial::{Denial, Reason};
use crate::request::{self, Request};
use crate::whitelist::{Rule, Whitelist};

/// A request that may be forwarded, with the rule that allowed it.
#[derive(Debug)]
pub struct Allowed<'h, 'w> {
    /// The checked request; `forward.rs` writes it out.
    pub request: Request<'h>,
    /// The whitelist rule that matched the path.
    pub rule: &'w Rule,
}

/// Decides one complete request head: the checks of `request.rs` (syntax,
/// method, body, protocol switches, headers, target), then the whitelist,
/// then the query rules.
pub fn decide<'h, 'w>(head: &'h [u8], whitelist: &'w Whitelist) -> Result<Allowed<'h, 'w>, Denial> {
    let request = request::parse(head)?;
    let method = request.method.as_str();
    let shown = |request: &Request<'_>| request.target.to_string();

    let Some(rule) = whitelist.find(request.target.path()) else {
        return Err(Denial::new(
            Reason::NotWhitelisted,
            format!("the path is not on the whitelist ({})", whitelist.source()),
        )
        .of_request(method, &shown(&request)));
    };

    check_query(&request).map_err(|d| d.of_request(method, &shown(&request)))?;
    Ok(Allowed { request, rule })
}

/// Query parameters that turn an allowed read into something else.
///
/// `GET /containers/{id}/top?ps_args=...` passes its value to `ps` inside the
/// container's namespace; options such as `e` or `eww` print every process's
/// environment. The default list allows `top` for process monitoring, so the
/// parameter is refused here, whatever the whitelist says.
fn check_query(request: &Request<'_>) -> Result<(), Denial> {
    let path = request.target.path();
    let unversioned = strip_version(path);
    let is_top = unversioned.starts_with("/containers/") && unversioned.ends_with("/top");
    if is_top && request.target.has_query_key("ps_args") {
        return Err(Denial::new(
            Reason::QueryParameter,
            "the ps_args parameter of top is not allowed (ps options can print process environments)",
        ));
    }
    Ok(())
}

/// The path without a leading `/v{version}` segment, the way dockerd's router
/// registers every route with and without it.
fn strip_version(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/v") else {
        return path;
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        &rest[end..]
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n").into_bytes()
    }

    fn reason(head: &[u8]) -> Reason {
        decide(head, &Whitelist::builtin()).unwrap_err().reason
    }

    #[test]
    fn listed_read_is_allowed_with_its_rule() {
        let list = Whitelist::builtin();
        let head = get("/v1.41/containers/json?all=1");
        let allowed = decide(&head, &list).unwrap();
        assert_eq!(allowed.request.target.path(), "/v1.41/containers/json");
        assert!(allowed.rule.pattern.contains("containers/json"));
    }

    #[test]
    fn unlisted_path_is_denied_and_named() {
        let denial = decide(
            &get("/containers/web/archive?path=/etc"),
            &Whitelist::builtin(),
        )
        .unwrap_err();
        assert_eq!(denial.reason, Reason::NotWhitelisted);
        assert_eq!(denial.status(), 403);
        assert!(denial
            .message()
            .contains("GET /containers/web/archive?path=/etc"));
    }

    #[test]
    fn encoded_export_is_denied_after_decoding() {
        assert_eq!(
            reason(&get("/containers/web/%65xport")),
            Reason::NotWhitelisted
        );
        assert_eq!(
            reason(&get("/v1.41/images/web/%67et")),
            Reason::NotWhitelisted
        );
    }

    #[test]
    fn top_with_ps_args_is_denied_in_every_spelling() {
        for target in [
            "/containers/web/top?ps_args=aux",
            "/v1.41/containers/web/top?ps_args=eww",
            "/containers/web/top?x=1&ps%5Fargs=e",
            "/containers/web/top?x=1;ps_args=e",
        ] {
            assert_eq!(reason(&get(target)), Reason::QueryParameter, "{target}");
        }
        assert!(decide(&get("/containers/web/top"), &Whitelist::builtin()).is_ok());
    }

    #[test]
    fn head_is_allowed_exactly_where_get_is() {
        let list = Whitelist::builtin();
        let head_ping = b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";
        assert!(decide(head_ping, &list).is_ok());
        let head_archive = b"HEAD /containers/web/archive?path=/ HTTP/1.1\r\nHost: docker\r\n\r\n";
        assert_eq!(
            decide(head_archive, &list).unwrap_err().reason,
            Reason::NotWhitelisted
        );
    }

    #[test]
    fn strip_version_removes_only_a_version_segment() {
        assert_eq!(
            strip_version("/v1.41/containers/x/top"),
            "/containers/x/top"
        );
        assert_eq!(strip_version("/containers/x/top"), "/containers/x/top");
        assert_eq!(strip_version("/volumes/x"), "/volumes/x");
        assert_eq!(strip_version("/v/x"), "/v/x");
    }
}
