//! The whitelist: which decoded paths may be read (docs/POLICY.md rule 6).
//!
//! One regular expression per line, `#` comments and blank lines ignored, the
//! format of the original HAProxy docker-filter's `url-whitelist.lst`, whose
//! files load unchanged. Each rule must match the whole path: it is compiled
//! as `^(?:RULE)$`, so `^/info$`, `/info` and `^\/info$` mean the same.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::limits::{MAX_RULES, MAX_WHITELIST_BYTES};

/// The default whitelist, built into the binary.
pub const BUILTIN: &str = include_str!("../whitelist.lst");

/// The name used for the built-in list in messages.
pub const BUILTIN_NAME: &str = "built-in whitelist.lst";

/// How large one compiled rule may grow; a rule that needs more is almost
/// certainly a mistake (and could slow every request).
const RULE_SIZE_LIMIT: usize = 1024 * 1024;

/// One rule: where it came from and what it says.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The position among the rules, from 0.
    pub index: usize,
    /// The line number in the file, from 1.
    pub line: usize,
    /// The expression as written.
    pub pattern: String,
}

/// A loaded whitelist.
#[derive(Debug, Clone)]
pub struct Whitelist {
    source: String,
    rules: Vec<Rule>,
    set: RegexSet,
}

/// Why a whitelist could not be loaded. `Display` gives `FILE:LINE: what`.
#[derive(Debug)]
pub enum WhitelistError {
    /// The file could not be read.
    Read {
        /// The file.
        source: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file breaks a whole-file rule (size, encoding, no rules).
    File {
        /// The file.
        source: String,
        /// What is wrong.
        problem: String,
    },
    /// One line is not a valid rule.
    Rule {
        /// The file.
        source: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for WhitelistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhitelistError::Read { source, error } => {
                write!(f, "{source}: cannot read the whitelist: {error}")
            }
            WhitelistError::File { source, problem } => write!(f, "{source}: {problem}"),
            WhitelistError::Rule {
                source,
                line,
                problem,
            } => write!(f, "{source}:{line}: {problem}"),
        }
    }
}

impl std::error::Error for WhitelistError {}

impl Whitelist {
    /// The list built into the binary.
    pub fn builtin() -> Whitelist {
        Whitelist::parse(BUILTIN_NAME, BUILTIN).expect("the built-in whitelist is valid")
    }

    /// Loads a whitelist file.
    pub fn load(path: &Path) -> Result<Whitelist, WhitelistError> {
        let source = path.display().to_string();
        let read_error = |error| WhitelistError::Read {
            source: source.clone(),
            error,
        };
        let file = fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_WHITELIST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_WHITELIST_BYTES {
            return Err(WhitelistError::File {
                source,
                problem: format!("larger than {MAX_WHITELIST_BYTES} bytes"),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| WhitelistError::File {
            source: source.clone(),
            problem: "not valid UTF-8".to_owned(),
        })?;
        Whitelist::parse(&source, &text)
    }

    /// Parses whitelist text; `source` names it in errors and logs.
    pub fn parse(source: &str, text: &str) -> Result<Whitelist, WhitelistError> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let pattern = line.trim();
            if pattern.is_empty() || pattern.starts_with('#') {
                continue;
            }
            let line = index + 1;
            let rule_error = |problem: String| WhitelistError::Rule {
                source: source.to_owned(),
                line,
                problem,
            };
            if rules.len() == MAX_RULES {
                return Err(rule_error(format!("more than {MAX_RULES} rules")));
            }
            // Compiled alone first, so that an error names its line.
            compile(pattern)
                .map_err(|e| rule_error(format!("invalid regular expression: {}", one_line(&e))))?;
            rules.push(Rule {
                index: rules.len(),
                line,
                pattern: pattern.to_owned(),
            });
        }
        if rules.is_empty() {
            return Err(WhitelistError::File {
                source: source.to_owned(),
                problem: "no rules: every request would be denied".to_owned(),
            });
        }
        let set = RegexSetBuilder::new(rules.iter().map(|r| anchored(&r.pattern)))
            .unicode(false)
            .size_limit(RULE_SIZE_LIMIT * 16)
            .build()
            .map_err(|e| WhitelistError::File {
                source: source.to_owned(),
                problem: format!("the rules together are too large: {}", one_line(&e)),
            })?;
        Ok(Whitelist {
            source: source.to_owned(),
            rules,
            set,
        })
    }

