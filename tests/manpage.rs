//! `docs/docker-filter.1` must not drift from the binary: every flag of
//! `docker-filter --help` is documented with the same default, every
//! subcommand and environment variable the help names is there, every
//! reason code is listed, the version matches, and the page renders without
//! a single groff warning.
//!
//! Rendering needs `groff` (Debian's groff-base) and `man` (man-db); where
//! one is missing that check says so and passes, except under `CI=true`.

mod common;

use std::process::{Command, Stdio};

use common::{tool, BINARY};
use docker_filter::denial::Reason;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/docker-filter.1");

fn help() -> String {
    let output = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run docker-filter --help");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn source() -> String {
    std::fs::read_to_string(PAGE).expect("docs/docker-filter.1")
}

/// The roff source as plain text: font changes dropped, escapes resolved.
fn plain(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    let mut chars = roff.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => out.push('-'),
            Some('e') => out.push('\\'),
            Some('&' | '%') => {}
            Some('f') => {
                chars.next();
            }
            Some('(') => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(match name.as_str() {
                    "em" => "--",
                    "bu" => "*",
                    _ => "?",
                });
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Every `--flag` in `text`.
fn flags(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if let Some(name) = word.strip_prefix("--") {
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                let flag = format!("--{name}");
                if !found.contains(&flag) {
                    found.push(flag);
                }
            }
        }
    }
    found
}

/// The roff lines of the entry that documents `flag` in OPTIONS: from its
/// `.BI`/`.BR` line to the next paragraph macro, as plain text.
fn option_entry(flag: &str) -> Option<String> {
    let page = source();
    let options = page.split(".SH OPTIONS").nth(1)?.split("\n.SH ").next()?;
    let lines: Vec<&str> = options.lines().collect();
    let start = lines.iter().position(|l| {
        (l.starts_with(".BI ") || l.starts_with(".BR "))
            && plain(l)
                .split_whitespace()
                .nth(1)
                .map(|w| w.trim_end_matches(','))
                == Some(flag)
    })?;
    let entry: Vec<&str> = lines[start..]
        .iter()
        .skip(1)
        .take_while(|l| !l.starts_with(".TP") && !l.starts_with(".SH"))
        .copied()
        .collect();
    let text: Vec<String> = entry
        .iter()
        .map(|line| match line.strip_prefix('.') {
            // A macro line: its arguments are text.
            Some(macro_line) => plain(macro_line.split_once(' ').map_or("", |(_, args)| args)),
            None => plain(line),
        })
        .collect();
    Some(text.join(" ").replace('"', ""))
}

#[test]
fn every_flag_of_help_is_in_the_man_page() {
    let help = help();
    let page = plain(&source());
    let flags = flags(&help);
    assert!(
        flags.len() >= 14,
        "too few flags found in --help: {flags:?}"
    );
    for flag in &flags {
        assert!(
            page.contains(flag.as_str()),
            "{flag} is in --help but not in docs/docker-filter.1"
        );
    }
}

