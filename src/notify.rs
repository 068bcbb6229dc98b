//! systemd's readiness protocol (sd_notify(3)): `READY=1` once serving,
//! `STOPPING=1` when shutdown begins, sent as a datagram to the socket named
//! by `NOTIFY_SOCKET` when `Type=notify` set it.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` to the service manager, if there is one. Without
/// `NOTIFY_SOCKET` this does nothing and succeeds.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(target) => notify_to(&target, state),
        Err(_) => Ok(()),
    }
}

/// Sends `state` to the notification socket `target`: a path, or an abstract
/// socket name after a leading `@`.
pub fn notify_to(target: &str, state: &str) -> io::Result<()> {
    let address = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(receiver: &UnixDatagram) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn state_reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("df-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1").unwrap();
        assert_eq!(received(&receiver), b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_reaches_an_abstract_socket() {
        let name = format!("df-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1").unwrap();
        assert_eq!(received(&receiver), b"STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error() {
        assert!(notify_to("/nonexistent-df/notify.sock", "READY=1").is_err());
    }
}
