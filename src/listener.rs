//! Accepting clients: one pooled thread per connection, a cap on how many, and an
//! orderly shutdown on SIGINT or SIGTERM.

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

use log::{error, info, warn};

use crate::connection::{self, Context};
use crate::decisions::{self, Caller};
use crate::denial::{Denial, Reason};
use crate::notify;
use crate::pool::Pool;
use crate::reply;
use crate::socket::SafeSocket;
use crate::stats::Stats;
use crate::sys;

/// The open client connections, so that shutdown can stop their reading.
#[derive(Debug, Default)]
struct Registry {
    clients: Mutex<HashMap<u64, Arc<UnixStream>>>,
}

impl Registry {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, Arc<UnixStream>>> {
        // A panic while holding this lock leaves a valid map.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.registry.clients().remove(&self.id);
        self.context.stats.active.fetch_sub(1, Ordering::AcqRel);
    }
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
    // Non-blocking, so that a connection that vanished between poll and
    // accept costs a WouldBlock, not a blocked accept loop.
    socket.listener.set_nonblocking(true)?;
    let registry = Arc::new(Registry::default());
    let pool = Arc::new(Pool::default());
    let next_id = AtomicU64::new(1);
    let active = || usize::try_from(Stats::get(&context.stats.active)).unwrap_or(usize::MAX);

    if let Err(e) = notify::notify("READY=1") {
        warn!("cannot tell systemd that the proxy is ready (NOTIFY_SOCKET): {e}");
    }
    loop {
        // Wait for a client or for the signal handler's byte. The socket
        // itself is left alone, which matters for one passed by systemd:
        // it must stay usable for the next activation.
        let ready = sys::poll_two(
            (socket.listener.as_fd(), true),
            Some((wake.as_fd(), true)),
            None,
        )?;
        if stop.load(Ordering::Acquire) || ready[1].readable {
            break;
        }
        let client = match socket.listener.accept() {
            Ok((client, _)) => client,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // Out of descriptors or memory: wait instead of spinning; the
                // connections that end will free what is needed.
                error!("accepting a connection failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active() >= max_connections {
            refuse_at_limit(&client, &context.stats, max_connections);
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        start_connection(id, client, context, &registry, &pool);
    }

    let _ = notify::notify("STOPPING=1");
    info!(
        "shutting down: stopped accepting, waiting up to {} s for {} connection(s)",
        grace.as_secs(),
        active()
    );
    socket.remove_file();
    // Reading stops on every connection; responses being relayed go on.
    for client in registry.clients().values() {
        let _ = client.shutdown(Shutdown::Read);
    }
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

fn start_connection(
    id: u64,
    client: UnixStream,
    context: &Arc<Context>,
    registry: &Arc<Registry>,
    pool: &Arc<Pool>,
) {
    let peer = sys::peer_credentials(client.as_fd());
    let client = Arc::new(client);
    context.stats.active.fetch_add(1, Ordering::AcqRel);
    registry.clients().insert(id, Arc::clone(&client));
    let registration = Registration {
        id,
        registry: Arc::clone(registry),
        context: Arc::clone(context),
    };
    Stats::bump(&context.stats.connections);

    let thread_context = Arc::clone(context);
    let thread_client = Arc::clone(&client);
    let spawned = pool.execute(move || {
        let _registration = registration;
        connection::serve(id, thread_client, peer, thread_context);
    });
    if let Err(e) = spawned {
        error!("cannot start a thread for connection {id}: {e}");
        let denial = Denial::new(
            Reason::ConnectionLimit,
            format!("the proxy cannot start a thread: {e}"),
        );
        context.stats.count_denial(denial.reason);
        let _ = (&*client).write_all(&reply::error_response(&denial, false));
    }
}

/// Answers 503 without spawning anything: the accept loop must not block on
/// a client, so the write is non-blocking (an empty socket buffer takes it).
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
/// and writes a byte to `waker` to wake the accept loop. Connecting to the
/// socket instead would not do: the proxy may lack permission to connect to
/// a socket systemd created for its clients.
fn install_signal_handler(stop: &Arc<AtomicBool>, mut waker: File) -> io::Result<()> {
    let stop = Arc::clone(stop);
    ctrlc::set_handler(move || {
        stop.store(true, Ordering::Release);
        let _ = waker.write_all(b"x");
    })
    .map_err(io::Error::other)
}