#[test]
fn every_option_has_its_own_entry_with_the_default_of_help() {
    let help = help();
    let options = help
        .split("Options:")
        .nth(1)
        .expect("an Options: section in --help");
    let mut checked = 0;
    for line in options.lines().skip(1).take_while(|l| !l.trim().is_empty()) {
        let line = line.trim();
        let Some(flag) = line
            .split_whitespace()
            .next()
            .filter(|f| f.starts_with("--"))
        else {
            continue;
        };
        let entry = option_entry(flag)
            .unwrap_or_else(|| panic!("no OPTIONS entry (.TP / .BI {flag}) in the man page"));
        if let Some(default) = line
            .strip_suffix(']')
            .and_then(|l| l.rsplit_once('['))
            .map(|(_, d)| d)
        {
            assert!(
                entry.contains(default),
                "the entry for {flag} does not give the default {default:?} of --help: {entry}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} options in --help");
}

#[test]
fn subcommands_environment_and_exit_statuses_of_help_are_documented() {
    let help = help();
    let page = source();
    let text = plain(&page);
    for command in ["check", "healthcheck"] {
        assert!(help.contains(&format!("docker-filter {command}")));
        assert!(
            page.contains(&format!(".B {command} "))
                || page.contains(&format!(".B docker\\-filter {command}")),
            "subcommand {command} has no entry"
        );
    }
    // Every variable --help names (RUST_LOG, LISTEN_FDS, NOTIFY_SOCKET...)
    // is in ENVIRONMENT.
    let environment = plain(
        page.split(".SH ENVIRONMENT")
            .nth(1)
            .and_then(|s| s.split("\n.SH ").next())
            .expect("an ENVIRONMENT section"),
    );
    let variables: Vec<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.contains('_') && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(variables.contains(&"NOTIFY_SOCKET"), "{variables:?}");
    for variable in variables.iter().chain(&["LISTEN_PID"]) {
        assert!(
            environment.contains(variable),
            "{variable} is not in ENVIRONMENT"
        );
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "WHITELIST",
        "FILES",
        "ENVIRONMENT",
        "SIGNALS",
        "EXIT STATUS",
        "LOGS",
        "SECURITY",
        "SEE ALSO",
    ] {
        assert!(
            page.contains(&format!("\n.SH {section}\n")),
            "no {section} section"
        );
    }
    let statuses = page
        .split(".SH EXIT STATUS")
        .nth(1)
        .and_then(|s| s.split("\n.SH ").next())
        .expect("an EXIT STATUS section");
    let help_statuses = help
        .split("Exit status:")
        .nth(1)
        .expect("Exit status: in --help");
    for status in ["0", "1", "2"] {
        assert!(
            help_statuses.contains(&format!(" {status} ")),
            "--help lost exit status {status}"
        );
        assert!(
            statuses.contains(&format!(".TP\n.B {status}\n")),
            "exit status {status}"
        );
    }
    for signal in ["SIGINT", "SIGTERM", "SIGHUP"] {
        assert!(text.contains(signal), "{signal}");
    }
}

#[test]
fn every_reason_code_is_listed_in_logs() {
    let page = source();
    let logs = plain(
        page.split(".SH LOGS")
            .nth(1)
            .and_then(|s| s.split("\n.SH ").next())
            .expect("a LOGS section"),
    );
    // "400 malformed, bare-line-ending, ...; 403 method, ...": each code
    // comes after the status it is sent with.
    let words: Vec<&str> = logs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .collect();
    for reason in Reason::ALL {
        let code = reason.code();
        let at = words
            .iter()
            .position(|w| *w == code)
            .unwrap_or_else(|| panic!("reason code {code} is not listed in LOGS"));
        let status = words[..at]
            .iter()
            .rev()
            .find(|w| w.len() == 3 && w.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(
            status,
            Some(&reason.status().to_string().as_str()),
            "reason code {code} is not listed under status {}",
            reason.status()
        );
    }
}

#[test]
fn title_line_carries_the_version() {
    let page = source();
    let title = page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH line");
    assert!(
        title.contains(&format!("\"docker-filter {}\"", env!("CARGO_PKG_VERSION"))),
        "{title}"
    );
}

#[test]
fn page_renders_without_warnings() {
    if let Some(groff) = tool("groff", "groff-base") {
        let output = Command::new(groff)
            .args(["-man", "-ww", "-z"])
            .arg(PAGE)
            .stdin(Stdio::null())
            .output()
            .expect("run groff");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "groff -man -ww -z:\n{stderr}"
        );
    }
    if let Some(man) = tool("man", "man-db") {
        let output = Command::new(man)
            .args(["--warnings", "-l"])
            .arg(PAGE)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run man");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Without a terminal, man still marks bold as "X\bX" and underline
        // as "_\bX": drop each character that a backspace takes back.
        let raw = String::from_utf8_lossy(&output.stdout);
        let parts: Vec<&str> = raw.split('\u{8}').collect();
        let stdout: String = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                if i + 1 < parts.len() {
                    let mut part = (*part).to_owned();
                    part.pop();
                    part
                } else {
                    (*part).to_owned()
                }
            })
            .collect();
        assert!(
            output.status.success() && stderr.is_empty(),
            "man --warnings -l:\n{stderr}"
        );
        assert!(
            stdout.contains("EXIT STATUS"),
            "nothing rendered:\n{stdout}"
        );
    }
}

#[test]
fn plain_text_resolves_roff_escapes() {
    assert_eq!(plain("\\fB\\-\\-listen\\fR \\fIPATH\\fP"), "--listen PATH");
    assert_eq!(plain("^\\e/info$\\&."), "^\\/info$.");
    assert_eq!(
        flags("a --listen PATH [--x-y] -h --Help"),
        vec!["--listen", "--x-y"]
    );
}
