//! Connection threads that are kept for the next connection instead of
//! exiting.
//!
//! Creating and ending a thread costs more than serving a short request
//! (stack mapping, guard page, signal stack; PERF-NOTES.md measured 264 µs
//! of CPU per connection with new threads against 70 µs with reused ones).
//! A thread that finishes a connection waits for the next one and ends after
//! [`IDLE_THREAD_SECS`] without work: under load threads are reused, and
//! after a burst the process is back to its baseline of threads and memory
//! within about a second.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use crate::limits::THREAD_STACK_BYTES;

/// How long a thread without work waits for a connection before it ends.
pub const IDLE_THREAD_SECS: u64 = 1;

type Task = Box<dyn FnOnce() + Send>;

/// A set of worker threads that grows on demand.
#[derive(Default)]
pub struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    idle: usize,
}

impl Pool {
    /// Runs `task` on a waiting thread, or on a new one if none is waiting.
    pub fn execute(self: &Arc<Pool>, task: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let mut state = self.lock();
        if state.idle > state.queue.len() {
            state.queue.push_back(Box::new(task));
            drop(state);
            self.work.notify_one();
            return Ok(());
        }
        drop(state);
        let pool = Arc::clone(self);
        thread::Builder::new()
            .name("connection".to_owned())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || {
                task();
                pool.work_until_idle();
            })
            .map(drop)
    }

    /// Takes queued tasks until none comes for [`IDLE_THREAD_SECS`].
    fn work_until_idle(&self) {
        let mut state = self.lock();
        loop {
            if let Some(task) = state.queue.pop_front() {
                drop(state);
                task();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, Duration::from_secs(IDLE_THREAD_SECS))
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Tasks run outside the lock, so a panic cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Threads waiting for work now.
    pub fn idle_threads(&self) -> usize {
        self.lock().idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_finished_thread_takes_the_next_task() {
        let pool = Arc::new(Pool::default());
        let (done, finished) = mpsc::channel();
        let first = done.clone();
        pool.execute(move || first.send(thread::current().id()).unwrap())
            .unwrap();
        let first_thread = finished.recv().unwrap();
        // Wait until the thread is back in the pool.
        while pool.idle_threads() == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        pool.execute(move || done.send(thread::current().id()).unwrap())
            .unwrap();
        assert_eq!(finished.recv().unwrap(), first_thread);
    }

    #[test]
    fn busy_threads_make_the_pool_grow() {
        let pool = Arc::new(Pool::default());
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Arc::new(Mutex::new(blocked));
        let (started, running) = mpsc::channel();
        for _ in 0..3 {
            let blocked = Arc::clone(&blocked);
            let started = started.clone();
            pool.execute(move || {
                started.send(()).unwrap();
                let _ = blocked.lock().unwrap().recv();
            })
            .unwrap();
        }
        for _ in 0..3 {
            running.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        for _ in 0..3 {
            release.send(()).unwrap();
        }
    }
}
