//! The scaling decision, as pure code over observations (tested on synthetic series).
//!
//! Desired replicas = ceil(observed / target per replica), averaged over a stable window
//! (slow, smooth) and a short panic window (fast). When the panic window asks for at least
//! `panic_threshold` times the ready replicas, the version panics for a stable window: it
//! scales up at once and never scales down meanwhile. Scale-down waits until lower counts have
//! been asked for during the whole `scale_down_delay`; scale-up is bounded per decision.
//! A version with `min: 0` goes to zero after `zeroAfter` without any request, never while a
//! request is in flight or waiting. Idleness is judged from arrivals over the source's window
//! (not from what is in flight at the tick, which a trickle of short calls never shows), and a
//! rise in replicas this autoscaler did not cause (set by hand, or another gateway scaled from
//! zero for requests waiting there) counts as activity too, and is held for the scale-down
//! delay. Without data it keeps its count. With the learned idle policy (`idle`), each quiet
//! spell's length is learned when the next call comes, and the plan it gives says when to go
//! to zero and when to bring one replica back ahead of the next call. A scheduled minimum
//! (`scheduled`) is a floor over all of this, for as long as its window holds. A replica that
//! the pre-warm or a schedule alone kept up, and that was ready when the next call came, is a
//! cold start avoided: decisions say so (`warmed`), for the counters.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use super::idle::{self, IdleTimes, Plan, Want};

#[derive(Clone, Debug)]
pub struct Params {
    pub stable_window: Duration,
    pub panic_window: Duration,
    pub panic_threshold: f64,
    pub scale_down_delay: Duration,
    /// At most this many times the current replicas (at least +1) per decision.
    pub max_scale_up: f64,
    /// The learned idle policy's test of a representative histogram, and its bin width.
    pub idle_cv_threshold: f64,
    pub idle_bin: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_down_delay: Duration::from_secs(30),
            max_scale_up: 10.0,
            idle_cv_threshold: idle::Settings::default().cv_threshold,
            idle_bin: idle::BIN,
        }
    }
}

/// A version's bounds, from its spec.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    pub target: f64,
    pub zero_after: Duration,
    /// The learned idle policy's settings; `None`: the fixed `zeroAfter`.
    pub learned: Option<idle::Settings>,
    /// The scheduled minimum in effect now (`scale.schedule`), 0 outside every window.
    pub scheduled: u32,
}

/// What was seen at one tick.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub now: Instant,
    /// The metric the version scales on (concurrency or rps); `None`: no data this tick.
    pub value: Option<f64>,
    /// Requests per second that arrived over the source's window: any is activity.
    pub arrivals: f64,
    /// Requests in flight now and requests waiting for a replica now.
    pub in_flight: f64,
    pub waiting: usize,
    pub replicas: u32,
    pub ready: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Steady,
    ScaleUp,
    ScaleDown,
    Panic,
    ToZero,
    PreWarm,
    Scheduled,
    NoData,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Steady,
        Reason::ScaleUp,
        Reason::ScaleDown,
        Reason::Panic,
        Reason::ToZero,
        Reason::PreWarm,
        Reason::Scheduled,
        Reason::NoData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Steady => "steady",
            Reason::ScaleUp => "scale_up",
            Reason::ScaleDown => "scale_down",
            Reason::Panic => "panic",
            Reason::ToZero => "to_zero",
            Reason::PreWarm => "pre_warm",
            Reason::Scheduled => "scheduled",
            Reason::NoData => "no_data",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub reason: Reason,
    pub stable_avg: f64,
    pub panic_avg: f64,
    /// What became of a replica that only the pre-warm or a schedule kept up, if that is
    /// known now.
    pub warmed: Option<Warmed>,
}

/// What became of a replica the pre-warm or a scheduled minimum kept up while nothing called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmed {
    /// The next call came while it was up; `ready`: it was ready at the tick before the call
    /// (a cold start avoided), else the call still waited for it (a shorter one).
    Used { by: Reason, ready: bool },
    /// A pre-warmed replica went to zero without a call.
    Unused,
}

