//! Clients by the hundred: 200 that vanish in the middle of streams must
//! leave no thread or descriptor behind, and 200 that trickle a head one
//! byte a second must each get a 408 at the deadline without slowing the
//! ordinary clients served meanwhile.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use super::{assert_served, heavy, open_streams};
use crate::common::{
    audit_daemon, settled_usage, show, wait_back_to, wait_until, Client, FakeDaemon, Proxy, Usage,
    DEADLINE,
};

#[test]
fn two_hundred_clients_vanishing_mid_stream_leave_no_thread_or_descriptor_behind() {
    let _heavy = heavy();
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &[]);
    let pid = proxy.pid();
    let baseline = settled_usage(pid, Duration::from_millis(1500));

    let mut clients = open_streams(&proxy, &daemon, 200);
    // They leave with answers unread and, half of them, with half a head of
    // a next request held by the proxy.
    for _ in 0..3 {
        daemon.push_chunk(b"{\"status\":\"never-read\"}\n");
    }
    for client in clients.iter_mut().step_by(2) {
        client.send(b"GET /v1.41/inf");
    }
    let during = Usage::of(pid);
    assert!(
        during.threads >= baseline.threads + 200 && during.fds >= baseline.fds + 400,
        "the counts do not see the connections: baseline {baseline:?}, during {during:?}"
    );

    drop(clients);
    let closed = Instant::now();
    // The bound: back to the baseline within 2 s of the last close
    // (pool threads linger 1 s by design), plus 1 s of slack for waking and
    // ending 200 threads on a loaded two-core machine.
    let took =
        wait_back_to(pid, &baseline, closed, Duration::from_secs(20)).unwrap_or_else(|last| {
            panic!("not back to the baseline {baseline:?} 20 s after the clients left: {last:?}")
        });
    eprintln!("200 vanished clients: back to {baseline:?} after {took:?} (during: {during:?})");
    assert!(
        took <= Duration::from_secs(3),
        "threads and descriptors took {took:?} to return to {baseline:?}"
    );
    assert!(
        wait_until(DEADLINE, || daemon.closed_connections() == 200),
        "{} of 200 daemon connections closed",
        daemon.closed_connections()
    );
}

/// The header timeout of the slow-client test, in seconds.
const SLOW_TIMEOUT: u64 = 3;

/// What one slow client saw: when it connected, when its answer came, and
/// the answer, if the connection then closed.
struct SlowOutcome {
    connected: Instant,
    answered: Instant,
    response: Result<crate::common::Response, String>,
}

/// Reads the answer of one slow client, and waits for the close after it.
fn slow_outcome(connected: Instant, mut client: Client) -> SlowOutcome {
    let response = client
        .try_read_response(false, Duration::from_secs(SLOW_TIMEOUT + 15))
        .map_err(|e| format!("{e:?}"));
    let answered = Instant::now();
    let response = response.and_then(|r| {
        client
            .wait_closed(Duration::from_secs(10))
            .map(|_| r)
            .map_err(|got| format!("not closed after the 408; got {}", show(&got)))
    });
    SlowOutcome {
        connected,
        answered,
        response,
    }
}

/// Writes one byte of a head a second on each of `writers`, for longer than
/// the header timeout.
fn trickle(writers: &[UnixStream]) {
    let head = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Slow: 1\r\n\r\n";
    for &byte in head.iter().take(usize::try_from(SLOW_TIMEOUT).unwrap() + 4) {
        for mut w in writers {
            let _ = w.write_all(&[byte]);
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// Each slow client's failure: not a 408 of the contract's shape, or not at
/// the deadline.
fn slow_failures(outcomes: &[SlowOutcome]) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        if let Err(why) = o
            .response
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| r.check_error(&[408], &["within 3 s"]))
        {
            failures.push(format!("slow client {i}: {why}"));
        }
        // The bound: 408 at the header deadline. It cannot come
        // before it (the proxy's clock starts at its accept, after our
        // connect); 1.5 s of slack after it for waking 200 threads at once.
        let after = o.answered - o.connected;
        let deadline = Duration::from_secs(SLOW_TIMEOUT);
        if after < deadline || after > deadline + Duration::from_millis(1500) {
            failures.push(format!(
                "slow client {i}: answered {after:?} after connecting"
            ));
        }
    }
    failures
}

#[test]
fn two_hundred_slow_heads_get_408_at_the_deadline_while_others_are_served() {
    let _heavy = heavy();
    let daemon = FakeDaemon::start();
    let proxy = Proxy::start(&daemon, &["--header-timeout", "3", "--idle-timeout", "30"]);
    let slow: Vec<(Instant, Client)> = (0..200)
        .map(|_| {
            let client = proxy.connect();
            (Instant::now(), client)
        })
        .collect();
    let writers: Vec<UnixStream> = slow
        .iter()
        .map(|(_, c)| c.socket().try_clone().expect("clone"))
        .collect();
    let started = Instant::now();
    let mut ordinary = Vec::new();
    let outcomes: Vec<SlowOutcome> = thread::scope(|s| {
        s.spawn(move || trickle(&writers));
        let readers: Vec<_> = slow
            .into_iter()
            .map(|(connected, client)| s.spawn(move || slow_outcome(connected, client)))
            .collect();
        // Meanwhile, ordinary requests on new and on one kept-alive
        // connection, until shortly before the slow clients' deadline.
        let mut kept = proxy.connect();
        let until = Duration::from_millis(SLOW_TIMEOUT * 1000 - 800);
        let mut n = 0;
        while started.elapsed() < until {
            let sent = Instant::now();
            assert_served(&mut proxy.connect(), &format!("/_ping?ordinary={n}"));
            assert_served(&mut kept, &format!("/_ping?kept={n}"));
            ordinary.push((sent, Instant::now()));
            n += 1;
            thread::sleep(Duration::from_millis(200));
        }
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });

    let failures = slow_failures(&outcomes);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let latest = outcomes.iter().map(|o| o.answered - o.connected).max();
    let slowest = ordinary.iter().map(|(a, b)| *b - *a).max();
    eprintln!(
        "200 slow heads: 408 at most {latest:?} after connecting; {} ordinary round trips \
         (pairs) meanwhile, slowest {slowest:?}",
        ordinary.len()
    );
    let first_408 = outcomes.iter().map(|o| o.answered).min().unwrap();
    assert!(
        ordinary.len() >= 3 && ordinary.iter().all(|(_, done)| *done < first_408),
        "only {} ordinary round trips were answered before the first 408",
        ordinary.len()
    );
    let seen = daemon.requests();
    assert!(
        seen.iter()
            .all(|l| l.contains("ordinary=") || l.contains("kept=")),
        "a slow head reached the daemon: {seen:?}"
    );
    assert!(
        audit_daemon(&daemon).is_empty(),
        "{:?}",
        audit_daemon(&daemon)
    );
}
