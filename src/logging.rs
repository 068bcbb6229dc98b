//! Log set-up: `RUST_LOG` chooses the level (default `info`), lines go to
//! stderr as `TIME LEVEL message`, with the time in UTC (RFC 3339, to the
//! second).
//!
//! The levels have fixed meanings: error, the proxy or a part of it cannot
//! go on; warn, a request was refused or the set-up is unsafe; info, start
//! (with the configuration) and stop (with the totals); debug, each allowed
//! request and relay detail.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Installs the logger; call once, before anything logs.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| {
            writeln!(out, "{} {:<5} {}", utc_now(), record.level(), record.args())
        })
        .init();
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch as a UTC date and time, with the
/// civil-from-days algorithm of H. Hinnant's "chrono-Compatible Low-Level
/// Date Algorithms" (a day count to a proleptic Gregorian date). Written
/// here so that the binary needs no date crate.
fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_292_169), "2026-12-03T10:02:49Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