/// One version's history.
pub struct State {
    samples: VecDeque<(Instant, f64)>,
    recommendations: VecDeque<(Instant, u32)>,
    panic_until: Option<Instant>,
    last_active: Instant,
    /// Replicas at the last tick.
    last_replicas: Option<u32>,
    /// A count this autoscaler asked for that its view of the replicas does not show yet, and
    /// since when.
    pending: Option<(u32, Instant)>,
    /// Its idle times; the last tick that saw a call, and whether a quiet one came after it.
    pub idle_times: IdleTimes,
    last_call: Option<Instant>,
    quiet_after_call: bool,
    /// The plan from `idle_times` under these settings, until either changes.
    plan: Option<(idle::Settings, Plan)>,
    /// Why replicas are up while nothing calls: `PreWarm` or `Scheduled` (none when they are up
    /// for calls); and the ready replicas at the last tick.
    held_by: Option<Reason>,
    last_ready: u32,
    /// Since when replicas have been wanted and none is ready; and how long a start takes here
    /// (the slowest recent one, easing towards faster ones), which a pre-warm must lead by.
    starting_since: Option<Instant>,
    start_up: Duration,
}

/// How long a scale write of its own may take to show in the autoscaler's view. Until then a
/// view still showing the old count is taken as not updated yet (nothing is asked again); after
/// it, as someone else's count (another gateway scaled from zero for a request of its own),
/// which counts as activity. Re-asking sooner could undo another gateway's scale-up that
/// landed right after this one's write, before this view had shown either.
const OWN_WRITE_GRACE: Duration = Duration::from_secs(2);

impl State {
    pub fn new(now: Instant) -> Self {
        State {
            samples: VecDeque::new(),
            recommendations: VecDeque::new(),
            panic_until: None,
            last_active: now,
            last_replicas: None,
            pending: None,
            idle_times: IdleTimes::default(),
            last_call: None,
            quiet_after_call: false,
            plan: None,
            held_by: None,
            last_ready: 0,
            starting_since: None,
            start_up: Duration::ZERO,
        }
    }

    /// A state that starts from idle times learned before (kept across restarts).
    pub fn with_idle_times(now: Instant, idle_times: IdleTimes) -> Self {
        State { idle_times, ..State::new(now) }
    }

    /// Whether this state holds nothing a fresh one would not: at zero, quiet for a whole
    /// window, with nothing pending, recommended, panicking, held or learned. The autoscaler
    /// keeps no state for such a version until it is called again.
    pub fn at_rest(&self, now: Instant) -> bool {
        self.last_replicas == Some(0)
            && self.samples.is_empty()
            && self.recommendations.is_empty()
            && self.pending.is_none()
            && self.panic_until.is_none_or(|until| now >= until)
            && self.held_by.is_none()
            && self.last_call.is_none()
            && self.idle_times.count() == 0
    }

    /// How long ago the last call was seen (learned policy only).
    pub fn since_last_call(&self) -> Option<Duration> {
        self.last_call.map(|c| Instant::now().saturating_duration_since(c))
    }

    /// The plan for this version's quiet spells.
    pub fn plan(&mut self, b: &Bounds) -> Plan {
        match b.learned {
            None => Plan::Fixed { after: b.zero_after },
            Some(settings) => match self.plan {
                Some((made_for, plan)) if made_for == settings => plan,
                _ => {
                    let plan = Plan::decide(&self.idle_times, &settings, b.zero_after);
                    self.plan = Some((settings, plan));
                    plan
                }
            },
        }
    }

    pub fn decide(&mut self, p: &Params, b: Bounds, o: Observation) -> Decision {
        let called = o.value.is_some_and(|v| v > 0.0 || o.arrivals > 0.0 || o.in_flight > 0.0 || o.waiting > 0);
        let warmed = match self.held_by {
            Some(by) if called => {
                self.held_by = None;
                Some(Warmed::Used { by, ready: self.last_ready > 0 })
            }
            _ => None,
        };
        self.last_ready = o.ready;
        let mut decision = self.decide_counted(p, b, o, called);
        decision.warmed = decision.warmed.or(warmed);
        self.time_start_up(o, decision.desired);
        decision
    }

    /// Times each start, from the tick that first wants a replica with none ready to the tick
    /// that sees one ready: a pre-warm's own, or a call's cold start. Tick to tick, so a tick's
    /// delay in deciding is part of the lead.
    fn time_start_up(&mut self, o: Observation, desired: u32) {
        if o.ready > 0 {
            if let Some(since) = self.starting_since.take() {
                let took = o.now.duration_since(since);
                self.start_up = took.max((self.start_up + took) / 2);
            }
        } else if desired == 0 {
            self.starting_since = None;
        } else if self.starting_since.is_none() {
            self.starting_since = Some(o.now);
        }
    }