    /// Where the list came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule (in file order) that matches the whole of `path`.
    pub fn find(&self, path: &str) -> Option<&Rule> {
        self.set
            .matches(path.as_bytes())
            .iter()
            .next()
            .map(|i| &self.rules[i])
    }

    /// Rules that would let through an endpoint from docs/POLICY.md's dangerous
    /// table, each with the endpoint and what it exposes.
    pub fn dangerous_rules(&self) -> Vec<(&Rule, &'static str, &'static str)> {
        let mut found = Vec::new();
        for rule in &self.rules {
            let regex = compile(&rule.pattern).expect("checked when loaded");
            for &(path, why) in DANGEROUS {
                // Sample ids of each shape a rule may expect: letters and
                // digits, digits only, a name with a dash.
                let matches = ["abc123", "123456", "web-1"].iter().any(|id| {
                    let sample = path.replace("abc123", id);
                    regex.is_match(sample.as_bytes())
                        || regex.is_match(format!("/v1.41{sample}").as_bytes())
                });
                if matches {
                    found.push((rule, path, why));
                }
            }
        }
        found
    }
}

/// Sample paths for each entry of docs/POLICY.md's dangerous table.
const DANGEROUS: &[(&str, &str)] = &[
    (
        "/containers/abc123/archive",
        "reads any file in the container",
    ),
    (
        "/containers/abc123/export",
        "exports the container's whole filesystem",
    ),
    ("/images/get", "exports whole images"),
    ("/images/abc123/get", "exports whole images"),
    (
        "/containers/abc123/attach/ws",
        "opens a websocket attach with a writable stdin",
    ),
    (
        "/containers/abc123/changes",
        "walks the container's filesystem",
    ),
    (
        "/swarm",
        "returns the swarm join tokens, manager token included",
    ),
    ("/swarm/unlockkey", "returns the swarm unlock key"),
    ("/configs", "returns swarm config data"),
    ("/configs/abc123", "returns swarm config data"),
    ("/secrets", "returns secret metadata"),
    ("/secrets/abc123", "returns secret metadata"),
    (
        "/images/search",
        "makes the daemon contact a registry the caller names",
    ),
    (
        "/distribution/abc123/json",
        "makes the daemon contact a registry the caller names",
    ),
    (
        "/plugins/privileges",
        "makes the daemon contact a registry the caller names",
    ),
    (
        "/debug/pprof/cmdline",
        "exposes daemon profiles and its command line",
    ),
    ("/exec/abc123/json", "returns exec command lines"),
    (
        "/system/df",
        "sizes every layer and volume, slow on big hosts",
    ),
];

/// Compiles one rule in its whole-path form.
///
/// Paths are ASCII by the time they are matched (`target.rs` refuses every
/// other byte), so rules are compiled without Unicode: `\d`, `\w` and `(?i)`
/// mean their ASCII forms, and the binary carries no Unicode tables.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&anchored(pattern))
        .unicode(false)
        .size_limit(RULE_SIZE_LIMIT)
        .build()
}

