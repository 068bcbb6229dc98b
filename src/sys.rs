//! The few operating-system calls that std does not offer. This is the only
//! module allowed to use `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Who is at the other end of a unix socket, as the kernel recorded it when
/// the peer connected (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's process id at connect time.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id (its primary group only; the kernel
    /// does not pass supplementary groups).
    pub gid: u32,
}

/// Reads the credentials of the peer of a connected unix socket. std offers
/// this only on nightly (`UnixStream::peer_cred`).
pub fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).map_err(io::Error::other)?;
    // SAFETY: `cred` is a valid, writable ucred and `len` holds its exact
    // size, which is what SO_PEERCRED writes; `fd` is borrowed, so it is
    // open for the duration of the call.
    let status = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Makes a blocking `accept(2)` on the listening socket `fd` give up with
/// `WouldBlock` after `timeout` (SO_RCVTIMEO, which Linux applies to accept
/// on unix sockets). std sets this only on connected streams.
pub fn set_accept_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    // The field types are left to inference: naming libc's time_t and
    // suseconds_t is deprecated on musl, whose aliases are to change.
    let value = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i32::MAX.into()),
        tv_usec: timeout.subsec_micros().into(),
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>())
        .map_err(io::Error::other)?;
    // SAFETY: `value` is a valid timeval and `len` its exact size, which is
    // what SO_RCVTIMEO reads; `fd` is borrowed, so it is open for the call.
    let status = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const value).cast(),
            len,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The first descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Set once the inherited listener has been taken, so that a second call
/// cannot wrap the same descriptor twice.
static LISTENER_TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket passed by systemd socket activation, if this
/// process was given one (`LISTEN_PID` is our pid and `LISTEN_FDS` is set).
/// systemd's protocol (sd_listen_fds(3)): the descriptors start at 3.
pub fn take_systemd_listener() -> io::Result<Option<UnixListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !ours {
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok());
    match count {
        None | Some(0) => return Ok(None),
        Some(1) => {}
        Some(n) => {
            return Err(io::Error::other(format!(
            "systemd passed {n} sockets; docker-filter takes exactly one (one ListenStream= line)"
        )))
        }
    }
    if LISTENER_TAKEN.swap(true, Ordering::AcqRel) {
        return Err(io::Error::other("the systemd socket was already taken"));
    }
    check_listening_unix(LISTEN_FDS_START)?;
    // SAFETY: systemd passed descriptor 3 to this process (LISTEN_PID is
    // ours) and nothing in the process has claimed it: LISTENER_TAKEN makes
    // this the only place that ever wraps it. The check above shows it is an
    // open, listening AF_UNIX stream socket, so the listener may own it.
    Ok(Some(unsafe { UnixListener::from_raw_fd(LISTEN_FDS_START) }))
}

/// Checks that `fd` is a listening unix stream socket.
fn check_listening_unix(fd: RawFd) -> io::Result<()> {
    let int_option = |option| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
            .map_err(io::Error::other)?;
        // SAFETY: `value` is a writable c_int and `len` its size, which is
        // what these integer options write. A descriptor that is not open or
        // not a socket makes getsockopt fail with EBADF or ENOTSOCK.
        let status = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if status == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let fail = |e: io::Error| io::Error::other(format!("systemd socket (descriptor {fd}): {e}"));
    let domain = int_option(libc::SO_DOMAIN).map_err(fail)?;
    let kind = int_option(libc::SO_TYPE).map_err(fail)?;
    let listening = int_option(libc::SO_ACCEPTCONN).map_err(fail)?;
    if domain != libc::AF_UNIX || kind != libc::SOCK_STREAM || listening == 0 {
        return Err(io::Error::other(format!(
            "systemd socket (descriptor {fd}) is not a listening unix stream socket; use ListenStream= with a path"
        )));
    }
    Ok(())
}

/// What `poll(2)` reported for one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// There is input, or end of input, to read.
    pub readable: bool,
    /// Both directions are shut: the peer is gone (or this side was shut).
    pub hung_up: bool,
}

