//! The request target, reduced to one canonical path (docs/POLICY.md rule 5).
//!
//! dockerd percent-decodes the path before routing, so `/containers/x/%65xport`
//! reaches the export handler, and gorilla/mux then cleans `.`, `..` and `//`.
//! A proxy that matched the raw target would see a different path from the
//! one the daemon routes. Here the path is decoded exactly once, anything that
//! could be read two ways is refused, and what is forwarded is the decoded
//! path itself, which contains only characters that decode to themselves.

use crate::denial::{Denial, Reason};

/// A target that passed every path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    path: String,
    query: Option<String>,
}

impl Target {
    /// The decoded path, as matched against the whitelist and as forwarded.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query after `?`, if there was a `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Whether any query parameter decodes to the name `key`.
    ///
    /// Go's `url.ParseQuery`, which dockerd uses through `r.Form`, decodes `+`
    /// and `%XX` in names and honours a name however often it repeats, so
    /// every pair is looked at and decoded the same way. Go before 1.17 split
    /// pairs on `;` as well as `&`; splitting on both covers old daemons.
    pub fn has_query_key(&self, key: &str) -> bool {
        let Some(query) = &self.query else {
            return false;
        };
        query.split(['&', ';']).any(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            decode_query_component(name).as_deref() == Some(key.as_bytes())
        })
    }
}

/// The path and query as they are forwarded, for messages and logs.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// Whether a decoded path may contain `b`.
///
/// Docker's object names and image references use letters, digits and
/// `-._:@/` (a tag may also hold `_`, a digest `:`). Everything else, from
/// the space to `%`, `?`, `#` and `\`, has no legitimate use in a Docker API
/// path and could be read differently by another layer, so it is refused.
fn allowed_in_path(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@' | b'/')
}

/// Whether a raw query may contain `b`: printable ASCII other than `#`
/// (a fragment has no place in a request) and the backslash.
fn allowed_in_query(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'#' && b != b'\\'
}

/// Parses the raw request target into a canonical [`Target`].
pub fn parse(raw: &str) -> Result<Target, Denial> {
    if !raw.starts_with('/') {
        return Err(Denial::new(
            Reason::TargetForm,
            "the request target must be a path starting with /, not an absolute URL or *",
        ));
    }
    let (raw_path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };

    let path = decode_path(raw_path.as_bytes())?;
    check_segments(&path)?;

    if let Some(query) = query {
        check_query(query.as_bytes())?;
    }
    Ok(Target {
        path,
        query: query.map(str::to_owned),
    })
}

/// Decodes `%XX` escapes once, refusing encoded slashes and any byte (raw or
/// decoded) that may not appear in a path.
fn decode_path(raw: &[u8]) -> Result<String, Denial> {
    let mut path = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let (byte, encoded) = if raw[i] == b'%' {
            let byte = hex_pair(raw, i + 1).ok_or_else(|| {
                Denial::new(
                    Reason::BadEscape,
                    "a % in the path must be followed by two hex digits",
                )
            })?;
            i += 3;
            (byte, true)
        } else {
            i += 1;
            (raw[i - 1], false)
        };
        if encoded && byte == b'/' {
            return Err(Denial::new(
                Reason::EncodedSlash,
                "an encoded slash (%2F) in the path is not allowed",
            ));
        }
        if !allowed_in_path(byte) {
            return Err(Denial::new(
                Reason::BadByte,
                format!(
                    "the byte 0x{byte:02x} is not allowed in a path (only letters, digits and -._~:@/)"
                ),
            ));
        }
        path.push(char::from(byte));
    }
    Ok(path)
}

