//! What the portal shows of a version's idle policy and scheduled minimums: the windows the
//! policy decided and what they come from, the histogram they were read from, when the next
//! replica is brought up ahead of a call, and the schedule's current and next windows.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    algorithm::{Bounds, State},
    idle::{Basis, Plan},
    schedule::Schedule,
};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleView {
    /// `fixed` or `learned`.
    pub policy: &'static str,
    /// Where the windows come from: `fixed` (`zeroAfter`: too few spells, or a histogram
    /// that says nothing), `histogram`, or `forecast` (most spells longer than the histogram).
    pub basis: &'static str,
    pub zero_after_s: f64,
    /// With `histogram` or `forecast`: how long after its last call a replica comes back, and
    /// until when after it one is kept.
    pub pre_warm_s: Option<f64>,
    pub keep_alive_s: Option<f64>,
    /// Quiet spells learned; the histogram (spells per bin, up to the last non-empty bin), the
    /// bin width, and the spells longer than every bin.
    pub spells: u64,
    pub bin_s: f64,
    pub bins: Vec<u32>,
    pub longer: u32,
    /// Unix seconds: the last call seen, and the window a replica is kept up ahead of and
    /// around the next call it predicts.
    pub last_call: Option<i64>,
    pub warm_from: Option<i64>,
    pub warm_until: Option<i64>,
    /// The scheduled minimum holding now, and the next window to start.
    pub scheduled: Option<Scheduled>,
    pub next_scheduled: Option<Scheduled>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scheduled {
    pub min: u32,
    /// Unix seconds: the end of the window holding now, or the start of the next.
    pub at: i64,
}

impl IdleView {
    pub fn new(state: &mut State, bounds: &Bounds, schedule: &Schedule, wall: DateTime<Utc>) -> Self {
        let plan = state.plan(bounds);
        let times = &state.idle_times;
        let last_call =
            state.since_last_call().map(|ago| (wall - chrono::Duration::from_std(ago).unwrap_or_default()).timestamp());
        let (basis, window) = match plan {
            Plan::Fixed { .. } => ("fixed", None),
            Plan::Learned { pre_warm, keep_alive, basis } => {
                (if basis == Basis::Histogram { "histogram" } else { "forecast" }, Some((pre_warm, keep_alive)))
            }
        };
        let at = |after: std::time::Duration| last_call.map(|c| c + after.as_secs() as i64);
        let used = times.bins.iter().rposition(|&b| b > 0).map_or(0, |i| i + 1);
        IdleView {
            policy: if bounds.learned.is_some() { "learned" } else { "fixed" },
            basis,
            zero_after_s: bounds.zero_after.as_secs_f64(),
            pre_warm_s: window.map(|(p, _)| p.as_secs_f64()),
            keep_alive_s: window.map(|(_, k)| k.as_secs_f64()),
            spells: times.count(),
            bin_s: times.bin().as_secs_f64(),
            bins: times.bins[..used].to_vec(),
            longer: times.longer,
            last_call,
            warm_from: window.and_then(|(p, _)| at(p)),
            warm_until: window.and_then(|(_, k)| at(k)),
            scheduled: schedule.in_effect(wall).map(|e| Scheduled { min: e.min, at: e.until.timestamp() }),
            next_scheduled: schedule.next(wall).map(|n| Scheduled { min: n.min, at: n.at.timestamp() }),
        }
    }
}