/// Waits until one of up to two sockets is ready or `timeout` passes (`None`
/// waits forever). For each socket, `true` asks for input; a hang-up is
/// always reported. After `read` returns end of input, std cannot tell a
/// client that half-closed its side (and still reads the answers, like
/// `socat`) from one that is gone; Linux reports `POLLHUP` on an `AF_UNIX`
/// stream socket only when both directions are shut, which tells the two
/// apart. A socket that is not asked for input is only watched
/// for hang-up, so that a client that half-closed does not wake the loop
/// again and again with its end of input.
pub fn poll_two(
    first: (BorrowedFd<'_>, bool),
    second: Option<(BorrowedFd<'_>, bool)>,
    timeout: Option<Duration>,
) -> io::Result<[Ready; 2]> {
    let entry = |(fd, read): (BorrowedFd<'_>, bool)| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: if read { libc::POLLIN } else { 0 },
        revents: 0,
    };
    let mut entries = [entry(first), second.map_or(entry(first), entry)];
    let count: libc::nfds_t = if second.is_some() { 2 } else { 1 };
    // Round up, so that a deadline 0.3 ms away does not become a busy loop.
    let timeout_ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    // SAFETY: `entries` holds at least `count` valid, initialised pollfds
    // and outlives the call; the descriptors are borrowed, so they stay open
    // for its duration.
    retrying(|| unsafe { libc::poll(entries.as_mut_ptr(), count, timeout_ms) })?;
    let hung_up = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    let report = |e: &libc::pollfd| Ready {
        readable: e.revents & libc::POLLIN != 0,
        hung_up: e.revents & hung_up != 0,
    };
    let mut result = [report(&entries[0]), Ready::default()];
    if second.is_some() {
        result[1] = report(&entries[1]);
    }
    Ok(result)
}

/// Writes all of `bytes` to the connected socket `fd`. While the socket's
/// buffer is full it waits with poll(2), and fails with `TimedOut` once
/// the peer has taken nothing for `stall` (what SO_SNDTIMEO does, without
/// a setsockopt per connection: each send is non-blocking).
pub fn send_all(fd: BorrowedFd<'_>, mut bytes: &[u8], stall: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe the live slice `bytes`,
        // which send only reads; `fd` is borrowed, so it is open for the
        // call.
        let sent = unsafe {
            libc::send(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match outcome(sent) {
            Ok(sent) => {
                let sent = usize::try_from(sent).unwrap_or(0);
                bytes = &bytes[sent.min(bytes.len())..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_writable(fd, stall)? {
                    return Err(stalled(stall));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A pipe through which splice(2) moves bytes from one socket to another
/// without copying them into the process.
#[derive(Debug)]
pub struct SplicePipe {
    /// The read end.
    pub out: OwnedFd,
    /// The write end.
    pub into: OwnedFd,
    /// How many bytes it holds.
    pub capacity: usize,
}

/// The capacity asked for a splice pipe: the default 64 KiB made a 512 MiB
/// stream slower than copying it (three system calls per 64 KiB), 1 MiB
/// made it faster than the daemon alone. 1 MiB is also the largest an
/// unprivileged process may ask for (/proc/sys/fs/pipe-max-size).
const SPLICE_PIPE_BYTES: libc::c_int = 1024 * 1024;

/// Makes a [`SplicePipe`], both ends close-on-exec, as large as the kernel
/// allows up to 1 MiB; when the user's pipe quota is used up
/// (/proc/sys/fs/pipe-user-pages-soft) it keeps the size the kernel gave.
pub fn splice_pipe() -> io::Result<SplicePipe> {
    let (out, into) = pipe(libc::O_CLOEXEC)?;
    // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ take and return plain integers;
    // `into` is open (owned above).
    let capacity = unsafe {
        let set = libc::fcntl(into.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE_BYTES);
        if set > 0 {
            set
        } else {
            libc::fcntl(into.as_raw_fd(), libc::F_GETPIPE_SZ)
        }
    };
    let capacity = usize::try_from(capacity).map_err(|_| io::Error::last_os_error())?;
    Ok(SplicePipe {
        out,
        into,
        capacity,
    })
}

/// Moves up to `len` bytes from the socket `from` into the empty pipe
/// `pipe_in` (its write end). Blocks like a read of `from` would, within
/// its read timeout; `Ok(0)` at the end of its input.
pub fn splice_from_socket(
    from: BorrowedFd<'_>,
    pipe_in: BorrowedFd<'_>,
    len: usize,
) -> io::Result<usize> {
    splice(from, pipe_in, len, libc::SPLICE_F_MOVE)
}

/// Moves exactly `len` bytes from the pipe `pipe_out` (its read end) to the
/// socket `to`, and fails with `TimedOut` once the peer has taken nothing
/// for `stall`. A move blocks while the socket's buffer is full, so `to`
/// must have a send timeout (SO_SNDTIMEO) of `stall`: without one, a peer
/// that reads nothing would hold the calling thread.
pub fn splice_to_socket(
    pipe_out: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    mut len: usize,
    stall: Duration,
) -> io::Result<()> {
    while len > 0 {
        match splice(
            pipe_out,
            to,
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        ) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(moved) => len -= moved.min(len),
            // The send timeout passed with nothing taken.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(stalled(stall)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One splice(2) of up to `len` bytes from `from` to `to`, one of which is
/// a pipe, retried when a signal interrupts it.
fn splice(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
    flags: libc::c_uint,
) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the call; null
    // offsets are what splice takes for pipes and sockets.
    let moved = retrying(|| unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            flags,
        )
    })?;
    usize::try_from(moved).map_err(io::Error::other)
}

fn stalled(stall: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the peer took nothing for {} s", stall.as_secs()),
    )
}

/// Waits until `fd` can take more bytes, or for `timeout`; false if the
/// time ran out. A hung-up peer counts as writable: the next send reports
/// the error.
fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut entry = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `entry` is one valid, initialised pollfd that outlives the
    // call; the descriptor is borrowed, so it stays open.
    let ready = retrying(|| unsafe { libc::poll(&raw mut entry, 1, timeout_ms) })?;
    Ok(ready > 0)
}

/// The result of a system call that returns -1 and sets errno on failure.
fn outcome<T: Copy + Default + PartialOrd>(result: T) -> io::Result<T> {
    if result < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Makes a system call until a signal does not interrupt it (EINTR).
fn retrying<T: Copy + Default + PartialOrd>(mut call: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match outcome(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A pipe with `flags` (O_CLOEXEC and more) for pipe2(2): its read end,
/// then its write end.
fn pipe(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    outcome(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by no
    // one else; each OwnedFd takes one and closes it when dropped.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Puts the calling thread, and the threads it creates from now on, in the
/// `SCHED_BATCH` scheduling class. A relay thread that is woken for every
/// request is then not preempted as eagerly, which measured about a quarter
/// fewer context switches per keep-alive request (PERF-NOTES.md). No
/// privilege is needed to choose it.
pub fn use_batch_scheduling() -> io::Result<()> {
    // SAFETY: sched_param is a plain C struct of integers (musl's has more
    // fields than glibc's), for which all zeroes is a valid value: priority 0,
    // the only one SCHED_BATCH takes.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // The system call itself, not the libc wrapper: musl's wrapper is a stub
    // that always fails with ENOSYS. SAFETY: `param` outlives the call and
    // pid 0 means the calling thread.
    let status = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_BATCH,
            &raw const param,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe for waking a thread blocked in [`poll_two`]: whoever writes a
/// byte to the second file makes the first readable. Both ends are
/// close-on-exec and non-blocking, so that a wake-up never blocks the writer.
pub fn wake_pipe() -> io::Result<(File, File)> {
    let (read, write) = pipe(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    Ok((File::from(read), File::from(write)))
}

/// Raises the soft limit on open files to the hard limit and returns the new
/// soft limit. Each client connection holds two descriptors (client and
/// daemon), so the common default of 1024 would cap the proxy below its
/// default `--max-connections` of 512 plus headroom.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by setrlimit; raising the
        // soft limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::Shutdown;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;

    #[test]
    fn send_all_waits_for_a_slow_reader_and_delivers_every_byte() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // Far more than a socket buffer holds, so that sends must wait.
        let sent: Vec<u8> = (0..4_000_000_u32).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut chunk = vec![0u8; 65536];
            loop {
                std::thread::sleep(Duration::from_millis(1));
                match std::io::Read::read(&mut &theirs, &mut chunk).unwrap() {
                    0 => return received,
                    n => received.extend_from_slice(&chunk[..n]),
                }
            }
        });
        send_all(ours.as_fd(), &sent, Duration::from_secs(30)).unwrap();
        drop(ours);
        assert!(reader.join().unwrap() == sent);
    }

    #[test]
    fn send_all_gives_up_on_a_peer_that_takes_nothing() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let big = vec![0u8; 4_000_000];
        let error = send_all(ours.as_fd(), &big, Duration::from_millis(50)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn send_all_to_a_closed_peer_fails_at_once() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let error = send_all(ours.as_fd(), b"x", Duration::from_secs(30)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn half_close_is_not_a_hangup_but_full_close_is() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let short = Some(Duration::from_millis(10));
        theirs.shutdown(Shutdown::Write).unwrap();
        assert!(!poll_two((ours.as_fd(), false), None, short).unwrap()[0].hung_up);
        drop(theirs);
        assert!(poll_two((ours.as_fd(), false), None, None).unwrap()[0].hung_up);
    }

    #[test]
    fn poll_two_reports_input_and_hangup_per_socket() {
        let (a, a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        let short = Some(Duration::from_millis(10));
        let idle = poll_two((a.as_fd(), true), Some((b.as_fd(), true)), short).unwrap();
        assert_eq!(idle, [Ready::default(); 2]);
        (&b_peer).write_all(b"x").unwrap();
        let ready = poll_two((a.as_fd(), true), Some((b.as_fd(), true)), short).unwrap();
        assert!(!ready[0].readable && ready[1].readable);
        // Not asked for input: buffered input does not wake the poll.
        let quiet = poll_two((b.as_fd(), false), None, short).unwrap();
        assert!(!quiet[0].readable && !quiet[0].hung_up);
        drop(a_peer);
        let gone = poll_two((a.as_fd(), false), None, None).unwrap();
        assert!(gone[0].hung_up);
    }

    #[test]
    fn a_byte_in_the_wake_pipe_wakes_the_poll() {
        let (wake, mut waker) = wake_pipe().unwrap();
        let short = Some(Duration::from_millis(10));
        assert!(!poll_two((wake.as_fd(), true), None, short).unwrap()[0].readable);
        waker.write_all(b"x").unwrap();
        assert!(poll_two((wake.as_fd(), true), None, short).unwrap()[0].readable);
    }

    #[test]
    fn own_shutdown_ends_the_wait() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.shutdown(Shutdown::Both).unwrap();
        assert!(poll_two((ours.as_fd(), false), None, None).unwrap()[0].hung_up);
    }

    #[test]
    fn peer_credentials_are_our_own_on_a_socket_pair() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let peer = peer_credentials(ours.as_fd()).unwrap();
        assert_eq!(peer.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(peer.uid, std::fs::metadata("/proc/self").unwrap().uid());
    }

    #[test]
    fn only_a_listening_unix_stream_socket_is_taken_from_systemd() {
        use std::os::fd::AsRawFd;
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let error = check_listening_unix(ours.as_raw_fd()).unwrap_err();
        assert!(error
            .to_string()
            .contains("not a listening unix stream socket"));
        let dir = std::env::temp_dir().join(format!("df-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("l.sock")).unwrap();
        assert!(check_listening_unix(listener.as_raw_fd()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_files_limit_is_at_least_what_it_was() {
        assert!(raise_open_files_limit().unwrap() >= 64);
    }
}
