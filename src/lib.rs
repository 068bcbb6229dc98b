//! docker-filter: a strict, read-only filtering proxy for the Docker Engine
//! API socket.
//!
//! The request path, in the order a request takes it: `listener.rs` accepts
//! a client on the safe socket (`socket.rs`) and starts `connection.rs`,
//! which reads each request head (`head.rs`), has `policy.rs` decide it
//! (parsing in `request.rs`, the path in `target.rs`, the rules in
//! `whitelist.rs`), writes the allowed ones anew (`forward.rs`) and lets
//! `relay.rs` stream the answers back (`framing.rs` tells where each ends).
//! Refusals are `denial.rs` values sent by `reply.rs`.
#![deny(unsafe_code)]

pub mod buffer;
pub mod check;
pub mod cli;
pub mod config;
pub mod connection;
pub mod decisions;
pub mod denial;
pub mod forward;
pub mod framing;
pub mod head;
pub mod healthcheck;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod pool;
pub mod relay;
pub mod reply;
pub mod request;
pub mod socket;
pub mod stats;
pub mod sys;
pub mod target;
pub mod text;
pub mod whitelist;

use std::sync::Arc;

use log::{error, info, warn};

use crate::cli::Command;
use crate::config::{Config, WhitelistSource};
use crate::connection::Context;
use crate::socket::SafeSocket;
use crate::stats::Stats;
use crate::whitelist::Whitelist;

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: a runtime failure, or a `check` with a denied request.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: a usage mistake or an invalid whitelist.
pub const EXIT_USAGE: i32 = 2;

/// Runs a parsed command and returns the process exit status.
pub fn run(command: Command) -> i32 {
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            EXIT_OK
        }
        Command::Version => {
            println!("docker-filter {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Check {
            whitelist,
            requests,
        } => {
            let whitelist = match load_whitelist(&whitelist) {
                Ok(list) => list,
                Err(status) => return status,
            };
            match check::run(&whitelist, &requests, &mut std::io::stdout().lock()) {
                Ok(true) => EXIT_OK,
                Ok(false) => EXIT_FAILURE,
                Err(e) => {
                    eprintln!("docker-filter: cannot write the result: {e}");
                    EXIT_FAILURE
                }
            }
        }
        Command::Healthcheck { listen } => match healthcheck::run(&listen) {
            Ok(()) => EXIT_OK,
            Err(problem) => {
                eprintln!("docker-filter healthcheck: {problem}");
                EXIT_FAILURE
            }
        },
        Command::Serve(config) => serve(&config),
    }
}

fn load_whitelist(source: &WhitelistSource) -> Result<Whitelist, i32> {
    let loaded = match source {
        WhitelistSource::Builtin => Ok(Whitelist::builtin()),
        WhitelistSource::File(path) => Whitelist::load(path),
    };
    loaded.map_err(|e| {
        // `FILE:LINE: what is wrong`, as editors and CI logs expect.
        eprintln!("{e}");
        EXIT_USAGE
    })
}

fn serve(config: &Config) -> i32 {
    let whitelist = match load_whitelist(&config.whitelist) {
        Ok(list) => list,
        Err(status) => return status,
    };
    for (rule, path, why) in whitelist.dangerous_rules() {
        warn!(
            "unsafe whitelist rule {}:{} allows {path}, which {why}",
            whitelist.source(),
            rule.line
        );
    }
    if let Err(e) = sys::use_batch_scheduling() {
        warn!("cannot use SCHED_BATCH scheduling, serving with the default: {e}");
    }
    match sys::raise_open_files_limit() {
        Ok(limit) if limit < (config.max_connections as u64) * 2 + 16 => warn!(
            "the open files limit {limit} is below what --max-connections {} needs ({}); raise it (ulimit -n, LimitNOFILE=)",
            config.max_connections,
            config.max_connections * 2 + 16
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot read the open files limit: {e}"),
    }

    let socket = match open_safe_socket(config) {
        Ok(socket) => socket,
        Err(e) => {
            error!("{e}");
            return EXIT_FAILURE;
        }
    };
    info!("{}", start_line(config, &whitelist, &socket));

    let context = Arc::new(Context {
        stats: Stats::new(whitelist.rules().len()),
        whitelist,
        upstream: config.upstream.clone(),
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        access: config.access.clone(),
    });
    let stats_socket = match &config.stats_socket {
        Some(path) => match start_stats_socket(path, &context) {
            Ok(path) => Some(path),
            Err(e) => {
                error!("{e}");
                socket.remove_file();
                return EXIT_FAILURE;
            }
        },
        None => None,
    };

    let served = listener::serve(
        &socket,
        &context,
        config.max_connections,
        config.shutdown_timeout,
    );
    if let Some(path) = stats_socket {
        let _ = std::fs::remove_file(path);
    }
    info!("stopped: {}", context.stats.summary());
    match served {
        Ok(()) => EXIT_OK,
        Err(e) => {
            error!("serving {} failed: {e}", socket.path().display());
            socket.remove_file();
            EXIT_FAILURE
        }
    }
}

/// The socket passed by systemd socket activation, or a new one at
/// `--listen`.
fn open_safe_socket(config: &Config) -> Result<SafeSocket, String> {
    match sys::take_systemd_listener() {
        Ok(Some(listener)) => return Ok(SafeSocket::inherited(listener)),
        Ok(None) => {}
        Err(e) => return Err(format!("cannot use the socket passed by systemd: {e}")),
    }
    let gid = config.socket_group.as_ref().map(|g| g.gid);
    SafeSocket::create(&config.listen, config.socket_mode, gid).map_err(|e| e.to_string())
}

/// Creates the stats socket (mode 0600) and starts serving it.
fn start_stats_socket(
    path: &std::path::Path,
    context: &Arc<Context>,
) -> Result<std::path::PathBuf, String> {
    let socket =
        SafeSocket::create(path, 0o600, None).map_err(|e| format!("--stats-socket: {e}"))?;
    let created = socket.path().to_owned();
    metrics::spawn(socket, Arc::clone(context))
        .map_err(|e| format!("--stats-socket: cannot start its thread: {e}"))?;
    info!("serving metrics at GET /metrics on {}", created.display());
    Ok(created)
}

fn start_line(config: &Config, whitelist: &Whitelist, socket: &SafeSocket) -> String {
    let listening = if socket.is_inherited() {
        format!("{} (passed by systemd)", socket.path().display())
    } else {
        let group = config
            .socket_group
            .as_ref()
            .map_or(String::new(), |g| format!(" group {}", g.name));
        format!(
            "{} (mode {:04o}{group})",
            socket.path().display(),
            config.socket_mode
        )
    };
    let access = if config.access.is_restricted() {
        format!(
            "; allowed uids {:?} gids {:?}",
            config.access.uids, config.access.gids
        )
    } else {
        String::new()
    };
    format!(
        "docker-filter {} listening on {listening}, forwarding GET and HEAD to {}; whitelist {} ({} rules); max-connections {}, header-timeout {} s, idle-timeout {} s, shutdown-timeout {} s{access}",
        env!("CARGO_PKG_VERSION"),
        config.upstream.display(),
        whitelist.source(),
        whitelist.rules().len(),
        config.max_connections,
        config.header_timeout.as_secs(),
        config.idle_timeout.as_secs(),
        config.shutdown_timeout.as_secs(),
    )
}
