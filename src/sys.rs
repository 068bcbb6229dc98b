//! The few operating-system calls that std does not offer. This is the only
//! module allowed to use `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits until the peer of a unix stream socket has closed it completely, or
/// this side has been shut down in both directions, or `timeout` passes.
/// Returns whether that happened.
///
/// After `read` returns end of input, std cannot tell a client that
/// half-closed its side (and still reads responses, like `socat`) from one
/// that is gone. Linux reports `POLLHUP` on an `AF_UNIX` stream socket only
/// when both directions are shut, so polling for it tells the two apart.
pub fn wait_for_hangup(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout_ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    let mut entry = libc::pollfd {
        fd: fd.as_raw_fd(),
        // POLLHUP is always reported; asking for nothing else means input
        // that is still buffered does not end the wait.
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: `entry` is a valid, initialised pollfd that outlives the
        // call, the count 1 matches it, and `fd` is borrowed, so it stays open
        // for the duration of the call.
        let ready = unsafe { libc::poll(&raw mut entry, 1, timeout_ms) };
        if ready >= 0 {
            return Ok(
                ready > 0 && entry.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            );
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
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
    use std::net::Shutdown;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn half_close_is_not_a_hangup_but_full_close_is() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let short = Some(Duration::from_millis(10));
        assert!(!wait_for_hangup(ours.as_fd(), short).unwrap());
        theirs.shutdown(Shutdown::Write).unwrap();
        assert!(!wait_for_hangup(ours.as_fd(), short).unwrap());
        drop(theirs);
        assert!(wait_for_hangup(ours.as_fd(), None).unwrap());
    }

    #[test]
    fn own_shutdown_ends_the_wait() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.shutdown(Shutdown::Both).unwrap();
        assert!(wait_for_hangup(ours.as_fd(), None).unwrap());
    }

    #[test]
    fn open_files_limit_is_at_least_what_it_was() {
        assert!(raise_open_files_limit().unwrap() >= 64);
    }
}
