//! `docker-filter healthcheck`: `GET /_ping` through the safe socket, for
//! the `HEALTHCHECK` of an image that has no curl.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the whole check may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Returns `Ok(())` if the proxy at `listen` answers `GET /_ping` with 200,
/// or a sentence saying what happened.
pub fn run(listen: &Path) -> Result<(), String> {
    let shown = listen.display();
    let mut stream =
        UnixStream::connect(listen).map_err(|e| format!("cannot connect to {shown}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("cannot set a timeout on {shown}: {e}"))?;
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: docker-filter-healthcheck\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot send to {shown}: {e}"))?;

    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no answer from {shown}: {e}")),
        }
    }
    let status_line = answer
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(_) => Err(format!("{shown} answered GET /_ping with {status_line:?}")),
        None => Err(format!("{shown} sent no HTTP status line")),
    }
}