    fn decide_counted(&mut self, p: &Params, b: Bounds, o: Observation, called: bool) -> Decision {
        self.note_calls(&b, &o, called);
        // Whose count is this? A count this autoscaler did not ask for is someone else's (another
        // gateway scaled from zero for its own request), and counts as activity.
        let previous = self.last_replicas.replace(o.replicas);
        let unchanged = previous == Some(o.replicas);
        match self.pending {
            Some((asked, _)) if o.replicas == asked => self.pending = None,
            Some((_, since)) if unchanged && o.now.duration_since(since) < OWN_WRITE_GRACE => {
                // Its own write, not seen yet: nothing is asked again.
                return Decision {
                    desired: o.replicas,
                    reason: Reason::Steady,
                    stable_avg: f64::NAN,
                    panic_avg: f64::NAN,
                    warmed: None,
                };
            }
            Some(_) => {
                self.pending = None;
                self.someone_elses(o);
            }
            None if previous.is_some_and(|r| o.replicas > r) => self.someone_elses(o),
            // First sight (a new Function, a gateway that just started or took the Lease): the
            // count was not this autoscaler's choice either, and may have been set by hand
            // before it was ever seen. It is held for the scale-down delay, not cut at once;
            // it is not activity, so an idle function still goes to zero after `zeroAfter`.
            None if previous.is_none() => self.recommendations.push_back((o.now, o.replicas)),
            None => {}
        }
        let decision = self.decide_now(p, b, o);
        let decision = self.hold_scheduled(b, o, decision);
        if decision.desired != o.replicas {
            self.pending = Some((decision.desired, o.now));
        }
        decision
    }

    /// The scheduled minimum, a floor over the load's and the idle policy's decision; and who
    /// keeps replicas up while nothing calls.
    fn hold_scheduled(&mut self, b: Bounds, o: Observation, mut d: Decision) -> Decision {
        let wanted = d.desired;
        if d.reason != Reason::NoData && b.scheduled > wanted {
            d.desired = b.scheduled.min(b.max).max(wanted);
            d.reason = match d.desired.cmp(&o.replicas) {
                std::cmp::Ordering::Greater => Reason::Scheduled,
                std::cmp::Ordering::Equal => Reason::Steady,
                std::cmp::Ordering::Less => Reason::ScaleDown,
            };
        }
        if d.desired == 0 {
            if o.replicas > 0 && self.held_by == Some(Reason::PreWarm) {
                d.warmed = Some(Warmed::Unused);
            }
            self.held_by = None;
        } else if wanted == 0 {
            self.held_by = Some(Reason::Scheduled);
        } else if d.reason == Reason::PreWarm {
            self.held_by = Some(Reason::PreWarm);
        }
        d
    }

    /// Learns the length of each quiet spell, from the last tick that saw a call to the next
    /// one (whatever else this tick decides: a call seen while a write of its own is pending
    /// is still a call).
    fn note_calls(&mut self, b: &Bounds, o: &Observation, called: bool) {
        // Learned only for the policy that uses it (a kilobyte per version, and its writes).
        // Without data, nothing is known about calls: no spell begins or ends.
        let (Some(settings), Some(_)) = (b.learned, o.value) else {
            return;
        };
        if !called {
            self.quiet_after_call = self.last_call.is_some();
            return;
        }
        if let (Some(last), true) = (self.last_call, self.quiet_after_call) {
            // In the bins now asked for.
            if self.idle_times.bin() != settings.bin {
                self.idle_times = IdleTimes::with_bin(settings.bin);
            }
            self.idle_times.record(o.now.duration_since(last));
            self.plan = None;
        }
        self.last_call = Some(o.now);
        self.quiet_after_call = false;
    }

    /// A count this autoscaler did not ask for: set by hand (`/system/scale-function`,
    /// `kubectl scale`) or by another gateway's scale from zero. It counts as activity and is
    /// held as if recommended now, so it is lowered only after the scale-down delay (and taken
    /// to zero only after `zeroAfter` without requests).
    fn someone_elses(&mut self, o: Observation) {
        self.last_active = o.now;
        self.recommendations.push_back((o.now, o.replicas));
    }

