//! Load: 64 concurrent clients mixing keep-alive, pipelined, allowed and
//! denied requests, GET and HEAD, against the real binary.
//!
//! Every response must be the right one, in order, byte for byte: the fake
//! daemon answers each allowed request with a body that names its method and
//! target (plain or chunked), so a response relayed to the wrong request, cut
//! or merged with another cannot pass; each denial must equal, byte for
//! byte, the reference answer to the same request taken before the run. The
//! daemon must have received exactly the allowed requests, in the shape the
//! proxy writes and no byte more. After the run the proxy must hold no more
//! threads or descriptors than after a warm-up of the same mix, and not
//! much more memory.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    audit_daemon, request, settled_usage, show, wait_back_to, Client, FakeDaemon, Proxy, Reply,
    Usage,
};

/// Clients at once.
const CLIENTS: usize = 64;

/// Requests each client sends in the measured run: the 10,000 per
/// client, since the whole test takes 45 to 75 s on the two-core machine
/// with the debug binary and other builds running (the run alone 29 to 53
/// s; the timings are printed at the end of the test).
const PER_CLIENT: usize = 10_000;

/// Requests each client sends in the warm-up, before the baseline is taken:
/// enough for the allocator to reach most of its high-water mark.
const WARM_UP_PER_CLIENT: usize = 2_000;

/// How much more resident memory than after the warm-up the proxy may hold
/// after the run. Measured: 1.9 to 2.0 MiB more after this warm-up (2.5 to
/// 2.9 MiB after a warm-up half as long), all of it heap that glibc keeps
/// once touched; rounds of 128,000 requests in one proxy level off at that
/// height instead of climbing. 5 MiB is under 8 bytes per request of the run
/// or 730 bytes per connection; leaking 1 KiB per connection made it grow by
/// 10 MiB.
const RSS_MARGIN_KIB: u64 = 5 * 1024;

/// The daemon's answer to `method target`: a body naming both, chunked when
/// the target asks for it; HEAD gets the head alone.
fn canned(method: &str, target: &str) -> Vec<u8> {
    let body = format!("{{\"method\":\"{method}\",\"target\":\"{target}\"}}");
    let (framing, encoded) = if target.contains("chunked") {
        let (a, b) = body.split_at(body.len() / 2);
        let encoded = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
        ("Transfer-Encoding: chunked".to_owned(), encoded)
    } else {
        (format!("Content-Length: {}", body.len()), body)
    };
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n")
        .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(encoded.as_bytes());
    }
    out
}

/// The denied requests of the mix, each always the same bytes so that its
/// answer is always the same bytes.
const DENIED: [&[u8]; 4] = [
    b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n",
    b"GET /v1.41/containers/abc/export HTTP/1.1\r\nHost: docker\r\n\r\n",
    b"GET /v1.41/containers/a%2Fb/json HTTP/1.1\r\nHost: docker\r\n\r\n",
    b"HEAD /v1.41/containers/abc/archive?path=/ HTTP/1.1\r\nHost: docker\r\n\r\n",
];

/// The proxy's answer to each of [`DENIED`], checked against the contract.
fn reference_denials(proxy: &Proxy) -> Vec<Vec<u8>> {
    DENIED
        .iter()
        .map(|raw| {
            let head = raw.starts_with(b"HEAD ");
            let mut client = proxy.connect();
            client.send(raw);
            let resp = client
                .try_read_response(head, common::READ_TIMEOUT)
                .unwrap();
            let checked = if head {
                resp.check_error_head(&[403])
            } else {
                resp.check_error(&[400, 403], &[])
            };
            checked.unwrap_or_else(|e| panic!("{}: {e}", show(raw)));
            client
                .wait_closed(Duration::from_secs(10))
                .expect("closed after a denial");
            resp.raw
        })
        .collect()
}

/// A small xorshift generator: the same mix on every run.
struct Mix(u64);

impl Mix {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap()
    }
}

/// What one client did.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    allowed: usize,
    denied: usize,
    pipelined_batches: usize,
    connections: usize,
}

/// One request of a batch: what was sent, and the exact answer due.
struct Sent {
    bytes: Vec<u8>,
    head: bool,
    expected: Vec<u8>,
    /// The connection ends after this answer.
    closes: bool,
}

