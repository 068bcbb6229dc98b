//! `docker-filter check`: validate a whitelist and decide requests offline.
//!
//! Each `METHOD PATH` pair is turned into the head a client would send and
//! given to `policy::decide`, the function live connections use, so the
//! answer is the proxy's answer.

use std::io::Write;

use crate::policy;
use crate::whitelist::Whitelist;

/// Prints the rules (no requests) or one decision per request. Returns
/// whether every request was allowed.
pub fn run(
    whitelist: &Whitelist,
    requests: &[(String, String)],
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let source = whitelist.source();
    if requests.is_empty() {
        for rule in whitelist.rules() {
            writeln!(out, "{source}:{}: {}", rule.line, rule.pattern)?;
        }
        for (rule, path, why) in whitelist.dangerous_rules() {
            writeln!(
                out,
                "{source}:{}: warning: allows {path}, which {why}",
                rule.line
            )?;
        }
        let count = whitelist.rules().len();
        let plural = if count == 1 { "" } else { "s" };
        writeln!(out, "{source}: {count} rule{plural}, valid")?;
        return Ok(true);
    }

    let mut all_allowed = true;
    for (method, path) in requests {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\n\r\n");
        match policy::decide(head.as_bytes(), whitelist) {
            Ok(allowed) => writeln!(
                out,
                "allow {method} {path}: {source}:{}: {}",
                allowed.rule.line, allowed.rule.pattern
            )?,
            Err(denial) => {
                all_allowed = false;
                writeln!(
                    out,
                    "deny {method} {path}: {} {} ({})",
                    denial.status(),
                    denial.detail,
                    denial.reason.code()
                )?;
            }
        }
    }
    Ok(all_allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(requests: &[(&str, &str)]) -> (bool, String) {
        let requests: Vec<_> = requests
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        let mut out = Vec::new();
        let ok = run(&Whitelist::builtin(), &requests, &mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    #[test]
    fn listing_shows_every_rule_with_its_line() {
        let (ok, text) = check(&[]);
        assert!(ok);
        let rules = Whitelist::builtin().rules().len();
        assert_eq!(
            text.lines()
                .filter(|l| l.contains(".lst:") && !l.ends_with("valid"))
                .count(),
            rules
        );
        assert!(text.ends_with(&format!("{rules} rules, valid\n")));
    }

    #[test]
    fn decisions_name_the_rule_or_the_reason() {
        let (ok, text) = check(&[("GET", "/v1.41/info"), ("POST", "/containers/create")]);
        assert!(!ok);
        let lines: Vec<_> = text.lines().collect();
        assert!(
            lines[0].starts_with("allow GET /v1.41/info: built-in whitelist.lst:"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("deny POST /containers/create: 403 "),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("(method)"));
    }

    #[test]
    fn paths_are_canonicalised_as_for_a_live_request() {
        let (ok, text) = check(&[
            ("GET", "/containers/x/%65xport"),
            ("GET", "/images/redis%3A7/json"),
        ]);
        assert!(!ok);
        assert!(text.lines().next().unwrap().contains("(not-whitelisted)"));
        assert!(text.lines().nth(1).unwrap().starts_with("allow "));
    }
}
