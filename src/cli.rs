//! The command line, parsed into a [`Command`] with typed values.
//!
//! Hand-written rather than a dependency: four subcommands and a dozen flags.
//! Every mistake is a [`UsageError`] with one line that names the flag and
//! what it wants; `main.rs` exits with status 2 for it.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, Group, WhitelistSource};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the proxy.
    Serve(Config),
    /// Validate a whitelist and, optionally, decide requests.
    Check {
        /// The whitelist file, or the built-in one.
        whitelist: WhitelistSource,
        /// `(METHOD, PATH)` pairs to decide.
        requests: Vec<(String, String)>,
    },
    /// Ask a running proxy for `GET /_ping`.
    Healthcheck {
        /// The proxy's safe socket.
        listen: PathBuf,
    },
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
}

/// A command-line mistake, shown as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see docker-filter --help)", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The text of `--help`.
pub const USAGE: &str = "\
docker-filter: a read-only filtering proxy for the Docker Engine API socket

Usage:
  docker-filter [OPTIONS]                          run the proxy
  docker-filter check [--whitelist FILE] [METHOD PATH]...
  docker-filter healthcheck [--listen PATH]
  docker-filter --help | --version

Options:
  --listen PATH           safe socket to create        [/safe-socket/docker.sock]
  --upstream PATH         Docker socket to forward to  [/var/run/docker.sock]
  --whitelist FILE        whitelist file               [whitelist.lst built into the binary]
  --socket-mode OCTAL     permissions of the safe socket [0660]
  --socket-group GROUP    group of the safe socket (name or gid)
  --max-connections N     concurrent client connections [512]
  --header-timeout SECS   time allowed to receive one whole request head [10]
  --idle-timeout SECS     keep-alive idle limit between requests [120]
  --shutdown-timeout SECS grace for in-flight requests on SIGINT/SIGTERM [10]
  --allow-uid LIST        serve only these users (ids or names, comma-separated)
  --allow-gid LIST        serve only these primary groups (ids or names)
  --stats-socket PATH     serve GET /metrics (Prometheus text) on PATH, mode 0600

`check` with no request validates the whitelist and lists its rules; with
METHOD PATH pairs it prints allow or deny for each and exits 1 if any is
denied. `healthcheck` exits 0 only if the proxy answers GET /_ping with 200.
With --allow-uid and/or --allow-gid, a connection is served when its user
or its primary group is listed; others get 403. Under systemd socket
activation (LISTEN_FDS) the passed socket is used instead of --listen, and
with NOTIFY_SOCKET set the proxy reports READY=1 and STOPPING=1.
RUST_LOG sets the log level (error, warn, info, debug; default info).
Exit status: 0 success, 1 runtime failure or a denied check, 2 usage or
whitelist error.
";

/// The most seconds any timeout flag takes (one day).
const MAX_SECS: u64 = 86_400;
/// The most connections `--max-connections` takes.
const MAX_CONNECTIONS: usize = 100_000;

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = String>,
{
    let mut args = Args::new(args);
    match args.peek() {
        Some("check") => {
            args.next();
            parse_check(args)
        }
        Some("healthcheck") => {
            args.next();
            parse_healthcheck(args)
        }
        _ => parse_serve(args),
    }
}

fn parse_serve(mut args: Args) -> Result<Command, UsageError> {
    let mut config = Config::default();
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--help" | "-h" => return args.no_value(&flag).map(|()| Command::Help),
            "--version" | "-V" => return args.no_value(&flag).map(|()| Command::Version),
            "--listen" => config.listen = args.value_path(&flag)?,
            "--upstream" => config.upstream = args.value_path(&flag)?,
            "--whitelist" => config.whitelist = WhitelistSource::File(args.value_path(&flag)?),
            "--socket-mode" => config.socket_mode = parse_mode(&flag, &args.value(&flag)?)?,
            "--socket-group" => {
                config.socket_group = Some(parse_group(&flag, &args.value(&flag)?)?);
            }
            "--max-connections" => {
                config.max_connections =
                    parse_number(&flag, &args.value(&flag)?, 1, MAX_CONNECTIONS)?;
            }
            "--header-timeout" => config.header_timeout = parse_secs(&flag, &args.value(&flag)?)?,
            "--idle-timeout" => config.idle_timeout = parse_secs(&flag, &args.value(&flag)?)?,
            "--shutdown-timeout" => {
                config.shutdown_timeout = parse_secs(&flag, &args.value(&flag)?)?;
            }
            "--allow-uid" => {
                let ids = parse_ids(&flag, &args.value(&flag)?, "/etc/passwd")?;
                config.access.uids.extend(ids);
            }
            "--allow-gid" => {
                let ids = parse_ids(&flag, &args.value(&flag)?, "/etc/group")?;
                config.access.gids.extend(ids);
            }
            "--stats-socket" => config.stats_socket = Some(args.value_path(&flag)?),
            _ => return Err(unknown(&flag)),
        }
    }
    Ok(Command::Serve(config))
}

