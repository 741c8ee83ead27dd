//! When an idle function version goes to zero, and when a replica comes back ahead of its next
//! call: the hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC
//! 2020), Azure Functions' production policy.
//!
//! Each version learns its idle times (from the end of its last call to the next arrival) into
//! a histogram of 1-minute bins over 4 hours, plus a count of longer gaps (~1 KB). From it:
//! - *pre-warm* = the 5th percentile less 10%: how long after its last call the version may sit
//!   at zero before the next call: the replica is brought back that long after the call, less
//!   the time its start takes (measured by the autoscaler's state: the paper's minutes dwarf a
//!   start, a shrunk `--idle-bin` does not);
//! - *keep-alive* = the 99th percentile plus 10%: until when after its last call a replica is
//!   kept (pre-warmed, or still up from the call).
//!
//! A busy version's gaps all fall in the first bin: pre-warm 0, it is simply kept warm for the
//! keep-alive. When too few gaps are known, or the histogram is flat (a coefficient of
//! variation of its bin counts under a threshold: the paper's test, whose threshold it does not
//! publish), the version keeps the fixed `zeroAfter`; when most gaps are beyond 4 hours and
//! the last of them agree (a daily job), the next gap is forecast as their median and the
//! windows are set ±15% around it; long gaps that do not agree keep the fixed `zeroAfter`.

use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize};

/// Width of a bin: a minute, as in the paper (tests and demos shrink it to see the policy at
/// work in seconds: `--idle-bin`).
pub const BIN: Duration = Duration::from_secs(60);
/// Bins: 4 hours of 1-minute bins.
pub const BINS: usize = 240;
/// Long gaps remembered for the forecast.
const RECENT_LONG: usize = 8;
/// Largest coefficient of variation of the last long gaps for which the next one is forecast.
const FORECAST_SPREAD: f64 = 0.2;

/// Coefficient of variation of `values`.
fn spread(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt() / mean
}

/// A version's idle times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleTimes {
    /// Width of a bin, in milliseconds.
    pub bin_ms: u64,
    /// Gaps per bin (bin `i`: `i` to `i+1` bin widths); empty until the first gap, so that
    /// a version that learned nothing takes no room (ten thousand functions, a kilobyte each).
    pub bins: Vec<u32>,
    /// Gaps of 4 hours or more.
    pub longer: u32,
    /// The last gaps of 4 hours or more, in bins, oldest first.
    pub recent_long: VecDeque<u32>,
}

impl Default for IdleTimes {
    fn default() -> Self {
        IdleTimes::with_bin(BIN)
    }
}

impl IdleTimes {
    pub fn with_bin(bin: Duration) -> Self {
        IdleTimes { bin_ms: bin.as_millis().max(1) as u64, bins: Vec::new(), longer: 0, recent_long: VecDeque::new() }
    }

    pub fn bin(&self) -> Duration {
        Duration::from_millis(self.bin_ms)
    }

    pub fn record(&mut self, gap: Duration) {
        let minutes = (gap.as_millis() / self.bin_ms as u128) as usize;
        if minutes < BINS {
            let count = &mut self.bins_mut()[minutes];
            *count = count.saturating_add(1);
        } else {
            self.longer = self.longer.saturating_add(1);
            if self.recent_long.len() == RECENT_LONG {
                self.recent_long.pop_front();
            }
            self.recent_long.push_back(minutes.min(u32::MAX as usize) as u32);
        }
    }

    /// The bins, made on first use.
    pub fn bins_mut(&mut self) -> &mut [u32] {
        if self.bins.is_empty() {
            self.bins = vec![0; BINS];
        }
        &mut self.bins
    }

    pub fn count(&self) -> u64 {
        self.bins.iter().map(|&b| b as u64).sum::<u64>() + self.longer as u64
    }

    /// The bin below which a share `q` of the in-bounds gaps fall.
    fn percentile_bin(&self, q: f64) -> Option<usize> {
        let total: u64 = self.bins.iter().map(|&b| b as u64).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.bins.iter().position(|&b| {
            seen += b as u64;
            seen >= rank
        })
    }

