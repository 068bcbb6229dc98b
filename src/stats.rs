//! Counters kept while serving: exported by `metrics.rs` and logged as totals
//! at shutdown.
//!
//! Atomics rather than a lock: every connection updates them and nothing
//! needs a consistent snapshot of all of them at once.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::denial::Reason;

/// Totals since start, plus the connections open now.
#[derive(Debug)]
pub struct Stats {
    /// Client connections accepted and served.
    pub connections: AtomicU64,
    /// Client connections open now.
    pub active: AtomicU64,
    /// Client connections refused at `--max-connections`.
    pub refused_at_limit: AtomicU64,
    /// Requests forwarded to the daemon.
    pub allowed: AtomicU64,
    /// Refusals by reason, indexed by [`Reason::index`].
    pub denied: [AtomicU64; Reason::ALL.len()],
    /// Allowed requests by the whitelist rule that matched, in rule order.
    pub rule_hits: Vec<AtomicU64>,
    /// Daemon connections that failed or broke.
    pub upstream_errors: AtomicU64,
    /// Bytes of request heads written to the daemon.
    pub bytes_to_daemon: AtomicU64,
    /// Bytes written to clients (relayed responses and the proxy's errors).
    pub bytes_to_clients: AtomicU64,
}

impl Stats {
    /// Zeroed counters for a whitelist of `rules` rules.
    pub fn new(rules: usize) -> Stats {
        Stats {
            connections: AtomicU64::new(0),
            active: AtomicU64::new(0),
            refused_at_limit: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            denied: std::array::from_fn(|_| AtomicU64::new(0)),
            rule_hits: (0..rules).map(|_| AtomicU64::new(0)).collect(),
            upstream_errors: AtomicU64::new(0),
            bytes_to_daemon: AtomicU64::new(0),
            bytes_to_clients: AtomicU64::new(0),
        }
    }

    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a refusal.
    pub fn count_denial(&self, reason: Reason) {
        Stats::bump(&self.denied[reason.index()]);
    }

    /// All refusals together; a 502 is a failure of the daemon, counted in
    /// `upstream_errors`, not a refusal.
    pub fn denied_total(&self) -> u64 {
        Reason::ALL
            .iter()
            .filter(|&&r| r != Reason::Upstream)
            .map(|r| Stats::get(&self.denied[r.index()]))
            .sum()
    }

    /// The totals as `key=value` text, for the shutdown line.
    pub fn summary(&self) -> String {
        let mut by_reason: Vec<String> = Reason::ALL
            .iter()
            .filter(|r| Stats::get(&self.denied[r.index()]) > 0)
            .map(|r| format!("{}:{}", r.code(), Stats::get(&self.denied[r.index()])))
            .collect();
        if by_reason.is_empty() {
            by_reason.push("-".to_owned());
        }
        format!(
            "connections={} refused_at_limit={} allowed={} denied={} denied_by_reason={} upstream_errors={} bytes_to_daemon={} bytes_to_clients={}",
            Stats::get(&self.connections),
            Stats::get(&self.refused_at_limit),
            Stats::get(&self.allowed),
            self.denied_total(),
            by_reason.join(","),
            Stats::get(&self.upstream_errors),
            Stats::get(&self.bytes_to_daemon),
            Stats::get(&self.bytes_to_clients),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_each_total_and_reason() {
        let stats = Stats::new(2);
        Stats::bump(&stats.allowed);
        Stats::bump(&stats.allowed);
        stats.count_denial(Reason::Method);
        stats.count_denial(Reason::Method);
        stats.count_denial(Reason::Body);
        Stats::add(&stats.bytes_to_clients, 10);
        assert_eq!(
            stats.summary(),
            "connections=0 refused_at_limit=0 allowed=2 denied=3 denied_by_reason=method:2,body:1 upstream_errors=0 bytes_to_daemon=0 bytes_to_clients=10"
        );
    }
}
