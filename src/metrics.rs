//! `--stats-socket`: the counters of `stats.rs` as Prometheus text
//! (exposition format 0.0.4) at `GET /metrics`.
//!
//! The socket is created with mode 0600, for the operator and a local
//! scraper only. It is served by one thread, one short connection at a time,
//! with timeouts, so that it can never compete with the proxy itself.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{debug, warn};

use crate::connection::Context;
use crate::denial::Reason;
use crate::socket::SafeSocket;
use crate::stats::Stats;

/// Time a scraper has to send its request and read the answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head read on the stats socket.
const MAX_HEAD: usize = 4096;

/// Serves `socket` on a thread of its own until the process ends.
pub fn spawn(socket: SafeSocket, context: Arc<Context>) -> io::Result<()> {
    thread::Builder::new()
        .name("stats".to_owned())
        .spawn(move || {
            for client in socket.listener.incoming() {
                match client {
                    Ok(client) => {
                        if let Err(e) = answer(&client, &context) {
                            debug!("stats socket: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("stats socket: accepting failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map(drop)
}

/// Reads one request and answers it.
fn answer(client: &UnixStream, context: &Context) -> io::Result<()> {
    client.set_read_timeout(Some(TIMEOUT))?;
    client.set_write_timeout(Some(TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(
                client,
                "431 Request Header Fields Too Large",
                "text/plain",
                "head too large\n",
                false,
            );
        }
        let n = (&*client).read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(&head).is_ok();
    match (parsed, request.method, request.path) {
        (true, Some(method @ ("GET" | "HEAD")), Some("/metrics")) => {
            let body = render(&context.stats, context);
            respond(
                client,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                method == "HEAD",
            )
        }
        (true, Some("GET" | "HEAD"), Some(_)) => respond(
            client,
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n",
            false,
        ),
        _ => respond(
            client,
            "400 Bad Request",
            "text/plain",
            "send GET /metrics\n",
            false,
        ),
    }
}

fn respond(
    client: &UnixStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    (&*client).write_all(out.as_bytes())
}

/// The Prometheus text for `stats`, with one hit counter per rule of the
/// whitelist in `context`.
#[expect(
    clippy::too_many_lines,
    reason = "one flat list of metric families reads best in exposition order"
)]
pub fn render(stats: &Stats, context: &Context) -> String {
    let mut out = String::with_capacity(4096);
    let get = Stats::get;

    family(
        &mut out,
        "docker_filter_build_info",
        "gauge",
        "Build information; the value is always 1.",
    );
    let _ = writeln!(
        out,
        "docker_filter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    family(
        &mut out,
        "docker_filter_connections_accepted_total",
        "counter",
        "Client connections accepted and served.",
    );
    let _ = writeln!(
        out,
        "docker_filter_connections_accepted_total {}",
        get(&stats.connections)
    );
    family(
        &mut out,
        "docker_filter_connections_active",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        out,
        "docker_filter_connections_active {}",
        get(&stats.active)
    );
    family(
        &mut out,
        "docker_filter_connections_refused_total",
        "counter",
        "Client connections refused at --max-connections.",
    );
    let _ = writeln!(
        out,
        "docker_filter_connections_refused_total{{reason=\"limit\"}} {}",
        get(&stats.refused_at_limit)
    );

    family(
        &mut out,
        "docker_filter_requests_total",
        "counter",
        "Requests by decision, and refusals by reason.",
    );
    let _ = writeln!(
        out,
        "docker_filter_requests_total{{decision=\"allow\",reason=\"whitelist\"}} {}",
        get(&stats.allowed)
    );
    for reason in Reason::ALL {
        // A 502 is the daemon failing, not the proxy refusing.
        let decision = if reason == Reason::Upstream {
            "error"
        } else {
            "deny"
        };
        let _ = writeln!(
            out,
            "docker_filter_requests_total{{decision=\"{decision}\",reason=\"{}\"}} {}",
            reason.code(),
            get(&stats.denied[reason.index()])
        );
    }

    family(
        &mut out,
        "docker_filter_rule_hits_total",
        "counter",
        "Allowed requests by the whitelist rule that matched.",
    );
    for (rule, hits) in context.whitelist.rules().iter().zip(&stats.rule_hits) {
        let _ = writeln!(
            out,
            "docker_filter_rule_hits_total{{line=\"{}\",rule=\"{}\"}} {}",
            rule.line,
            label_value(&rule.pattern),
            get(hits)
        );
    }

    family(
        &mut out,
        "docker_filter_upstream_errors_total",
        "counter",
        "Connections to the Docker daemon that failed or broke.",
    );
    let _ = writeln!(
        out,
        "docker_filter_upstream_errors_total {}",
        get(&stats.upstream_errors)
    );

    family(
        &mut out,
        "docker_filter_bytes_total",
        "counter",
        "Bytes written: request heads to the daemon, responses to clients.",
    );
    let _ = writeln!(
        out,
        "docker_filter_bytes_total{{direction=\"to_daemon\"}} {}",
        get(&stats.bytes_to_daemon)
    );
    let _ = writeln!(
        out,
        "docker_filter_bytes_total{{direction=\"to_clients\"}} {}",
        get(&stats.bytes_to_clients)
    );
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the exposition format requires.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::Whitelist;

    fn context() -> Context {
        let whitelist = Whitelist::parse("t", "^/_ping$\n^\\/info$\n").unwrap();
        Context {
            stats: Stats::new(whitelist.rules().len()),
            whitelist,
            upstream: "/x".into(),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            access: crate::config::Access::default(),
        }
    }

    #[test]
    fn every_family_has_help_type_and_samples() {
        let context = context();
        Stats::bump(&context.stats.rule_hits[1]);
        context.stats.count_denial(Reason::Method);
        let text = render(&context.stats, &context);
        for family in [
            "build_info",
            "connections_accepted_total",
            "requests_total",
            "rule_hits_total",
            "bytes_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE docker_filter_{family} ")),
                "{family}"
            );
        }
        assert!(
            text.contains("docker_filter_requests_total{decision=\"deny\",reason=\"method\"} 1\n")
        );
        assert!(
            text.contains("docker_filter_rule_hits_total{line=\"2\",rule=\"^\\\\/info$\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
