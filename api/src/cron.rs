//! Cron schedules of triggers, parsed the one way Flint reads them (seconds field optional).

use croner::{
    Cron,
    parser::{CronParser, Seconds},
};

/// Parses a schedule; the error says what is wrong with it.
pub fn parse(schedule: &str) -> Result<Cron, String> {
    CronParser::builder().seconds(Seconds::Optional).build().parse(schedule).map_err(|e| e.to_string())
}
