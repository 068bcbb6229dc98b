//! The connection threads. Each one waits in `accept(2)` on the listening
//! socket, serves the connection it gets to its end, and goes back to
//! waiting; a thread is reused for connection after connection.
//!
//! Why threads accept for themselves: creating and ending a thread costs
//! more than serving a short request (stack mapping, guard page, signal
//! stack; PERF-NOTES.md measured 264 µs of CPU per connection with new
//! threads against 70 µs with reused ones), and handing each accepted
//! connection from an accept loop to a waiting thread costs two wake-ups
//! and a lock where one wake-up will do. The kernel wakes one waiting
//! thread per connection (waits in accept are exclusive), so waiting
//! threads do not stampede.
//!
//! How many: the thread that takes the last waiting place starts a
//! successor before it serves, so that, as long as threads can be created,
//! one is always waiting. A wait in accept ends after the idle time
//! (SO_RCVTIMEO on the listening socket); a thread whose wait ended while
//! others wait ends too. After a burst the process is back to one waiting
//! thread within about [`IDLE_THREAD_SECS`].

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::error;

use crate::limits::THREAD_STACK_BYTES;
use crate::sys;

/// How long a thread without a connection waits before it ends.
pub const IDLE_THREAD_SECS: u64 = 1;

/// What a pool thread does with each connection it accepts.
pub type Handler = Box<dyn Fn(UnixStream) + Send + Sync>;

/// The threads accepting on one listening socket.
pub struct Pool {
    listener: UnixListener,
    handler: Handler,
    /// Once set, a thread whose accept returns serves what it got and ends.
    stop: Arc<AtomicBool>,
    /// Threads in accept, or about to be: counted by whoever starts a
    /// thread, and by the thread itself before each later wait.
    waiting: AtomicUsize,
}

impl Pool {
    /// Starts the first thread accepting on `listener`. A wait in accept
    /// ends after `idle`; `handler` serves each connection, on the thread
    /// that accepted it.
    pub fn start(
        listener: UnixListener,
        idle: Duration,
        stop: Arc<AtomicBool>,
        handler: Handler,
    ) -> io::Result<Arc<Pool>> {
        listener.set_nonblocking(false)?;
        sys::set_accept_timeout(listener.as_fd(), idle)?;
        let pool = Arc::new(Pool {
            listener,
            handler,
            stop,
            waiting: AtomicUsize::new(0),
        });
        pool.spawn()?;
        Ok(pool)
    }

