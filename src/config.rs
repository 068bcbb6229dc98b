//! The proxy's settings, as typed values. `cli.rs` builds them from the
//! command line; nothing after that sees a raw string.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the whitelist comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhitelistSource {
    /// The `whitelist.lst` built into the binary.
    Builtin,
    /// A file given with `--whitelist`.
    File(PathBuf),
}

/// A group for the safe socket, resolved to its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The name or number as given.
    pub name: String,
    /// The numeric id.
    pub gid: u32,
}

/// Everything `docker-filter` needs to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The safe socket to create.
    pub listen: PathBuf,
    /// The Docker socket to forward to.
    pub upstream: PathBuf,
    /// The whitelist.
    pub whitelist: WhitelistSource,
    /// Permission bits of the safe socket.
    pub socket_mode: u32,
    /// Group of the safe socket, if one is set.
    pub socket_group: Option<Group>,
    /// The most client connections served at once.
    pub max_connections: usize,
    /// Time allowed to receive one whole request head.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait between requests.
    pub idle_timeout: Duration,
    /// Grace for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Who may connect; empty lists let anyone who can open the socket in.
    pub access: Access,
    /// Where to serve `GET /metrics`, if anywhere.
    pub stats_socket: Option<PathBuf>,
}

/// Which connecting processes are served, by the user and group ids the
/// kernel reports for them (`SO_PEERCRED`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// User ids given with `--allow-uid`.
    pub uids: Vec<u32>,
    /// Group ids given with `--allow-gid` (matched against the peer's
    /// primary group; the kernel does not pass supplementary groups).
    pub gids: Vec<u32>,
}

impl Access {
    /// Whether any restriction is set.
    pub fn is_restricted(&self) -> bool {
        !self.uids.is_empty() || !self.gids.is_empty()
    }

    /// Whether a peer with `uid` and `gid` is served.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        !self.is_restricted() || self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}

/// The default safe socket, in a volume shared with the monitoring agent.
pub const DEFAULT_LISTEN: &str = "/safe-socket/docker.sock";
/// The Docker daemon's usual socket.
pub const DEFAULT_UPSTREAM: &str = "/var/run/docker.sock";
/// Owner and group may connect; others may not.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// HAProxy's `maxconn` in the original docker-filter.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Seconds.
pub const DEFAULT_HEADER_TIMEOUT: u64 = 10;
/// Seconds.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 120;
/// Seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 10;

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: PathBuf::from(DEFAULT_LISTEN),
            upstream: PathBuf::from(DEFAULT_UPSTREAM),
            whitelist: WhitelistSource::Builtin,
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT),
            shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT),
            access: Access::default(),
            stats_socket: None,
        }
    }
}

impl fmt::Display for WhitelistSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhitelistSource::Builtin => f.write_str(crate::whitelist::BUILTIN_NAME),
            WhitelistSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_lists_allow_everyone_and_either_list_admits() {
        assert!(Access::default().allows(1234, 1234));
        let access = Access {
            uids: vec![1000],
            gids: vec![998],
        };
        assert!(access.allows(1000, 5));
        assert!(access.allows(5, 998));
        assert!(!access.allows(0, 0));
    }
}
