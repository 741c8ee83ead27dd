//! Cron schedules (of triggers and of scheduled minimums), parsed the one way Flint reads them
//! (seconds field optional), and the time zones they may be read in.

use croner::{
    Cron,
    parser::{CronParser, Seconds},
};

/// Parses a schedule; the error says what is wrong with it.
pub fn parse(schedule: &str) -> Result<Cron, String> {
    CronParser::builder().seconds(Seconds::Optional).build().parse(schedule).map_err(|e| e.to_string())
}

/// Whether a schedule ever fires (`0 0 30 2 *` never does). Searching for a time that does not
/// exist takes croner about 50 ms before it gives up, so it is asked once, when a schedule is
/// checked or first read, not at every use.
pub fn fires(cron: &Cron) -> bool {
    cron.find_next_occurrence(&chrono::Utc::now(), false).is_ok()
}

/// The IANA time zone named `name` (`None`: UTC), from the database built into Flint (a
/// container image need not carry one).
pub fn time_zone(name: Option<&str>) -> Result<chrono_tz::Tz, String> {
    match name {
        None => Ok(chrono_tz::UTC),
        Some(name) => name.parse().map_err(|_| format!("{name:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)")),
    }
}