    fn decide_now(&mut self, p: &Params, b: Bounds, o: Observation) -> Decision {
        let current = o.replicas;
        let Some(value) = o.value else {
            return Decision {
                desired: current,
                reason: Reason::NoData,
                stable_avg: f64::NAN,
                panic_avg: f64::NAN,
                warmed: None,
            };
        };
        let now = o.now;
        let quiet = value == 0.0 && o.arrivals == 0.0 && o.in_flight == 0.0 && o.waiting == 0;
        if quiet && current == 0 && self.samples.iter().all(|(_, v)| *v == 0.0) {
            // At zero and quiet for a whole window: a window of zeros says no more than none,
            // and at ten thousand functions those zeros were most of the autoscaler's memory.
            // The next window starts at the next call, as Knative's averages start at their
            // first value.
            self.samples = VecDeque::new();
        } else {
            self.samples.push_back((now, value));
            while self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > p.stable_window) {
                self.samples.pop_front();
            }
        }
        // Only the scale-down delay's recommendations count; older ones go even while nothing
        // is recommended (at zero), and an empty list gives its room back.
        while self.recommendations.front().is_some_and(|(t, _)| now.duration_since(*t) > p.scale_down_delay) {
            self.recommendations.pop_front();
        }
        if self.recommendations.is_empty() {
            self.recommendations.shrink_to_fit();
        }
        let avg = |window: Duration| {
            let in_window: Vec<f64> =
                self.samples.iter().filter(|(t, _)| now.duration_since(*t) <= window).map(|(_, v)| *v).collect();
            in_window.iter().sum::<f64>() / in_window.len().max(1) as f64
        };
        let (stable_avg, panic_avg) = (avg(p.stable_window), avg(p.panic_window));
        let want = |avg: f64| (avg / b.target).ceil().max(0.0) as u32;
        let (want_stable, want_panic) = (want(stable_avg), want(panic_avg));

        if want_panic > 0 && want_panic as f64 >= p.panic_threshold * o.ready.max(1) as f64 {
            self.panic_until = Some(now + p.stable_window);
        }
        let panicking = self.panic_until.is_some_and(|until| now < until);
        if !quiet {
            self.last_active = now;
        }
        let idle_for = now.duration_since(self.last_active);
        let want = if quiet && !panicking && b.min == 0 {
            let plan = self.plan(&b);
            let since = match plan {
                Plan::Fixed { .. } => idle_for,
                // Learned windows run from the last call, whoever scaled since.
                Plan::Learned { .. } => self.last_call.map_or(idle_for, |c| now.duration_since(c)),
            };
            // The pre-warm comes a start-up early, so that the call finds the replica ready.
            plan.want(since, self.start_up)
        } else {
            Want::Hold
        };