    /// Coefficient of variation of the bin counts: high for a histogram with clear peaks,
    /// low for a flat one (which says nothing about when the next call comes).
    pub fn cv(&self) -> f64 {
        spread(&self.bins.iter().map(|&b| b as f64).collect::<Vec<_>>())
    }
}

/// The policy's settings (the spec's `scale.idle`, with defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Gaps needed before the histogram is trusted.
    pub min_samples: u64,
    /// Below this coefficient of variation, the histogram is not representative.
    pub cv_threshold: f64,
    /// Longest a replica is kept up in one window (keep-alive less pre-warm).
    pub max_keep_alive: Duration,
    /// Width of a histogram bin.
    pub bin: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { min_samples: 10, cv_threshold: 5.0, max_keep_alive: Duration::from_secs(4 * 3600), bin: BIN }
    }
}

/// What the policy decided for a version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// To zero after this long without a call; no pre-warm.
    Fixed { after: Duration },
    /// To zero after a call ends; one replica from `pre_warm` until `keep_alive` after it (from
    /// the call's end on when `pre_warm` is zero).
    Learned { pre_warm: Duration, keep_alive: Duration, basis: Basis },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    Histogram,
    Forecast,
}

/// What a quiet version should have, `idle_for` after its last call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Keep what it has (at zero, stay there).
    Hold,
    Zero,
    /// One replica, ready for the predicted call.
    Warm,
}

impl Plan {
    pub fn decide(times: &IdleTimes, s: &Settings, zero_after: Duration) -> Plan {
        let fixed = Plan::Fixed { after: zero_after };
        let n = times.count();
        if n < s.min_samples {
            return fixed;
        }
        if times.longer as u64 * 2 > n {
            // A forecast only when the last long gaps agree (a timer, a daily job): random
            // long gaps would keep a replica up for hours around a guess.
            let mut long: Vec<f64> = times.recent_long.iter().map(|&m| m as f64).collect();
            if long.len() < 3 || spread(&long) > FORECAST_SPREAD {
                return fixed;
            }
            long.sort_by(f64::total_cmp);
            let next = times.bin().mul_f64(long[long.len() / 2]);
            return Plan::learned(next.mul_f64(0.85), next.mul_f64(1.15), Basis::Forecast, s);
        }
        if times.cv() < s.cv_threshold {
            return fixed;
        }
        let (Some(head), Some(tail)) = (times.percentile_bin(0.05), times.percentile_bin(0.99)) else {
            return fixed;
        };
        let bin = times.bin();
        Plan::learned(bin.mul_f64(head as f64 * 0.9), bin.mul_f64((tail + 1) as f64 * 1.1), Basis::Histogram, s)
    }

    fn learned(pre_warm: Duration, keep_alive: Duration, basis: Basis, s: &Settings) -> Plan {
        Plan::Learned { pre_warm, keep_alive: keep_alive.min(pre_warm + s.max_keep_alive), basis }
    }