/// Refuses empty, `.` and `..` segments, which the daemon's router would
/// clean into a different path.
fn check_segments(path: &str) -> Result<(), Denial> {
    for segment in path.split('/').skip(1) {
        match segment {
            "" => {
                return Err(Denial::new(
                    Reason::EmptySegment,
                    "empty path segments (// or a trailing /) are not allowed",
                ))
            }
            "." | ".." => {
                return Err(Denial::new(
                    Reason::DotSegment,
                    ". and .. path segments are not allowed",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the raw query's bytes and escapes; the query is forwarded as it was
/// sent.
fn check_query(query: &[u8]) -> Result<(), Denial> {
    if let Some(&byte) = query.iter().find(|&&b| !allowed_in_query(b)) {
        return Err(Denial::new(
            Reason::BadByte,
            format!("the byte 0x{byte:02x} is not allowed in a query"),
        ));
    }
    for (i, _) in query.iter().enumerate().filter(|(_, &b)| b == b'%') {
        if hex_pair(query, i + 1).is_none() {
            return Err(Denial::new(
                Reason::BadEscape,
                "a % in the query must be followed by two hex digits",
            ));
        }
    }
    Ok(())
}

/// Decodes a query name or value as Go's `url.QueryUnescape` does (`+` is a
/// space). `None` for a bad escape.
fn decode_query_component(raw: &str) -> Option<Vec<u8>> {
    let raw = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                out.push(hex_pair(raw, i + 1)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The byte encoded by the two hex digits at `raw[at..at + 2]`.
fn hex_pair(raw: &[u8], at: usize) -> Option<u8> {
    let digits = raw.get(at..at + 2)?;
    let high = char::from(digits[0]).to_digit(16)?;
    let low = char::from(digits[1]).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> Reason {
        parse(raw).expect_err(raw).reason
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        for raw in [
            "/_ping",
            "/v1.41/containers/json",
            "/v1.41/containers/web-1_a.b/json",
            "/images/docker.io/library/redis:7/json",
            "/images/redis@sha256:0123abcd/json",
        ] {
            assert_eq!(parse(raw).unwrap().path(), raw);
        }
    }

    #[test]
    fn escapes_are_decoded_once() {
        assert_eq!(
            parse("/containers/x/%65xport").unwrap().path(),
            "/containers/x/export"
        );
        assert_eq!(
            parse("/images/redis%3A7/json").unwrap().path(),
            "/images/redis:7/json"
        );
        assert_eq!(
            parse("/images/redis%40sha256:ab/json").unwrap().path(),
            "/images/redis@sha256:ab/json"
        );
    }

    #[test]
    fn double_encoding_is_refused_not_decoded_twice() {
        // %2565 decodes to "%65"; a second decoding would give "e".
        assert_eq!(reason("/containers/x/%2565xport"), Reason::BadByte);
    }

    #[test]
    fn query_is_split_off_and_kept_raw() {
        let target = parse("/containers/json?all=1&filters=%7B%22a%22%7D").unwrap();
        assert_eq!(target.path(), "/containers/json");
        assert_eq!(target.query(), Some("all=1&filters=%7B%22a%22%7D"));
        assert_eq!(parse("/info?").unwrap().query(), Some(""));
    }

    #[test]
    fn ambiguous_paths_are_refused_by_name() {
        let cases = [
            ("http://x/containers/json", Reason::TargetForm),
            ("*", Reason::TargetForm),
            ("containers/json", Reason::TargetForm),
            ("/v1.41/containers/x%2Fjson", Reason::EncodedSlash),
            ("/v1.41/containers/x%2fjson", Reason::EncodedSlash),
            ("/containers/./json", Reason::DotSegment),
            ("/containers/x/../../archive", Reason::DotSegment),
            ("/containers/%2e%2e/json", Reason::DotSegment),
            ("/containers/%2E/json", Reason::DotSegment),
            ("/containers//json", Reason::EmptySegment),
            ("/containers/json/", Reason::EmptySegment),
            ("/", Reason::EmptySegment),
            ("/containers\\json", Reason::BadByte),
            ("/containers%5Cjson", Reason::BadByte),
            ("/containers/x%00/json", Reason::BadByte),
            ("/containers/x%0a/json", Reason::BadByte),
            ("/containers/x%7f/json", Reason::BadByte),
            ("/containers/x%ff/json", Reason::BadByte),
            ("/containers/x%23/json", Reason::BadByte),
            ("/containers/x%3F/json", Reason::BadByte),
            ("/containers/x%20y/json", Reason::BadByte),
            ("/containers/x#frag", Reason::BadByte),
            ("/containers/%zz/json", Reason::BadEscape),
            ("/containers/%4", Reason::BadEscape),
            ("/info?a=%zz", Reason::BadEscape),
            ("/info?a=b#c", Reason::BadByte),
            ("/info?a=\\", Reason::BadByte),
        ];
        for (raw, expected) in cases {
            assert_eq!(reason(raw), expected, "{raw}");
        }
    }

    #[test]
    fn query_keys_are_decoded_like_go() {
        let has = |raw: &str| parse(raw).unwrap().has_query_key("ps_args");
        assert!(has("/containers/x/top?ps_args=aux"));
        assert!(has("/containers/x/top?a=1&ps_args"));
        assert!(has("/containers/x/top?ps%5Fargs=aux"));
        assert!(has("/containers/x/top?ps%5fargs=e"));
        assert!(has("/containers/x/top?a=1;ps_args=aux"));
        assert!(!has("/containers/x/top?ps_args2=1"));
        assert!(!has("/containers/x/top"));
        assert!(!has("/containers/x/top?x=ps_args"));
    }
}
