//! Hostile input, one table per class of POLICY.md, each case named after
//! the attack it stops. For every case the client must get the answers the
//! contract gives (the daemon's for allowed requests, the proxy's JSON error
//! for the rest, then a close), and, above all, the daemon must see only the
//! allowed request lines listed for the case and nothing else: every byte it
//! received must belong to a head in the one shape the proxy writes
//! (`common::audit_daemon`), so no POST, no body byte and no copied client
//! header can slip through unnoticed.
//!
//! Many cases come after an allowed `GET /_ping?before`, so that the daemon
//! connection is already open when the hostile bytes arrive: a proxy that
//! copied anything unchecked would have somewhere to copy it to.
//!
//! This file holds the runner; the tables are in `hostile/`: `bodies.rs`
//! (rule 3), `headers.rs` (rules 4 and 7, request lines), `paths.rs` (rules
//! 5 and 6), `pipelines.rs` (rule 2) and `framing.rs` (HEAD framing, the
//! limits and timeouts of rule 8).

#[path = "hostile/bodies.rs"]
mod bodies;
mod common;
#[path = "hostile/framing.rs"]
mod framing;
#[path = "hostile/headers.rs"]
mod headers;
#[path = "hostile/paths.rs"]
mod paths;
#[path = "hostile/pipelines.rs"]
mod pipelines;

use std::thread;
use std::time::Duration;

use common::{audit_daemon, get, show, wait_until, FakeDaemon, Proxy, READ_TIMEOUT};

/// One answer on an attack's connection, in order.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Answered by the daemon, which saw exactly this request line.
    Served(String),
    /// A HEAD answered by the daemon (no body), which saw this line.
    ServedHead(String),
    /// Refused by the proxy with one of these statuses.
    Refused(&'static [u16]),
    /// A HEAD refused by the proxy: the error's head, no body.
    RefusedHead(&'static [u16]),
}

/// The bytes one client sends on one connection, and what must follow.
pub struct Attack {
    name: String,
    bytes: Vec<u8>,
    answers: Vec<Answer>,
    /// The connection must end after the last answer (always after a
    /// refusal, POLICY.md rule 9).
    closes: bool,
}

/// The allowed request sent before the hostile bytes of [`Attack::after_ping`].
pub const PING: &str = "/_ping?before";

fn refusal_for(bytes: &[u8], statuses: &'static [u16]) -> Answer {
    if bytes.starts_with(b"HEAD ") {
        Answer::RefusedHead(statuses)
    } else {
        Answer::Refused(statuses)
    }
}

impl Attack {
    /// `bytes` alone on a new connection, refused with one of `statuses`.
    pub fn refused(
        name: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
        statuses: &'static [u16],
    ) -> Attack {
        let bytes = bytes.into();
        Attack {
            name: name.into(),
            answers: vec![refusal_for(&bytes, statuses)],
            bytes,
            closes: true,
        }
    }

    /// `bytes` pipelined after an allowed `GET /_ping?before`, refused with
    /// one of `statuses` after the ping is answered.
    pub fn after_ping(
        name: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
        statuses: &'static [u16],
    ) -> Attack {
        let hostile = bytes.into();
        let mut bytes = get(PING);
        bytes.extend_from_slice(&hostile);
        Attack {
            name: name.into(),
            answers: vec![served(PING), refusal_for(&hostile, statuses)],
            bytes,
            closes: true,
        }
    }

    /// `bytes` on a new connection, with `answers` expected; the connection
    /// must close after them if the last is a refusal.
    pub fn answered(
        name: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
        answers: Vec<Answer>,
    ) -> Attack {
        let closes = matches!(
            answers.last(),
            Some(Answer::Refused(_) | Answer::RefusedHead(_))
        );
        Attack {
            name: name.into(),
            bytes: bytes.into(),
            answers,
            closes,
        }
    }

    /// The connection must also end after the last answer.
    #[must_use]
    pub fn then_closed(mut self) -> Attack {
        self.closes = true;
        self
    }

    fn served_lines(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|a| match a {
                Answer::Served(line) | Answer::ServedHead(line) => Some(line.clone()),
                Answer::Refused(_) | Answer::RefusedHead(_) => None,
            })
            .collect()
    }
}