        let mut desired = if panicking { want_panic.max(want_stable).max(current) } else { want_stable };
        let mut reason = if panicking && desired > current { Reason::Panic } else { Reason::Steady };
        let stay_at_zero = quiet && !panicking && b.min == 0 && current == 0 && want == Want::Hold;
        if want == Want::Warm && current == 0 {
            // Ahead of the call the plan expects, so that it finds a replica ready.
            desired = 1;
            reason = Reason::PreWarm;
        } else if want == Want::Zero || stay_at_zero {
            // At zero and nobody asking: stay there (a request scales from zero itself).
            desired = 0;
            if current > 0 {
                reason = Reason::ToZero;
            }
        } else {
            // Recently used: keep a replica until zeroAfter says otherwise.
            desired = desired.max(1);
            // Scale down only to the highest count asked for during the whole delay.
            self.recommendations.push_back((now, desired));
            if desired < current {
                desired = self.recommendations.iter().map(|(_, d)| *d).max().unwrap_or(desired).min(current);
            }
            if current > 0 {
                let limit = ((current as f64 * p.max_scale_up).ceil() as u32).max(current + 1);
                desired = desired.min(limit);
            }
        }
        desired = desired.clamp(b.min, b.max);
        if reason == Reason::Steady {
            reason = match desired.cmp(&current) {
                std::cmp::Ordering::Greater => Reason::ScaleUp,
                std::cmp::Ordering::Less => Reason::ScaleDown,
                std::cmp::Ordering::Equal => Reason::Steady,
            };
        }
        Decision { desired, reason, stable_avg, panic_avg, warmed: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds =
        Bounds { min: 0, max: 20, target: 10.0, zero_after: Duration::from_secs(30), learned: None, scheduled: 0 };

    fn params() -> Params {
        Params {
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_down_delay: Duration::from_secs(30),
            max_scale_up: 10.0,
            ..Params::default()
        }
    }

    /// Feeds `value` every second for `secs`, tracking replicas as if each decision applied at
    /// once and replicas were ready at once; returns the decisions.
    fn feed(
        s: &mut State,
        p: &Params,
        b: Bounds,
        from: Instant,
        secs: u64,
        value: f64,
        replicas: &mut u32,
    ) -> Vec<Decision> {
        tick(s, p, b, from, 0..secs, |_| value, replicas).into_iter().map(|(_, d)| d).collect()
    }

    /// What a tick `t` seconds in sees: `v` in flight (arrived, and the metric), and the replicas.
    fn calls(start: Instant, t: u64, v: f64, replicas: u32, ready: u32) -> Observation {
        Observation {
            now: start + Duration::from_secs(t),
            value: Some(v),
            arrivals: v,
            in_flight: v,
            waiting: 0,
            replicas,
            ready,
        }
    }

    /// One observation a second at each of `seconds` after `start`, `value(t)` of them all;
    /// replicas follow each decision (ready at once). The decisions, by second.
    fn tick(
        s: &mut State,
        p: &Params,
        b: Bounds,
        start: Instant,
        seconds: std::ops::Range<u64>,
        value: impl Fn(u64) -> f64,
        replicas: &mut u32,
    ) -> Vec<(u64, Decision)> {
        seconds
            .map(|t| {
                let d = s.decide(p, b, calls(start, t, value(t), *replicas, *replicas));
                *replicas = d.desired;
                (t, d)
            })
            .collect()
    }

    #[test]
    fn a_steady_load_settles_at_ceil_load_over_target() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 1);
        feed(&mut s, &p, B, start + Duration::from_secs(0), 120, 45.0, &mut r);
        assert_eq!(r, 5);
    }

    #[test]
    fn a_burst_panics_and_scales_up_within_seconds() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 1);
        feed(&mut s, &p, B, start + Duration::from_secs(0), 60, 5.0, &mut r);
        assert_eq!(r, 1);
        let burst = feed(&mut s, &p, B, start + Duration::from_secs(60), 7, 150.0, &mut r);
        assert_eq!(burst[0].reason, Reason::Panic, "{burst:?}");
        assert!(burst[0].desired > 1, "the first second of the burst scales up: {burst:?}");
        assert_eq!(r, 15, "once the panic window is full of the burst: 150/10");
    }

    #[test]
    fn scale_up_per_decision_is_bounded() {
        let start = Instant::now();
        let p = Params { max_scale_up: 2.0, ..params() };
        let (mut s, mut r) = (State::new(start), 1);
        let first = feed(&mut s, &p, B, start + Duration::from_secs(0), 1, 200.0, &mut r);
        assert_eq!(first[0].desired, 2, "1 replica may become at most 2");
    }

    #[test]
    fn never_scales_down_while_panicking_and_waits_the_delay_after() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 1);
        feed(&mut s, &p, B, start + Duration::from_secs(0), 5, 100.0, &mut r);
        assert_eq!(r, 10);
        // Load drops: no scale-down during the panic (a stable window from the last trigger).
        let calm = feed(&mut s, &p, B, start + Duration::from_secs(5), 50, 10.0, &mut r);
        assert!(calm.iter().all(|d| d.desired >= 10), "scaled down while panicking");
        // After the panic and the scale-down delay, it comes down to ceil(10/10).
        feed(&mut s, &p, B, start + Duration::from_secs(55), 150, 10.0, &mut r);
        assert_eq!(r, 1);
    }

    #[test]
    fn idle_for_zero_after_goes_to_zero_but_never_with_work_in_flight() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 1);
        feed(&mut s, &p, B, start + Duration::from_secs(0), 10, 5.0, &mut r);
        let idle = feed(&mut s, &p, B, start + Duration::from_secs(10), 29, 0.0, &mut r);
        assert!(idle.iter().all(|d| d.desired == 1), "zero before zeroAfter");
        let o = Observation {
            now: start + Duration::from_secs(45),
            value: Some(0.0),
            arrivals: 0.0,
            in_flight: 0.0,
            waiting: 3,
            replicas: 1,
            ready: 1,
        };
        assert_eq!(s.decide(&p, B, o).desired, 1, "requests are waiting");
        let later = feed(&mut s, &p, B, start + Duration::from_secs(76), 2, 0.0, &mut r);
        assert_eq!(later[0].reason, Reason::ToZero, "{later:?}");
        assert_eq!(r, 0);
    }

    /// One tick of a trickle: nothing in flight at the tick, `arrivals` per second over the window.
    fn trickle(now: Instant, arrivals: f64, replicas: u32) -> Observation {
        Observation { now, value: Some(0.0), arrivals, in_flight: 0.0, waiting: 0, replicas, ready: replicas }
    }

    #[test]
    fn a_trickle_of_short_calls_keeps_its_replica() {
        // One 20 ms call every 2 s: never in flight at a tick, but arriving all along.
        let start = Instant::now();
        let (p, mut s) = (params(), State::new(start));
        let b = Bounds { zero_after: Duration::from_secs(4), ..B };
        for t in 0..60 {
            let d = s.decide(&p, b, trickle(start + Duration::from_secs(t), 0.5, 1));
            assert_eq!(d.desired, 1, "scaled to zero at {t}s under a trickle: {d:?}");
        }
        // When the calls stop (last seen at 59 s), it goes to zero zeroAfter later.
        let d: Vec<_> = (60..64).map(|t| s.decide(&p, b, trickle(start + Duration::from_secs(t), 0.0, 1))).collect();
        assert!(d[..3].iter().all(|d| d.desired == 1), "{d:?}");
        assert_eq!(d[3].reason, Reason::ToZero, "{d:?}");
    }

    #[test]
    fn a_scale_from_zero_made_elsewhere_counts_as_activity() {
        let start = Instant::now();
        let (p, mut s) = (params(), State::new(start));
        let b = Bounds { zero_after: Duration::from_secs(4), ..B };
        for t in 0..10 {
            s.decide(&p, b, trickle(start + Duration::from_secs(t), 0.0, 0));
        }
        // Another gateway scaled it to 1 for requests waiting there, which this one cannot see
        // yet: it must not take the replica away before zeroAfter.
        for t in 10..14 {
            let d = s.decide(&p, b, trickle(start + Duration::from_secs(t), 0.0, 1));
            assert_eq!(d.desired, 1, "undid another gateway's cold start at {t}s");
        }
        let d = s.decide(&p, b, trickle(start + Duration::from_secs(15), 0.0, 1));
        assert_eq!(d.reason, Reason::ToZero, "still idle after zeroAfter: {d:?}");
    }

    #[test]
    fn a_count_set_by_hand_is_held_for_the_scale_down_delay() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 1);
        let b = Bounds { zero_after: Duration::from_secs(300), ..B };
        feed(&mut s, &p, b, start, 60, 5.0, &mut r);
        assert_eq!(r, 1);
        // Scaled to 3 by hand; the load still asks for 1.
        r = 3;
        let held = feed(&mut s, &p, b, start + Duration::from_secs(60), 30, 5.0, &mut r);
        assert!(held.iter().all(|d| d.desired == 3), "lowered within the delay: {held:?}");
        let after = feed(&mut s, &p, b, start + Duration::from_secs(91), 2, 5.0, &mut r);
        assert_eq!(after[0].desired, 1, "held past the delay: {after:?}");
        // More load than the hand-set count still scales up at once.
        r = 3;
        let d = feed(&mut s, &p, b, start + Duration::from_secs(101), 8, 150.0, &mut r);
        assert!(d.last().unwrap().desired > 3, "{d:?}");
    }

    #[test]
    fn a_count_first_seen_above_what_the_load_asks_is_held_for_the_scale_down_delay() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 3);
        let b = Bounds { zero_after: Duration::from_secs(300), ..B };
        // Scaled to 3 by hand before this autoscaler ever saw the function.
        let held = feed(&mut s, &p, b, start, 30, 5.0, &mut r);
        assert!(held.iter().all(|d| d.desired == 3), "lowered within the delay: {held:?}");
        let after = feed(&mut s, &p, b, start + Duration::from_secs(31), 2, 5.0, &mut r);
        assert_eq!(after[0].desired, 1, "held past the delay: {after:?}");
    }

    #[test]
    fn its_own_scale_to_zero_not_yet_seen_is_not_asked_again_over_another_gateways_scale_up() {
        let start = Instant::now();
        let (p, mut s) = (params(), State::new(start));
        let b = Bounds { zero_after: Duration::from_secs(4), ..B };
        let at = |ms: u64| start + Duration::from_millis(ms);
        for t in 0..4 {
            s.decide(&p, b, trickle(at(t * 1000), 0.0, 1));
        }
        let d = s.decide(&p, b, trickle(at(4000), 0.0, 1));
        assert_eq!(d.reason, Reason::ToZero, "{d:?}");
        // Its view still shows 1: its own write not seen yet, or another gateway's scale-up
        // right after it. Either way, nothing is asked again.
        for ms in [4200, 4400, 5000, 5800] {
            let d = s.decide(&p, b, trickle(at(ms), 0.0, 1));
            assert_eq!(d.desired, 1, "asked again at {ms} ms: {d:?}");
        }
        // Past the grace it is someone else's count: activity, kept for zeroAfter.
        for ms in [6200, 8000, 10000] {
            let d = s.decide(&p, b, trickle(at(ms), 0.0, 1));
            assert_eq!(d.desired, 1, "undid another gateway's scale-up at {ms} ms: {d:?}");
        }
        let d = s.decide(&p, b, trickle(at(10400), 0.0, 1));
        assert_eq!(d.reason, Reason::ToZero, "idle for zeroAfter since: {d:?}");
        // Seen at zero, then at one: someone else's scale-up, at once.
        let mut s = State::new(start);
        for t in 0..4 {
            s.decide(&p, b, trickle(at(t * 1000), 0.0, 1));
        }
        assert_eq!(s.decide(&p, b, trickle(at(4000), 0.0, 1)).desired, 0);
        assert_eq!(s.decide(&p, b, trickle(at(4200), 0.0, 0)).desired, 0);
        let d = s.decide(&p, b, trickle(at(4400), 0.0, 1));
        assert_eq!(d.desired, 1, "undid a scale-up made elsewhere: {d:?}");
    }

    #[test]
    fn min_and_max_bound_every_decision() {
        let start = Instant::now();
        let b = Bounds { min: 2, max: 4, ..B };
        let (p, mut s, mut r) = (params(), State::new(start), 2);
        feed(&mut s, &p, b, start + Duration::from_secs(0), 10, 1000.0, &mut r);
        assert_eq!(r, 4);
        feed(&mut s, &p, b, start + Duration::from_secs(10), 300, 0.0, &mut r);
        assert_eq!(r, 2, "min holds even when idle");
    }

    #[test]
    fn at_zero_without_requests_it_stays_at_zero() {
        let start = Instant::now();
        let (p, mut s, mut r) = (params(), State::new(start), 0);
        let d = feed(&mut s, &p, B, start + Duration::from_secs(0), 5, 0.0, &mut r);
        assert!(d.iter().all(|d| d.desired == 0 && d.reason == Reason::Steady), "{d:?}");
        // Its first sight is held for the scale-down delay; then nothing is kept.
        assert!(!s.at_rest(start + Duration::from_secs(5)));
        feed(&mut s, &p, B, start + Duration::from_secs(5), 30, 0.0, &mut r);
        assert!(s.at_rest(start + Duration::from_secs(35)), "nothing kept of a quiet window at zero");
        assert_eq!(r, 0);
        feed(&mut s, &p, B, start + Duration::from_secs(35), 1, 12.0, &mut r);
        // The window starts at the first call, not with the zeros before it: 12 in flight at a
        // target of 10 is two replicas.
        assert_eq!(r, 2, "traffic at zero scales up");
        assert!(!s.at_rest(start + Duration::from_secs(36)));
    }

    /// A one-second call at each second `calls` says, from `from` to `to` (exclusive).
    fn run(
        (s, start): (&mut State, Instant),
        b: Bounds,
        (from, to): (u64, u64),
        calls: impl Fn(u64) -> bool,
        replicas: &mut u32,
    ) -> Vec<(u64, Decision)> {
        tick(s, &params(), b, start, from..to, |t| if calls(t) { 1.0 } else { 0.0 }, replicas)
    }

    #[test]
    fn a_scheduled_minimum_is_a_floor_for_its_window_and_a_call_in_it_is_a_cold_start_avoided() {
        let (start, mut r) = (Instant::now(), 0);
        let mut s = State::new(start);
        let b = Bounds { zero_after: Duration::from_secs(5), ..B };
        let held = Bounds { scheduled: 2, ..b };
        let quiet = run((&mut s, start), b, (0, 10), |_| false, &mut r);
        assert!(quiet.iter().all(|(_, d)| d.desired == 0), "{quiet:?}");
        let window = run((&mut s, start), held, (10, 40), |t| t == 30, &mut r);
        assert_eq!((window[0].1.desired, window[0].1.reason), (2, Reason::Scheduled), "{window:?}");
        assert!(window.iter().all(|(_, d)| d.desired == 2), "the window holds, quiet or not: {window:?}");
        let used: Vec<_> = window.iter().filter_map(|(t, d)| d.warmed.map(|w| (*t, w))).collect();
        assert_eq!(used, [(30, Warmed::Used { by: Reason::Scheduled, ready: true })]);
        // The window ends: the call at 30 s is 10 s old, past zeroAfter: straight to zero.
        let after = run((&mut s, start), b, (40, 42), |_| false, &mut r);
        assert_eq!((after[0].1.desired, after[0].1.reason), (0, Reason::ToZero), "{after:?}");
        // A minimum above `max` holds `max`; a load above the minimum is served as ever.
        let (start, mut r) = (Instant::now(), 0);
        let mut s = State::new(start);
        let capped = run((&mut s, start), Bounds { scheduled: 50, ..b }, (0, 3), |_| false, &mut r);
        assert_eq!(capped[0].1.desired, B.max);
    }

    #[test]
    fn a_learned_pre_warm_is_counted_used_when_its_call_comes_and_unused_when_none_does() {
        let (start, mut r) = (Instant::now(), 0);
        let mut s = State::new(start);
        let settings = idle::Settings { bin: Duration::from_secs(1), ..Default::default() };
        let b = Bounds { zero_after: Duration::from_secs(60), learned: Some(settings), ..B };
        // A call every 20 s: after ten spells the plan is to zero after each call and back 18 s
        // after it (the 5th percentile less 10%), until 23.1 s (the 99th plus 10%). Back a tick
        // early: the first call's start took a tick (from the tick wanting it to the next).
        let every_20 = |t: u64| t.is_multiple_of(20);
        let learning = run((&mut s, start), b, (0, 240), every_20, &mut r);
        assert!(learning.iter().all(|(_, d)| d.warmed != Some(Warmed::Unused)), "nothing pre-warmed before the plan");
        let learned = run((&mut s, start), b, (240, 400), every_20, &mut r);
        let pre_warms: Vec<u64> =
            learned.iter().filter(|(_, d)| d.reason == Reason::PreWarm).map(|(t, _)| *t).collect();
        assert_eq!(pre_warms, [257, 277, 297, 317, 337, 357, 377, 397], "{learned:?}");
        let used = learned.iter().filter(|(_, d)| d.warmed == Some(Warmed::Used { by: Reason::PreWarm, ready: true }));
        assert_eq!(used.count(), 8, "each call (240 s to 380 s) found its pre-warm ready");
        assert!(learned.iter().any(|(t, d)| *t == 385 && d.desired == 0), "at zero between calls: {learned:?}");
        // The calls stop: the last pre-warm (397 s) goes at 404 s, unused.
        let stopped = run((&mut s, start), b, (400, 420), |_| false, &mut r);
        let ends: Vec<_> = stopped.iter().filter(|(_, d)| d.warmed.is_some()).map(|(t, d)| (*t, d.warmed)).collect();
        assert_eq!(ends, [(404, Some(Warmed::Unused))], "{stopped:?}");
    }

    #[test]
    fn a_learned_pre_warm_leads_by_the_start_up_it_measured() {
        let (start, p) = (Instant::now(), params());
        let mut s = State::new(start);
        let settings = idle::Settings { bin: Duration::from_secs(1), ..Default::default() };
        let b = Bounds { zero_after: Duration::from_secs(60), learned: Some(settings), ..B };
        // A call every 20 s, as above; a replica is ready 3 s after it is first wanted (the
        // tick-perfect replicas above would hide a late pre-warm).
        let (mut replicas, mut wanted_since) = (0, None);
        let decisions: Vec<(u64, Decision)> = (0..400)
            .map(|t| {
                let v = if t % 20 == 0 { 1.0 } else { 0.0 };
                let ready = if wanted_since.is_some_and(|since| t - since >= 3) { replicas } else { 0 };
                let d = s.decide(&p, b, calls(start, t, v, replicas, ready));
                replicas = d.desired;
                wanted_since = if replicas == 0 { None } else { wanted_since.or(Some(t)) };
                (t, d)
            })
            .collect();
        // The first call's cold start took 3 s: each pre-warm comes 3 s before the plan's 18 s.
        let pre_warms: Vec<u64> =
            decisions.iter().filter(|(t, d)| *t >= 240 && d.reason == Reason::PreWarm).map(|(t, _)| *t).collect();
        assert_eq!(pre_warms, [255, 275, 295, 315, 335, 355, 375, 395], "{decisions:?}");
        let used: Vec<(u64, Warmed)> =
            decisions.iter().filter(|(t, _)| *t > 250).filter_map(|(t, d)| Some((*t, d.warmed?))).collect();
        let ready = Warmed::Used { by: Reason::PreWarm, ready: true };
        assert_eq!(used, (13..20).map(|k| (k * 20, ready)).collect::<Vec<_>>(), "each call found its replica ready");
    }

    #[test]
    fn without_data_the_count_stays() {
        let start = Instant::now();
        let (p, mut s) = (params(), State::new(start));
        let o = Observation {
            now: start + Duration::from_secs(600),
            value: None,
            arrivals: 0.0,
            in_flight: 0.0,
            waiting: 0,
            replicas: 3,
            ready: 3,
        };
        let d = s.decide(&p, B, o);
        assert_eq!((d.desired, d.reason), (3, Reason::NoData));
    }
}