/// Runs the mix for client `id` until it has sent `total` requests; every
/// allowed target holds `round`, `id` and the request's number, so that no
/// two requests of the test share one.
fn client_mix(proxy: &Proxy, round: &str, id: usize, total: usize, denials: &[Vec<u8>]) -> Counts {
    let mut mix = Mix(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut counts = Counts::default();
    let mut client: Option<Client> = None;
    let mut n = 0;
    while n < total {
        let allowed = |n: usize, mix: &mut Mix| {
            let target = match mix.below(4) {
                0 => format!("/v1.41/containers/json?r={round}&c={id}&n={n}"),
                1 => format!("/_ping?r={round}&c={id}&n={n}&chunked"),
                2 => format!("/v1.41/containers/web-{id}/json?r={round}&n={n}"),
                _ => format!("/images/docker.io/library/redis:7/json?r={round}&c={id}&n={n}"),
            };
            let method = if mix.below(5) == 0 { "HEAD" } else { "GET" };
            let close = mix.below(200) == 0;
            let extra = if close { "Connection: close\r\n" } else { "" };
            Sent {
                bytes: request(method, &target, extra),
                head: method == "HEAD",
                expected: canned(method, &target),
                closes: close,
            }
        };
        // Of a hundred steps, 62 send one keep-alive request, 33 a pipelined
        // batch of 2 to 40 (past the 32 the proxy holds), 3 a batch that ends
        // in a denied request and 2 a denied request alone. Denials close the
        // connection (POLICY.md rule 9) and the client reconnects.
        let mut batch = Vec::new();
        let step = mix.below(100);
        let size = match step {
            0..=61 => 1,
            98..=99 => 0,
            _ => 2 + mix.below(39),
        };
        for _ in 0..size.min(total - n) {
            let sent = allowed(n, &mut mix);
            n += 1;
            let closes = sent.closes;
            batch.push(sent);
            if closes {
                break;
            }
        }
        if step >= 95 && n < total && !batch.last().is_some_and(|s| s.closes) {
            let d = mix.below(DENIED.len());
            batch.push(Sent {
                bytes: DENIED[d].to_vec(),
                head: DENIED[d].starts_with(b"HEAD "),
                expected: denials[d].clone(),
                closes: true,
            });
            n += 1;
        }

        let conn = client.get_or_insert_with(|| {
            counts.connections += 1;
            proxy.connect()
        });
        conn.send(
            &batch
                .iter()
                .flat_map(|s| s.bytes.clone())
                .collect::<Vec<u8>>(),
        );
        if batch.len() > 1 {
            counts.pipelined_batches += 1;
        }
        for (i, sent) in batch.iter().enumerate() {
            let got = conn
                .try_read_response(sent.head, common::READ_TIMEOUT)
                .unwrap_or_else(|e| {
                    panic!(
                        "client {id}: no answer {i} of {} to {}: {e:?}",
                        batch.len(),
                        show(&sent.bytes)
                    )
                });
            assert!(
                got.raw == sent.expected,
                "client {id}: answer {i} of {} to {}\n  got      {}\n  expected {}",
                batch.len(),
                show(&sent.bytes),
                show(&got.raw),
                show(&sent.expected)
            );
            if sent.expected.starts_with(b"HTTP/1.1 200") {
                counts.allowed += 1;
            } else {
                counts.denied += 1;
            }
        }
        if batch.last().is_some_and(|s| s.closes) {
            let mut ended = client.take().unwrap();
            if let Err(got) = ended.wait_closed(Duration::from_secs(10)) {
                panic!(
                    "client {id}: not closed after a close or a denial; got {}",
                    show(&got)
                );
            }
        }
    }
    counts
}

/// Runs `per_client` requests on each of the clients at once; returns the
/// totals.
fn run_clients(proxy: &Proxy, round: &str, per_client: usize, denials: &[Vec<u8>]) -> Counts {
    thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|id| s.spawn(move || client_mix(proxy, round, id, per_client, denials)))
            .collect();
        workers.into_iter().fold(Counts::default(), |sum, w| {
            let c = w.join().expect("a client failed");
            Counts {
                allowed: sum.allowed + c.allowed,
                denied: sum.denied + c.denied,
                pipelined_batches: sum.pipelined_batches + c.pipelined_batches,
                connections: sum.connections + c.connections,
            }
        })
    })
}

/// The soft limit on open files of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn sixty_four_clients_mixing_every_kind_of_request_get_exact_answers_and_leave_nothing_behind() {
    // The fake daemon keeps a descriptor for every connection it accepted
    // (about 8,000 here: one per client connection that reached it).
    let limit = open_files_limit().unwrap_or(0);
    assert!(
        limit >= 12_000,
        "this test needs about 10,000 open files and the limit is {limit}: raise it (ulimit -n)"
    );
    let started = Instant::now();
    let daemon = FakeDaemon::start();
    daemon.respond(|req| Reply::Raw(canned(&req.method, &req.target)));
    let proxy = Proxy::start(&daemon, &[]);
    let pid = proxy.pid();
    let denials = reference_denials(&proxy);

    let warm = run_clients(&proxy, "warm", WARM_UP_PER_CLIENT, &denials);
    let baseline = settled_usage(pid, Duration::from_millis(1500));
    let warmed = started.elapsed();

    let run_start = Instant::now();
    let counts = run_clients(&proxy, "run", PER_CLIENT, &denials);
    let ended = Instant::now();
    let run_time = ended - run_start;

    // The pool keeps threads 1 s after their last connection; 5 s more is
    // slack for a loaded machine (this is not a bound the issue states).
    let back = wait_back_to(pid, &baseline, ended, Duration::from_secs(6)).unwrap_or_else(|last| {
        panic!("threads or descriptors grew: baseline {baseline:?}, after {last:?}")
    });
    let after = Usage::of(pid);
    eprintln!(
        "load: {CLIENTS} clients x {PER_CLIENT} requests in {run_time:?} ({} allowed, {} denied, \
         {} pipelined batches, {} connections); warm-up {warm:?} took {warmed:?}; \
         baseline {baseline:?}, after {after:?}, counts back after {back:?}",
        counts.allowed, counts.denied, counts.pipelined_batches, counts.connections
    );
    assert_eq!(counts.allowed + counts.denied, CLIENTS * PER_CLIENT);
    assert!(
        after.rss_kib <= baseline.rss_kib + RSS_MARGIN_KIB,
        "resident memory grew from {} KiB to {} KiB",
        baseline.rss_kib,
        after.rss_kib
    );

    // The daemon saw exactly the allowed requests, each once, and nothing else.
    let seen = daemon.seen();
    assert_eq!(
        seen.len(),
        warm.allowed + counts.allowed,
        "allowed requests forwarded"
    );
    let mut per_target: HashMap<&str, usize> = HashMap::new();
    for r in &seen {
        *per_target.entry(r.target.as_str()).or_default() += 1;
    }
    let repeated: Vec<_> = per_target.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(
        repeated.is_empty(),
        "forwarded more than once: {repeated:?}"
    );
    let problems = audit_daemon(&daemon);
    assert!(
        problems.is_empty(),
        "{}",
        problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