/// The whole-path form of a rule.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// The regex crate's errors span several lines with a caret diagram; a
/// `FILE:LINE:` message wants one.
fn one_line(error: &regex::Error) -> String {
    error
        .to_string()
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("unknown error")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_STYLE: &str = "^\\/v[0-9.]+\\/_ping$\n^\\/_ping$\n\n^\\/v[0-9.]+\\/system/df$\n";

    #[test]
    fn rules_match_the_whole_path_with_or_without_anchors() {
        let list = Whitelist::parse("t", "/info\n^/version$\n/containers/[a-z]+/json\n").unwrap();
        assert_eq!(list.find("/info").unwrap().line, 1);
        assert_eq!(list.find("/version").unwrap().line, 2);
        assert!(list.find("/info/x").is_none());
        assert!(list.find("/x/info").is_none());
        assert!(list.find("/containers/abc/json/extra").is_none());
        assert!(list.find("/containers/abc/json").is_some());
    }

    #[test]
    fn perl_classes_and_case_folding_have_their_ascii_meaning() {
        let list = Whitelist::parse("t", "/v\\d+\\.\\d+/info\n(?i)/VERSION\n/\\w+/json\n").unwrap();
        assert!(list.find("/v1.41/info").is_some());
        assert!(list.find("/version").is_some());
        assert!(list.find("/web_1/json").is_some());
        assert!(list.find("/web-1/json").is_none());
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let list = Whitelist::parse("t", "/info|/version").unwrap();
        assert!(list.find("/info").is_some());
        assert!(list.find("/infoXYZ").is_none());
        assert!(list.find("XYZ/version").is_none());
    }

    #[test]
    fn seed_style_escaped_slashes_load_and_match() {
        let list = Whitelist::parse("seed", SEED_STYLE).unwrap();
        assert_eq!(list.rules().len(), 3);
        assert_eq!(list.find("/v1.41/_ping").unwrap().line, 1);
        assert_eq!(list.find("/_ping").unwrap().line, 2);
        assert_eq!(list.find("/v1.41/system/df").unwrap().line, 4);
    }

    #[test]
    fn first_matching_rule_in_file_order_is_reported() {
        let list = Whitelist::parse("t", "# c\n/a.*\n/ab\n").unwrap();
        assert_eq!(list.find("/ab").unwrap().line, 2);
    }

    #[test]
    fn bad_regex_names_file_and_line() {
        let error = Whitelist::parse("my.lst", "# ok\n/info\n/containers/(\n").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("my.lst:3: invalid regular expression"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn empty_whitelist_is_an_error() {
        let error = Whitelist::parse("e.lst", "# only comments\n\n").unwrap_err();
        assert!(error.to_string().starts_with("e.lst: no rules"));
    }

    #[test]
    fn dangerous_rules_are_found_whatever_id_shape_they_expect() {
        let list = Whitelist::parse(
            "t",
            "/containers/[0-9]+/archive\n/containers/[a-z-]+[0-9]/export\n",
        )
        .unwrap();
        let found: Vec<_> = list
            .dangerous_rules()
            .iter()
            .map(|(r, p, _)| (r.line, *p))
            .collect();
        assert_eq!(
            found,
            [
                (1, "/containers/abc123/archive"),
                (2, "/containers/abc123/export")
            ]
        );
    }

    #[test]
    fn dangerous_rules_are_reported() {
        let list = Whitelist::parse("seed", SEED_STYLE).unwrap();
        let found = list.dangerous_rules();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.line, 4);
        assert_eq!(found[0].1, "/system/df");
    }

    #[test]
    fn builtin_whitelist_allows_nothing_dangerous() {
        let list = Whitelist::builtin();
        assert!(list.dangerous_rules().is_empty());
    }

    #[test]
    fn builtin_whitelist_serves_monitoring_reads() {
        let list = Whitelist::builtin();
        let allowed = [
            "/_ping",
            "/version",
            "/info",
            "/events",
            "/containers/json",
            "/containers/0123456789ab/json",
            "/containers/e2e-web_1.a/json",
            "/containers/web/logs",
            "/containers/web/stats",
            "/containers/web/top",
            "/images/json",
            "/images/busybox:e2e/json",
            "/images/docker.io/library/redis:7/json",
            "/images/localhost:5000/team/app:1.2/history",
            "/images/redis@sha256:0123456789abcdef/json",
            "/images/sha256:0123456789abcdef/json",
            "/containers/busybox:e2e/json",
            "/containers/docker.io/library/redis:7/json",
            "/networks",
            "/networks/bridge",
            "/volumes",
            "/volumes/data_1",
        ];
        for path in allowed {
            assert!(list.find(path).is_some(), "{path}");
            let versioned = format!("/v1.41{path}");
            assert!(list.find(&versioned).is_some(), "{versioned}");
        }
    }

    #[test]
    fn builtin_whitelist_denies_writes_exports_and_secrets() {
        let list = Whitelist::builtin();
        let denied = [
            "/containers/create",
            "/containers/web/archive",
            "/containers/web/export",
            "/containers/web/changes",
            "/containers/web/attach/ws",
            "/containers/web/attach",
            "/containers/web/wait",
            "/images/get",
            "/images/web/get",
            "/images/web/json/get",
            "/images/search",
            "/swarm",
            "/swarm/unlockkey",
            "/secrets",
            "/configs",
            "/exec/abc/json",
            "/system/df",
            "/debug/pprof/cmdline",
            "/distribution/redis/json",
            "/plugins",
            "/plugins/privileges",
            "/v1.41.2/info",
            "/vX/info",
            "/v1.41/v1.41/info",
            "/containers/web/json/extra",
            "/containers/-web/json",
        ];
        for path in denied {
            assert!(list.find(path).is_none(), "{path}");
            let versioned = format!("/v1.41{path}");
            assert!(list.find(&versioned).is_none(), "{versioned}");
        }
    }
}