/// The answer to an allowed `GET target`.
pub fn served(target: &str) -> Answer {
    Answer::Served(format!("GET {target} HTTP/1.1"))
}

/// Runs every attack against one proxy (started with `args`) and one fake
/// daemon, then audits all the daemon received. Panics with every failure.
pub fn run_attacks(args: &[&str], attacks: &[Attack]) {
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, args);
    let mut failures: Vec<String> = attacks
        .iter()
        .filter_map(|a| {
            run_one(&proxy, &daemon, a)
                .err()
                .map(|why| format!("{}: {why}\n    sent {}", a.name, show(&a.bytes)))
        })
        .collect();
    // Whatever the proxy forwarded late would arrive now.
    thread::sleep(Duration::from_millis(200));
    failures.extend(audit_daemon(&daemon));
    let expected: Vec<String> = attacks.iter().flat_map(Attack::served_lines).collect();
    let seen = daemon.requests();
    if seen != expected {
        failures.push(format!("the daemon saw {seen:?}\n  expected {expected:?}"));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in {} attacks:\n  {}",
        failures.len(),
        attacks.len(),
        failures.join("\n  ")
    );
}

fn run_one(proxy: &Proxy, daemon: &FakeDaemon, attack: &Attack) -> Result<(), String> {
    let before = daemon.seen().len();
    let mut client = proxy.connect();
    client.send(&attack.bytes);
    for (i, answer) in attack.answers.iter().enumerate() {
        let head = matches!(answer, Answer::ServedHead(_) | Answer::RefusedHead(_));
        let resp = client
            .try_read_response(head, READ_TIMEOUT)
            .map_err(|e| format!("answer {i} ({answer:?}) never came: {e:?}"))?;
        let checked = match answer {
            Answer::Served(line) | Answer::ServedHead(line) => {
                if resp.status == 200 && resp.header("x-seen") == Some(line.as_str()) {
                    Ok(())
                } else {
                    Err(format!("expected the daemon's answer to {line:?}"))
                }
            }
            Answer::Refused(statuses) => resp.check_error(statuses, &[]),
            Answer::RefusedHead(statuses) => resp.check_error_head(statuses),
        };
        checked.map_err(|why| format!("answer {i}: {why}; got {}", show(&resp.raw)))?;
    }
    if attack.closes {
        match client.wait_closed(Duration::from_secs(10)) {
            Ok(rest) if rest.is_empty() => {}
            Ok(rest) => return Err(format!("bytes after the last answer: {}", show(&rest))),
            Err(got) => {
                return Err(format!(
                    "not closed after the last answer; got {}",
                    show(&got)
                ))
            }
        }
    }
    let want = attack.served_lines();
    wait_until(Duration::from_secs(5), || {
        daemon.seen().len() >= before + want.len()
    });
    let got: Vec<String> = daemon.seen()[before..]
        .iter()
        .map(|r| r.line.clone())
        .collect();
    if got != want {
        return Err(format!("the daemon saw {got:?}, expected {want:?}"));
    }
    Ok(())
}

/// A hidden write request, for bodies that try to smuggle one.
const HIDDEN: &str = "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n\
                      Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// A GET /v1.41/info head with `headers` (each ending in CRLF), followed by
/// the hidden request as a chunked body.
fn chunked_smuggle(headers: &str) -> String {
    format!(
        "GET /v1.41/info HTTP/1.1\r\nHost: docker\r\n{headers}\r\n{:x}\r\n{HIDDEN}\r\n0\r\n\r\n",
        HIDDEN.len()
    )
}
