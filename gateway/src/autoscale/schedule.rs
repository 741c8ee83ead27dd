//! Scheduled minimums (`spec.scale.schedule`): from each time an entry's cron names, read in its
//! time zone, the version keeps at least `min` replicas for `for`. What is in effect is worked
//! out afresh from the wall clock at each tick (nothing to remember across restarts or Lease
//! handovers: a gateway that starts in the middle of a window holds it for the rest of it).

use chrono::{DateTime, Utc};
use flint_api::ScheduledMin;

/// The highest scheduled minimum holding at a time, and until when its window runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InEffect {
    pub min: u32,
    pub until: DateTime<Utc>,
}

/// When an entry's window starts next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    pub min: u32,
    pub at: DateTime<Utc>,
}

/// A version's schedule, parsed once (and again only when the spec changes): entries that do
/// not parse or never fire (refused at deploy, so only from a Function written before a rule
/// tightened) are left out, since searching for a time that never comes is slow.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    spec: Vec<ScheduledMin>,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
    lasting: chrono::Duration,
    min: u32,
}

impl Schedule {
    pub fn new(spec: &[ScheduledMin]) -> Self {
        let entries = spec
            .iter()
            .filter(|m| m.min > 0)
            .filter_map(|m| {
                let cron = flint_api::cron::parse(&m.cron).ok().filter(flint_api::cron::fires)?;
                let zone = flint_api::cron::time_zone(m.time_zone.as_deref()).ok()?;
                Some(Entry {
                    cron,
                    zone,
                    lasting: chrono::Duration::from_std(m.lasting.get()).ok()?,
                    min: m.min as u32,
                })
            })
            .collect();
        Schedule { spec: spec.to_vec(), entries }
    }

    /// Whether this was made from `spec`.
    pub fn is_for(&self, spec: &[ScheduledMin]) -> bool {
        self.spec == spec
    }

    /// The highest minimum in effect at `now`, if any.
    pub fn in_effect(&self, now: DateTime<Utc>) -> Option<InEffect> {
        self.entries
            .iter()
            .filter_map(|e| {
                let started =
                    e.cron.find_previous_occurrence(&now.with_timezone(&e.zone), true).ok()?.with_timezone(&Utc);
                let until = started + e.lasting;
                (now < until).then_some(InEffect { min: e.min, until })
            })
            .max_by_key(|e| (e.min, e.until))
    }

    /// The next window to start after `now`, if any.
    pub fn next(&self, now: DateTime<Utc>) -> Option<Next> {
        self.entries
            .iter()
            .filter_map(|e| {
                let at = e.cron.find_next_occurrence(&now.with_timezone(&e.zone), false).ok()?.with_timezone(&Utc);
                Some(Next { min: e.min, at })
            })
            .min_by_key(|n| n.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cron: &str, min: i32, lasting: &str, zone: Option<&str>) -> ScheduledMin {
        ScheduledMin { cron: cron.into(), min, lasting: lasting.parse().unwrap(), time_zone: zone.map(Into::into) }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_holds_from_its_start_for_its_length_and_not_outside() {
        let s = [entry("0 9 * * 1-5", 3, "8h", None)];
        // 2026-12-07 is a Monday.
        assert_eq!(Schedule::new(&s).in_effect(at("2026-12-07T08:59:59Z")), None);
        assert_eq!(
            Schedule::new(&s).in_effect(at("2026-12-07T09:00:00Z")),
            Some(InEffect { min: 3, until: at("2026-12-07T17:00:00Z") })
        );
        assert_eq!(Schedule::new(&s).in_effect(at("2026-12-07T16:59:59Z")).map(|e| e.min), Some(3));
        assert_eq!(Schedule::new(&s).in_effect(at("2026-12-07T17:00:00Z")), None);
        assert_eq!(Schedule::new(&s).in_effect(at("2026-12-12T10:00:00Z")), None, "Saturday");
        assert_eq!(
            Schedule::new(&s).next(at("2026-12-11T18:00:00Z")),
            Some(Next { min: 3, at: at("2026-12-14T09:00:00Z") })
        );
    }

    #[test]
    fn the_time_zone_and_its_daylight_saving_time_are_honoured() {
        let s = [entry("0 9 * * *", 1, "1h", Some("Europe/Berlin"))];
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            Schedule::new(&s).in_effect(at("2026-12-07T08:30:00Z")).map(|e| e.until),
            Some(at("2026-12-07T09:00:00Z"))
        );
        assert_eq!(
            Schedule::new(&s).in_effect(at("2026-07-07T07:30:00Z")).map(|e| e.until),
            Some(at("2026-07-07T08:00:00Z"))
        );
        assert_eq!(Schedule::new(&s).in_effect(at("2026-07-07T08:30:00Z")), None);
    }

    #[test]
    fn an_entry_that_never_fires_is_left_out_at_once() {
        let s = [entry("0 9 30 2 *", 5, "1h", None), entry("0 9 * * *", 1, "1h", None)];
        let s = Schedule::new(&s);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.in_effect(at("2026-12-07T09:30:00Z")).map(|e| e.min), Some(1));
        assert_eq!(s.next(at("2026-12-07T09:30:00Z")).map(|n| n.min), Some(1));
    }

    #[test]
    fn the_highest_minimum_holding_wins_and_windows_may_span_midnight() {
        let s = [
            entry("0 22 * * *", 1, "4h", None),
            entry("0 1 * * *", 4, "30m", None),
            entry("0 0 * * *", 0, "24h", None),
        ];
        assert_eq!(Schedule::new(&s).in_effect(at("2026-12-07T23:00:00Z")).map(|e| e.min), Some(1));
        assert_eq!(
            Schedule::new(&s).in_effect(at("2026-12-08T01:10:00Z")),
            Some(InEffect { min: 4, until: at("2026-12-08T01:30:00Z") })
        );
        assert_eq!(
            Schedule::new(&s).in_effect(at("2026-12-08T01:45:00Z")).map(|e| e.min),
            Some(1),
            "back to the first until 02:00"
        );
        assert_eq!(Schedule::new(&s).in_effect(at("2026-12-08T02:00:00Z")), None, "a minimum of 0 holds nothing");
        assert_eq!(Schedule::new(&s).next(at("2026-12-08T02:00:00Z")).map(|n| n.at), Some(at("2026-12-08T22:00:00Z")));
    }
}
