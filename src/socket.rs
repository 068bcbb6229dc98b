//! Creating and removing the safe socket file.
//!
//! The socket is bound inside a private folder (mode 0700) next to the final
//! path, given its mode and group there, and only then linked into place, so
//! that there is no moment when it exists with the permissions of the umask.
//! Linking fails if something appeared at the path meanwhile; nothing is
//! ever replaced except a stale socket that nobody listens on.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::info;

/// A bound safe socket and the file it is reachable at.
#[derive(Debug)]
pub struct SafeSocket {
    /// The listening socket.
    pub listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the file we created; `None` for a socket passed
    /// by systemd, whose file systemd owns.
    identity: Option<(u64, u64)>,
}

/// Why the safe socket could not be created. `Display` names the path and
/// what to do.
#[derive(Debug)]
pub struct SocketError {
    path: PathBuf,
    problem: String,
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot create the safe socket {}: {}",
            self.path.display(),
            self.problem
        )
    }
}

impl std::error::Error for SocketError {}

impl SafeSocket {
    /// Creates the socket at `path` with `mode` and, if given, group `gid`.
    pub fn create(path: &Path, mode: u32, gid: Option<u32>) -> Result<SafeSocket, SocketError> {
        let fail = |problem: String| SocketError {
            path: path.to_owned(),
            problem,
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(fail(format!("{} is not a folder", parent.display()))),
            Err(e) => {
                return Err(fail(format!(
                    "the folder {} is not there ({e}); create it or pass another --listen",
                    parent.display()
                )))
            }
        }
        clear_stale(path).map_err(fail)?;

        let private = parent.join(format!(".docker-filter-{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| {
                fail(format!(
                    "cannot create the folder {}: {e}",
                    private.display()
                ))
            })?;
        let staged = private.join("s");
        let result = stage_and_link(&staged, path, mode, gid);
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_dir(&private);
        let listener = result.map_err(fail)?;

        let meta = fs::symlink_metadata(path).map_err(|e| fail(e.to_string()))?;
        Ok(SafeSocket {
            listener,
            path: path.to_owned(),
            identity: Some((meta.dev(), meta.ino())),
        })
    }

    /// Wraps a listening socket passed by systemd socket activation. Its
    /// file, mode and group are systemd's (`SocketMode=`, `SocketGroup=`) and
    /// it is never removed here.
    pub fn inherited(listener: UnixListener) -> SafeSocket {
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned))
            .unwrap_or_default();
        SafeSocket {
            listener,
            path,
            identity: None,
        }
    }

    /// Whether this socket came from systemd.
    pub fn is_inherited(&self) -> bool {
        self.identity.is_none()
    }

    /// The path clients connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file, unless it is no longer ours (someone replaced
    /// it while we ran).
    pub fn remove_file(&self) {
        let Some(identity) = self.identity else {
            return;
        };
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == identity => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::warn!("cannot remove the safe socket {}: {e}", self.path.display());
                }
            }
            _ => info!(
                "the safe socket {} was replaced or removed by someone else; left as it is",
                self.path.display()
            ),
        }
    }
}

/// Removes a stale socket file at `path`; refuses a live one or any other
/// kind of file.
fn clear_stale(path: &Path) -> Result<(), String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot look at the existing file: {e}")),
    };
    if !meta.file_type().is_socket() {
        return Err(
            "a file that is not a socket is in the way; remove it or pass another --listen"
                .to_owned(),
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(
            "another process is listening on it (a second docker-filter?); stop it or pass another --listen"
                .to_owned(),
        ),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))?;
            info!("replaced the stale socket {}", path.display());
            Ok(())
        }
        Err(e) => Err(format!("cannot tell whether the existing socket is in use: {e}")),
    }
}

fn stage_and_link(
    staged: &Path,
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> Result<UnixListener, String> {
    let listener = UnixListener::bind(staged).map_err(|e| format!("cannot bind: {e}"))?;
    fs::set_permissions(staged, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set its mode to {mode:04o}: {e}"))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(staged, None, Some(gid)).map_err(|e| {
            format!("cannot give it group {gid}: {e} (docker-filter must be a member of that group, or root)")
        })?;
    }
    fs::hard_link(staged, path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => "a file appeared at the path while starting".to_owned(),
        _ => format!("cannot link it into place: {e}"),
    })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("df-socket-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn socket_gets_its_mode_and_is_removed_only_by_its_owner() {
        let dir = scratch("mode");
        let path = dir.join("safe.sock");
        let socket = SafeSocket::create(&path, 0o640, None).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no staging folder is left"
        );
        socket.remove_file();
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_socket_is_replaced_live_one_refused() {
        let dir = scratch("stale");
        let path = dir.join("safe.sock");
        drop(UnixListener::bind(&path).unwrap());
        let first = SafeSocket::create(&path, 0o660, None).unwrap();
        let second = SafeSocket::create(&path, 0o660, None).unwrap_err();
        assert!(
            second.to_string().contains("another process is listening"),
            "{second}"
        );
        drop(first);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn regular_file_is_refused_and_left_alone() {
        let dir = scratch("file");
        let path = dir.join("safe.sock");
        fs::write(&path, "keep me").unwrap();
        let error = SafeSocket::create(&path, 0o660, None).unwrap_err();
        assert!(error.to_string().contains("not a socket"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_folder_is_refused_with_advice() {
        let error = SafeSocket::create(Path::new("/nonexistent-df/dir/safe.sock"), 0o660, None)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("create it or pass another --listen"),
            "{error}"
        );
    }
}
