//! Fixed limits on what a client can make the proxy hold (docs/POLICY.md rule 8).
//!
//! Limits that operators tune (timeouts, connection cap) are flags, in
//! `config.rs`; these are properties of the protocol that no Docker client
//! comes near.

use std::time::Duration;

/// The largest request head accepted, request line included. The docker CLI's
/// largest heads (`ps` with many `--filter`s) are a few kilobytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header lines in one request head. The docker CLI sends fewer
/// than ten.
pub const MAX_HEADERS: usize = 64;

/// The largest response head accepted from the daemon.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// The most header lines in one response head from the daemon.
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// How many requests of one connection may be forwarded and still waiting
/// for their responses. A pipelining client beyond this waits until a
/// response completes.
pub const MAX_PIPELINED: usize = 32;

/// How long a connection thread waits for an answer in a blocking read of
/// the daemon connection before it waits with poll(2), which also watches
/// the client. Most answers come well within it; a stream's next bytes may
/// not.
pub const ANSWER_READ_WAIT: Duration = Duration::from_millis(10);

/// How long a connection keeps its read buffers after an answer, for the
/// next request of a busy client, before it gives them back.
pub const BUFFER_RELEASE_DELAY: Duration = Duration::from_millis(10);

/// A wait for the next request is done in blocking reads (first for
/// [`BUFFER_RELEASE_DELAY`], then for the rest of the idle limit) only if
/// it starts within this of the last answer, since the read timeouts count
/// from then; otherwise poll(2) waits until the idle deadline itself.
pub const IDLE_READ_SLACK: Duration = Duration::from_millis(100);

/// How long a write of a request head to the daemon may wait while the
/// daemon takes no bytes.
pub const UPSTREAM_WRITE_STALL: Duration = Duration::from_secs(10);

/// After an error reply, how long and how much of the client's remaining
/// input is read and thrown away, so that a client still sending (a
/// `docker run` body, say) reads the error instead of a reset.
pub const LINGER_SECS: u64 = 2;

/// See [`LINGER_SECS`].
pub const LINGER_BYTES: usize = 1024 * 1024;

/// The largest whitelist file accepted.
pub const MAX_WHITELIST_BYTES: u64 = 1024 * 1024;

/// The most rules in one whitelist.
pub const MAX_RULES: usize = 1000;

/// The stack size of each connection thread. Connection threads keep no
/// large buffers on the stack; this bounds what 512 of them can reserve.
pub const THREAD_STACK_BYTES: usize = 128 * 1024;
