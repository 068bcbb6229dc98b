//! Taking clients in: one pooled thread per connection (`pool.rs`), a cap on
//! how many, and an orderly shutdown on SIGINT or SIGTERM.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::connection::{self, Context};
use crate::decisions::{self, Caller};
use crate::denial::{Denial, Reason};
use crate::notify;
use crate::pool::{Pool, IDLE_THREAD_SECS};
use crate::reply;
use crate::socket::SafeSocket;
use crate::stats::Stats;
use crate::sys;

/// The open client connections, so that shutdown can stop their reading.
/// Every connection is added and removed by its own thread; the map is
/// split in shards so that those threads rarely wait for one another (one
/// shared lock was contended at every connection under load).
struct Registry {
    shards: [Mutex<HashMap<u64, Arc<UnixStream>>>; REGISTRY_SHARDS],
}

const REGISTRY_SHARDS: usize = 16;

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Registry {
    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<UnixStream>>> {
        let index = usize::try_from(id % REGISTRY_SHARDS as u64).unwrap_or(0);
        // A panic while holding this lock leaves a valid map.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `f` on every registered connection.
    fn for_each(&self, mut f: impl FnMut(&UnixStream)) {
        for id in 0..REGISTRY_SHARDS as u64 {
            self.shard(id).values().for_each(|client| f(client));
        }
    }
}

/// Unregisters a connection when its thread ends, by return or by panic.
struct Registration {
    id: u64,
    registry: Arc<Registry>,
    context: Arc<Context>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.shard(self.id).remove(&self.id);
        self.context.stats.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every pool thread needs to take a connection in.
struct Acceptance {
    context: Arc<Context>,
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    next_id: AtomicU64,
    max_connections: usize,
}

/// Serves `socket` until SIGINT or SIGTERM, then lets in-flight requests
/// finish for up to `grace` and returns.
pub fn serve(
    socket: &SafeSocket,
    context: &Arc<Context>,
    max_connections: usize,
    grace: Duration,
) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let (wake, waker) = sys::wake_pipe()?;
    install_signal_handler(&stop, waker)?;
    let registry = Arc::new(Registry::default());
    let acceptance = Acceptance {
        context: Arc::clone(context),
        registry: Arc::clone(&registry),
        stop: Arc::clone(&stop),
        next_id: AtomicU64::new(1),
        max_connections,
    };
    // The pool accepts on its own descriptor of the socket; the socket
    // itself is never shut down, which matters for one passed by systemd:
    // it must stay usable for the next activation.
    let _pool = Pool::start(
        socket.listener.try_clone()?,
        Duration::from_secs(IDLE_THREAD_SECS),
        Arc::clone(&stop),
        Box::new(move |client| acceptance.take(client)),
    )?;
    let active = || usize::try_from(Stats::get(&context.stats.active)).unwrap_or(usize::MAX);

    if let Err(e) = notify::notify("READY=1") {
        warn!("cannot tell systemd that the proxy is ready (NOTIFY_SOCKET): {e}");
    }
    // Wait for the signal handler's byte.
    while !stop.load(Ordering::Acquire) {
        if sys::poll_two((wake.as_fd(), true), None, None)?[0].readable {
            break;
        }
    }

    let _ = notify::notify("STOPPING=1");
    info!(
        "shutting down: stopped accepting, waiting up to {} s for {} connection(s)",
        grace.as_secs(),
        active()
    );
    socket.remove_file();
    // Reading stops on every connection; responses being relayed go on. A
    // connection registered after this sees `stop` and stops its own.
    registry.for_each(|client| {
        let _ = client.shutdown(Shutdown::Read);
    });
    let deadline = Instant::now() + grace;
    while active() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let left = active();
    if left > 0 {
        info!("closing {left} connection(s) still open after the grace period");
    }
    Ok(())
}

impl Acceptance {
    /// Serves one accepted connection on the calling pool thread, or
    /// refuses it at the connection cap.
    fn take(&self, client: UnixStream) {
        let stats = &self.context.stats;
        // Counted before the check, so that threads accepting at the same
        // moment cannot together pass the cap.
        let before = stats.active.fetch_add(1, Ordering::AcqRel);
        if usize::try_from(before).unwrap_or(usize::MAX) >= self.max_connections {
            stats.active.fetch_sub(1, Ordering::AcqRel);
            refuse_at_limit(&client, stats, self.max_connections);
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = sys::peer_credentials(client.as_fd());
        let client = Arc::new(client);
        self.registry.shard(id).insert(id, Arc::clone(&client));
        let _registration = Registration {
            id,
            registry: Arc::clone(&self.registry),
            context: Arc::clone(&self.context),
        };
        if self.stop.load(Ordering::Acquire) {
            let _ = client.shutdown(Shutdown::Read);
        }
        Stats::bump(&stats.connections);
        connection::serve(id, client, peer, Arc::clone(&self.context));
    }
}

/// Answers 503 and closes: the write is non-blocking (an empty socket
/// buffer takes it), so that a client that reads nothing cannot hold a pool
/// thread.
fn refuse_at_limit(client: &UnixStream, stats: &Stats, max_connections: usize) {
    Stats::bump(&stats.refused_at_limit);
    let denial = Denial::new(
        Reason::ConnectionLimit,
        format!("the proxy is serving its maximum of {max_connections} connections; retry later"),
    );
    stats.count_denial(denial.reason);
    decisions::denied(&Caller::unserved(), &denial);
    if client.set_nonblocking(true).is_ok() {
        let _ = (&*client).write_all(&reply::error_response(&denial, false));
        let _ = client.shutdown(Shutdown::Write);
    }
}

/// On SIGINT, SIGTERM or SIGHUP (ctrlc's `termination` feature), sets `stop`
/// and writes a byte to `waker` to wake the main thread.
fn install_signal_handler(stop: &Arc<AtomicBool>, mut waker: File) -> io::Result<()> {
    let stop = Arc::clone(stop);
    ctrlc::set_handler(move || {
        stop.store(true, Ordering::Release);
        let _ = waker.write_all(b"x");
    })
    .map_err(io::Error::other)
}