    /// Threads waiting for a connection now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn spawn(self: &Arc<Pool>) -> io::Result<()> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let pool = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("connection".to_owned())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || pool.work());
        if let Err(e) = spawned {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    /// Accepts and serves until this thread is surplus or the pool stops.
    /// The thread is already counted in `waiting` when this starts.
    fn work(self: &Arc<Pool>) {
        loop {
            let accepted = self.listener.accept();
            let others_waiting = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
            let stopping = self.stop.load(Ordering::Acquire);
            match accepted {
                Ok((client, _)) => {
                    if others_waiting == 0 && !stopping {
                        if let Err(e) = self.spawn() {
                            // New clients wait in the socket's backlog until
                            // a thread is done with its connection.
                            error!("cannot start a connection thread: {e}; new connections wait for a free one");
                        }
                    }
                    (self.handler)(client);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if others_waiting > 0 {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or memory: wait instead of spinning;
                    // the connections that end free what is needed.
                    error!("accepting a connection failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
            if stopping || self.stop.load(Ordering::Acquire) {
                // A connection taken while stopping was served (the handler
                // sees the flag too); no more are taken, so that a socket
                // passed by systemd keeps them for the next activation.
                return;
            }
            self.waiting.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::time::Instant;

    /// A pool on a fresh socket whose handler sends each connection to the
    /// returned channel (with the serving thread's id) and then echoes one
    /// byte, so a test decides when each connection ends.
    fn echo_pool(
        idle: Duration,
    ) -> (
        Arc<Pool>,
        std::path::PathBuf,
        mpsc::Receiver<thread::ThreadId>,
        Arc<AtomicBool>,
    ) {
        let dir = std::env::temp_dir().join(format!(
            "df-pool-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (served, connections) = mpsc::channel();
        let served = std::sync::Mutex::new(served);
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Box::new(move |mut client: UnixStream| {
            let _ = served.lock().unwrap().send(thread::current().id());
            let mut byte = [0u8; 1];
            if client.read_exact(&mut byte).is_ok() {
                let _ = client.write_all(&byte);
            }
        });
        let pool = Pool::start(listener, idle, Arc::clone(&stop), handler).unwrap();
        (pool, path, connections, stop)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < give_up, "gave up waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Opens `n` connections to `path` and waits until each is being
    /// served; returns them and the ids of the threads that serve them.
    fn open_served(
        path: &std::path::Path,
        connections: &mpsc::Receiver<thread::ThreadId>,
        n: usize,
    ) -> (Vec<UnixStream>, Vec<thread::ThreadId>) {
        let clients = (0..n).map(|_| UnixStream::connect(path).unwrap()).collect();
        let threads = (0..n).map(|_| connections.recv().unwrap()).collect();
        (clients, threads)
    }

    /// How many different threads are in `ids`.
    fn distinct(mut ids: Vec<thread::ThreadId>) -> usize {
        ids.sort_unstable_by_key(|id| format!("{id:?}"));
        ids.dedup();
        ids.len()
    }

    fn round_trip(client: &mut UnixStream) {
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).unwrap();
    }

    #[test]
    fn a_thread_that_finished_a_connection_takes_the_next() {
        let (pool, path, connections, _stop) = echo_pool(Duration::from_secs(30));
        let mut first = UnixStream::connect(&path).unwrap();
        let first_thread = connections.recv().unwrap();
        round_trip(&mut first);
        // The first thread started a successor before serving; once it is
        // back, two wait, and the next connection goes to one of them.
        wait_for("two waiting threads", || pool.waiting() == 2);
        let mut seen = vec![first_thread];
        for _ in 0..4 {
            let mut next = UnixStream::connect(&path).unwrap();
            seen.push(connections.recv().unwrap());
            round_trip(&mut next);
            wait_for("the thread to be back", || pool.waiting() == 2);
        }
        let used = distinct(seen);
        assert!(used <= 2, "five connections used {used} threads");
    }

    #[test]
    fn busy_threads_make_the_pool_grow_and_one_always_waits() {
        let (pool, path, connections, _stop) = echo_pool(Duration::from_secs(30));
        let (mut clients, threads) = open_served(&path, &connections, 3);
        assert_eq!(
            distinct(threads),
            3,
            "three open connections share a thread"
        );
        wait_for("a waiting thread", || pool.waiting() == 1);
        for client in &mut clients {
            round_trip(client);
        }
    }

    #[test]
    fn surplus_threads_end_after_the_idle_time_and_one_stays() {
        let (pool, path, connections, _stop) = echo_pool(Duration::from_millis(100));
        let (mut clients, _) = open_served(&path, &connections, 4);
        for client in &mut clients {
            round_trip(client);
        }
        wait_for("surplus threads to end", || pool.waiting() == 1);
        thread::sleep(Duration::from_millis(300));
        assert_eq!(pool.waiting(), 1, "the last waiting thread must stay");
        let mut late = UnixStream::connect(&path).unwrap();
        connections.recv().unwrap();
        round_trip(&mut late);
    }

    #[test]
    fn after_stop_a_thread_serves_what_it_took_and_takes_no_more() {
        let (pool, path, connections, stop) = echo_pool(Duration::from_secs(30));
        stop.store(true, Ordering::Release);
        // The thread already waiting in accept takes this one and serves it.
        let mut taken = UnixStream::connect(&path).unwrap();
        connections.recv().unwrap();
        round_trip(&mut taken);
        wait_for("the last thread to end", || Arc::strong_count(&pool) == 1);
        // Nobody accepts any more: the next one stays in the backlog.
        let _queued = UnixStream::connect(&path).unwrap();
        thread::sleep(Duration::from_millis(300));
        assert!(connections.try_recv().is_err());
        assert_eq!(pool.waiting(), 0);
    }
}
