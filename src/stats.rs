//! Counters kept while serving, logged as totals at shutdown.
//!
//! Atomics rather than a lock: every connection updates them and none needs
//! a consistent snapshot of all of them at once.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections accepted and served.
    pub connections: AtomicU64,
    /// Client connections refused at `--max-connections`.
    pub refused_at_limit: AtomicU64,
    /// Requests forwarded to the daemon.
    pub allowed: AtomicU64,
    /// Requests refused (403 and the other 4xx).
    pub denied: AtomicU64,
    /// Connections to the daemon that failed or broke (502).
    pub upstream_errors: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals as `key=value` text.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "connections={} refused_at_limit={} allowed={} denied={} upstream_errors={}",
            get(&self.connections),
            get(&self.refused_at_limit),
            get(&self.allowed),
            get(&self.denied),
            get(&self.upstream_errors),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_each_total() {
        let stats = Stats::default();
        Stats::bump(&stats.allowed);
        Stats::bump(&stats.allowed);
        Stats::bump(&stats.denied);
        assert_eq!(
            stats.summary(),
            "connections=0 refused_at_limit=0 allowed=2 denied=1 upstream_errors=0"
        );
    }
}