fn parse_check(mut args: Args) -> Result<Command, UsageError> {
    let mut whitelist = WhitelistSource::Builtin;
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        let (name, inline) = split_inline(&arg);
        match name {
            "--whitelist" => {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => args.value(name)?,
                };
                whitelist = WhitelistSource::File(non_empty_path(name, value)?);
            }
            "--help" | "-h" => return Ok(Command::Help),
            _ if arg.starts_with("--") => return Err(unknown(name)),
            _ => words.push(arg),
        }
    }
    if words.len() % 2 != 0 {
        return Err(UsageError(format!(
            "check: requests are METHOD PATH pairs; {:?} has no PATH",
            words[words.len() - 1]
        )));
    }
    let requests = words
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    Ok(Command::Check {
        whitelist,
        requests,
    })
}

fn parse_healthcheck(mut args: Args) -> Result<Command, UsageError> {
    let mut listen = PathBuf::from(crate::config::DEFAULT_LISTEN);
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--listen" => listen = args.value_path(&flag)?,
            "--help" | "-h" => return args.no_value(&flag).map(|()| Command::Help),
            _ => return Err(unknown(&flag)),
        }
    }
    Ok(Command::Healthcheck { listen })
}

/// The argument list, with `--flag=value` split into flag and value.
struct Args {
    items: std::vec::IntoIter<String>,
    peeked: Option<String>,
    inline: Option<String>,
}

impl Args {
    fn new(args: impl IntoIterator<Item = String>) -> Args {
        let mut items: std::vec::IntoIter<String> =
            args.into_iter().collect::<Vec<_>>().into_iter();
        let peeked = items.next();
        Args {
            items,
            peeked,
            inline: None,
        }
    }

    fn peek(&self) -> Option<&str> {
        self.peeked.as_deref()
    }

    fn next(&mut self) -> Option<String> {
        let current = self.peeked.take();
        self.peeked = self.items.next();
        current
    }

    /// The next flag; a word that is not a flag is an error.
    fn next_flag(&mut self) -> Result<Option<String>, UsageError> {
        if let Some(value) = self.inline.take() {
            return Err(UsageError(format!("unexpected value {value:?}")));
        }
        let Some(arg) = self.next() else {
            return Ok(None);
        };
        if !arg.starts_with('-') {
            return Err(UsageError(format!("unexpected argument {arg:?}")));
        }
        let (name, inline) = split_inline(&arg);
        self.inline = inline.map(str::to_owned);
        Ok(Some(name.to_owned()))
    }

    fn value(&mut self, flag: &str) -> Result<String, UsageError> {
        if let Some(value) = self.inline.take() {
            return Ok(value);
        }
        match self.next() {
            Some(value) if !value.starts_with("--") => Ok(value),
            _ => Err(UsageError(format!("{flag} needs a value"))),
        }
    }

    fn no_value(&mut self, flag: &str) -> Result<(), UsageError> {
        match self.inline.take() {
            Some(_) => Err(UsageError(format!("{flag} takes no value"))),
            None => Ok(()),
        }
    }

    fn value_path(&mut self, flag: &str) -> Result<PathBuf, UsageError> {
        let value = self.value(flag)?;
        non_empty_path(flag, value)
    }
}

fn split_inline(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (arg, None),
    }
}

fn unknown(flag: &str) -> UsageError {
    UsageError(format!("unknown option {flag}"))
}

fn non_empty_path(flag: &str, value: String) -> Result<PathBuf, UsageError> {
    if value.is_empty() {
        return Err(UsageError(format!("{flag} needs a non-empty path")));
    }
    Ok(PathBuf::from(value))
}

fn parse_number(flag: &str, value: &str, min: usize, max: usize) -> Result<usize, UsageError> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(UsageError(format!(
            "{flag} wants a whole number from {min} to {max}, not {value:?}"
        ))),
    }
}

fn parse_secs(flag: &str, value: &str) -> Result<Duration, UsageError> {
    let max = usize::try_from(MAX_SECS).unwrap_or(usize::MAX);
    let secs = parse_number(flag, value, 1, max)?;
    Ok(Duration::from_secs(secs as u64))
}

fn parse_mode(flag: &str, value: &str) -> Result<u32, UsageError> {
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o777 && !value.is_empty() => Ok(mode),
        _ => Err(UsageError(format!(
            "{flag} wants octal permission bits such as 0660, not {value:?}"
        ))),
    }
}

/// A group for the socket, by name or id.
fn parse_group(flag: &str, value: &str) -> Result<Group, UsageError> {
    Ok(Group {
        name: value.to_owned(),
        gid: parse_id(flag, value, "/etc/group")?,
    })
}