    /// `lead`: how long a replica takes to be ready, by which the pre-warm comes early.
    pub fn want(&self, idle_for: Duration, lead: Duration) -> Want {
        match *self {
            Plan::Fixed { after } if idle_for >= after => Want::Zero,
            Plan::Fixed { .. } => Want::Hold,
            Plan::Learned { pre_warm, keep_alive, .. }
                if idle_for >= pre_warm.saturating_sub(lead) && idle_for < keep_alive =>
            {
                Want::Warm
            }
            Plan::Learned { .. } => Want::Zero,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    fn learned(times: &IdleTimes) -> (Duration, Duration) {
        match Plan::decide(times, &Settings::default(), minutes(5)) {
            Plan::Learned { pre_warm, keep_alive, .. } => (pre_warm, keep_alive),
            other => panic!("not learned: {other:?}"),
        }
    }

    #[test]
    fn a_timer_every_twenty_minutes_sleeps_between_calls_and_wakes_before_the_next() {
        let mut t = IdleTimes::default();
        for i in 0..30 {
            t.record(minutes(20) + Duration::from_secs(i % 50));
        }
        let (pre_warm, keep_alive) = learned(&t);
        assert_eq!(pre_warm, minutes(18));
        assert_eq!(keep_alive, minutes(21).mul_f64(1.1));
        let plan = Plan::decide(&t, &Settings::default(), minutes(5));
        assert_eq!(plan.want(minutes(1), Duration::ZERO), Want::Zero);
        assert_eq!(plan.want(minutes(17), Duration::ZERO), Want::Zero);
        assert_eq!(plan.want(minutes(19), Duration::ZERO), Want::Warm);
        assert_eq!(plan.want(minutes(24), Duration::ZERO), Want::Zero);
        // A replica that takes two minutes to start is brought back two minutes earlier, and
        // kept no longer.
        assert_eq!(plan.want(minutes(16), minutes(2)), Want::Warm);
        assert_eq!(plan.want(minutes(15), minutes(2)), Want::Zero);
        assert_eq!(plan.want(minutes(24), minutes(2)), Want::Zero);
    }

    #[test]
    fn a_busy_function_is_kept_warm_and_never_waits_at_zero() {
        let mut t = IdleTimes::default();
        for _ in 0..500 {
            t.record(Duration::from_secs(3));
        }
        t.record(minutes(7));
        let (pre_warm, keep_alive) = learned(&t);
        assert_eq!(pre_warm, Duration::ZERO);
        assert_eq!(keep_alive, minutes(1).mul_f64(1.1));
    }

    #[test]
    fn too_few_or_scattered_gaps_keep_the_fixed_idle_time() {
        let fixed = Plan::Fixed { after: minutes(5) };
        let mut t = IdleTimes::default();
        for m in 0..5 {
            t.record(minutes(m * 7));
        }
        assert_eq!(Plan::decide(&t, &Settings::default(), minutes(5)), fixed, "5 gaps are too few");
        let mut flat = IdleTimes::default();
        for m in 0..BINS as u64 {
            flat.record(minutes(m));
        }
        assert!(flat.cv() < 0.01);
        assert_eq!(Plan::decide(&flat, &Settings::default(), minutes(5)), fixed, "a flat histogram");
        assert_eq!(fixed.want(minutes(4), minutes(2)), Want::Hold);
        assert_eq!(fixed.want(minutes(5), Duration::ZERO), Want::Zero);
    }

    #[test]
    fn gaps_beyond_four_hours_are_forecast_from_the_last_long_ones() {
        let mut t = IdleTimes::default();
        for _ in 0..12 {
            t.record(minutes(24 * 60));
        }
        t.record(minutes(2));
        match Plan::decide(&t, &Settings::default(), minutes(5)) {
            Plan::Learned { pre_warm, keep_alive, basis } => {
                assert_eq!(basis, Basis::Forecast);
                assert_eq!(pre_warm, minutes(24 * 60).mul_f64(0.85));
                // The window (±15%) bounded by the longest a replica may be kept.
                assert_eq!(keep_alive, pre_warm + Settings::default().max_keep_alive);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.recent_long.len(), RECENT_LONG);
        // Long gaps at random say nothing about the next one.
        let mut random = IdleTimes::default();
        for h in [5, 19, 7, 40, 11, 26, 6, 15, 9, 33, 12] {
            random.record(minutes(h * 60));
        }
        assert_eq!(Plan::decide(&random, &Settings::default(), minutes(5)), Plan::Fixed { after: minutes(5) });
    }

    #[test]
    fn the_histogram_takes_no_room_until_its_first_gap_then_about_a_kilobyte() {
        let mut t = IdleTimes::default();
        assert!(t.bins.is_empty());
        t.record(minutes(3));
        assert_eq!((t.bins.len(), t.bins[3], t.count()), (BINS, 1, 1));
        assert!(t.bins.len() * 4 + RECENT_LONG * 4 + 4 + 8 <= 1024);
    }
}
