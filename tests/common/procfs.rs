//! [`Usage`]: what a running process holds, read from `/proc`: its threads,
//! its open descriptors and its resident memory. The fault and load tests
//! compare it with a baseline to show that nothing a connection took is kept
//! after the connection ends.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

/// Threads, descriptors and resident memory of one process at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Entries of `/proc/PID/task`.
    pub threads: usize,
    /// Entries of `/proc/PID/fd`.
    pub fds: usize,
    /// `VmRSS` of `/proc/PID/status`, in KiB.
    pub rss_kib: u64,
}

impl Usage {
    /// Reads the usage of process `pid`; panics if it is gone.
    pub fn of(pid: u32) -> Usage {
        let count = |what: &str| {
            fs::read_dir(format!("/proc/{pid}/{what}"))
                .unwrap_or_else(|e| panic!("read /proc/{pid}/{what}: {e}"))
                .count()
        };
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
        Usage {
            threads: count("task"),
            fds: count("fd"),
            rss_kib,
        }
    }

    /// Whether the thread and descriptor counts are at most `baseline`'s.
    pub fn within_counts_of(&self, baseline: &Usage) -> bool {
        self.threads <= baseline.threads && self.fds <= baseline.fds
    }
}

/// Waits until the thread and descriptor counts of `pid` have not changed
/// for `quiet`, and returns the usage then. A proxy that just started still
/// has the pool thread that served its readiness probe; it ends after the
/// pool's one-second linger.
pub fn settled_usage(pid: u32, quiet: Duration) -> Usage {
    let give_up = Instant::now() + super::DEADLINE;
    let mut last = Usage::of(pid);
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = Usage::of(pid);
        if (now.threads, now.fds) != (last.threads, last.fds) {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            Instant::now() < give_up,
            "the usage of process {pid} never settled: last {last:?}"
        );
    }
}

/// Polls `pid` every 10 ms until its thread and descriptor counts are back
/// at or below `baseline`'s. Returns how long after `since` that was, or the
/// last usage read if it did not happen by `since + timeout`.
pub fn wait_back_to(
    pid: u32,
    baseline: &Usage,
    since: Instant,
    timeout: Duration,
) -> Result<Duration, Usage> {
    loop {
        let now = Usage::of(pid);
        if now.within_counts_of(baseline) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            return Err(now);
        }
        thread::sleep(Duration::from_millis(10));
    }
}
