//! The decision log lines: one `allow` line at debug for each forwarded
//! request, one `deny` line at warn for each refusal, as stable `key=value`
//! fields that a log pipeline can parse. Values that come from the client are
//! made printable and quoted.

use std::fmt;

use log::{debug, warn};

use crate::denial::Denial;
use crate::policy::Allowed;
use crate::sys::Peer;
use crate::text::{log_quoted, printable};
use crate::whitelist::Whitelist;

/// The connection id and the caller's credentials, as the first fields of
/// every decision line: `conn=7 uid=1000 gid=1000 pid=4242`.
#[derive(Debug, Clone)]
pub struct Caller(String);

impl Caller {
    /// The fields for connection `id` from `peer` (`-` where unknown).
    pub fn new(id: u64, peer: Option<&Peer>) -> Caller {
        Caller(match peer {
            Some(p) => format!("conn={id} uid={} gid={} pid={}", p.uid, p.gid, p.pid),
            None => format!("conn={id} uid=- gid=- pid=-"),
        })
    }

    /// The fields for a connection refused before it was served.
    pub fn unserved() -> Caller {
        Caller("conn=- uid=- gid=- pid=-".to_owned())
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `allow conn=.. uid=.. gid=.. pid=.. method=GET path="/v1.41/info" rule="FILE:LINE"`
pub fn allowed(caller: &Caller, allowed: &Allowed<'_, '_>, whitelist: &Whitelist) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    debug!(
        "allow {caller} method={} path={} rule={}",
        allowed.request.method.as_str(),
        log_quoted(&allowed.request.target.to_string()),
        log_quoted(&format!("{}:{}", whitelist.source(), allowed.rule.line)),
    );
}

/// `deny conn=.. uid=.. gid=.. pid=.. status=403 reason=CODE method=M path="P" detail="..."`
pub fn denied(caller: &Caller, denial: &Denial) {
    let (method, path) = match &denial.request {
        Some((method, path)) => (method.as_str(), log_quoted(path)),
        None => ("-", "-".to_owned()),
    };
    warn!(
        "deny {caller} status={} reason={} method={method} path={path} detail={}",
        denial.status(),
        denial.reason.code(),
        log_quoted(&printable(denial.detail.as_bytes())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_fields_show_credentials_or_dashes() {
        let peer = Peer {
            pid: 42,
            uid: 1000,
            gid: 998,
        };
        assert_eq!(
            Caller::new(7, Some(&peer)).to_string(),
            "conn=7 uid=1000 gid=998 pid=42"
        );
        assert_eq!(Caller::new(7, None).to_string(), "conn=7 uid=- gid=- pid=-");
    }
}