/// A comma-separated list of ids or names.
fn parse_ids(flag: &str, value: &str, database: &str) -> Result<Vec<u32>, UsageError> {
    value
        .split(',')
        .map(|item| {
            if item.is_empty() {
                Err(UsageError(format!(
                    "{flag}: empty item in the list {value:?}"
                )))
            } else {
                parse_id(flag, item, database)
            }
        })
        .collect()
}

/// A number is taken as it is; a name is looked up in `database`
/// (`/etc/passwd` or `/etc/group`: a static binary has no NSS).
fn parse_id(flag: &str, value: &str, database: &str) -> Result<u32, UsageError> {
    if let Ok(id) = value.parse::<u32>() {
        return Ok(id);
    }
    let text = fs::read_to_string(database).unwrap_or_default();
    id_in(&text, value).ok_or_else(|| {
        UsageError(format!(
            "{flag}: no entry named {value:?} in {database}; give its numeric id instead"
        ))
    })
}

/// The id (third field) of entry `name` in the text of an `/etc/passwd` or
/// `/etc/group` file.
fn id_in(entries: &str, name: &str) -> Option<u32> {
    entries.lines().find_map(|line| {
        let mut fields = line.split(':');
        let found = fields.next()? == name;
        let gid = fields.nth(1)?.parse().ok()?;
        found.then_some(gid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(|s| (*s).to_owned()))
    }

    fn serve(args: &[&str]) -> Config {
        match run(args).unwrap() {
            Command::Serve(config) => config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_arguments_serve_with_defaults() {
        assert_eq!(serve(&[]), Config::default());
    }

    #[test]
    fn every_flag_takes_separate_or_inline_values() {
        let config = serve(&[
            "--listen",
            "/tmp/a.sock",
            "--upstream=/tmp/d.sock",
            "--whitelist",
            "w.lst",
            "--socket-mode=0640",
            "--socket-group",
            "0",
            "--max-connections",
            "7",
            "--header-timeout",
            "2",
            "--idle-timeout=3",
            "--shutdown-timeout",
            "4",
        ]);
        assert_eq!(config.listen, PathBuf::from("/tmp/a.sock"));
        assert_eq!(config.upstream, PathBuf::from("/tmp/d.sock"));
        assert_eq!(config.whitelist, WhitelistSource::File("w.lst".into()));
        assert_eq!(config.socket_mode, 0o640);
        assert_eq!(config.socket_group.unwrap().gid, 0);
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.header_timeout, Duration::from_secs(2));
        assert_eq!(config.idle_timeout, Duration::from_secs(3));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(4));
    }

    #[test]
    fn mistakes_are_one_line_usage_errors() {
        for args in [
            &["--bogus"][..],
            &["--listen"],
            &["--listen", "--upstream", "x"],
            &["--max-connections", "abc"],
            &["--max-connections", "0"],
            &["--header-timeout", "-1"],
            &["--idle-timeout", "1.5"],
            &["--socket-mode", "999"],
            &["--socket-mode", "0x1"],
            &["--socket-group", "no-such-group-here"],
            &["--stats-socket"],
            &["stray"],
            &["--listen="],
            &["--version=1"],
            &["check", "GET"],
            &["check", "--bogus"],
            &["healthcheck", "--upstream", "x"],
        ] {
            let error = run(args).expect_err(&format!("{args:?}"));
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }

    #[test]
    fn check_takes_a_whitelist_and_request_pairs() {
        assert_eq!(
            run(&[
                "check",
                "--whitelist=x.lst",
                "GET",
                "/info",
                "POST",
                "/containers/create"
            ])
            .unwrap(),
            Command::Check {
                whitelist: WhitelistSource::File("x.lst".into()),
                requests: vec![
                    ("GET".into(), "/info".into()),
                    ("POST".into(), "/containers/create".into())
                ],
            }
        );
    }

    #[test]
    fn healthcheck_defaults_to_the_default_socket() {
        assert_eq!(
            run(&["healthcheck"]).unwrap(),
            Command::Healthcheck {
                listen: PathBuf::from("/safe-socket/docker.sock")
            }
        );
    }

    #[test]
    fn names_are_found_in_etc_group_and_passwd_text() {
        let text = "root:x:0:\ndocker:x:998:alice,bob\n";
        assert_eq!(id_in(text, "docker"), Some(998));
        assert_eq!(id_in(text, "dock"), None);
        let passwd = "root:x:0:0:root:/root:/bin/sh\nagent:x:1001:1001::/home/agent:/bin/sh\n";
        assert_eq!(id_in(passwd, "agent"), Some(1001));
    }

    #[test]
    fn allow_lists_accumulate_and_take_names() {
        let config = serve(&[
            "--allow-uid",
            "1000,root",
            "--allow-uid=7",
            "--allow-gid",
            "0",
        ]);
        assert_eq!(config.access.uids, vec![1000, 0, 7]);
        assert_eq!(config.access.gids, vec![0]);
        assert!(run(&["--allow-uid", "1,,2"]).is_err());
        assert!(run(&["--allow-uid", "no-such-user-here"]).is_err());
    }
}
