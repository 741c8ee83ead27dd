//! What each function did over the last ten minutes, second by second, for the portal's
//! charts: answers by status class, latency percentiles and cold starts (recorded as each
//! invocation ends), replicas desired and actual per version and the canary's weight (recorded
//! by the autoscaler at each tick), the autoscaler's and the canary analysis' decisions as
//! events, and each version's idle policy (`autoscale::view`). In memory, as the gateway
//! replica that serves the portal saw them.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::autoscale::view::IdleView;

/// Seconds kept.
pub const KEPT: u64 = 600;
/// Latencies kept per second for its percentiles: a sample of them when there are more.
const SAMPLES: usize = 256;
const EVENTS: usize = 200;

#[derive(Default)]
pub struct History(RwLock<HashMap<String, Arc<Recent>>>);

/// One function's recent seconds and events.
#[derive(Default)]
pub struct Recent(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    seconds: VecDeque<Second>,
    events: VecDeque<Event>,
    /// Per version slot: its idle policy and schedule, as the autoscaler last saw them.
    idle: [Option<IdleView>; 2],
    /// The replica counts and weight last recorded, kept only when they change: a second per
    /// tick for every function was ~60 KB per function over the ten minutes kept, 600 MB for
    /// 10,000 idle ones. Those of seconds already dropped start the charts.
    last: Counts,
    dropped: Counts,
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Counts {
    desired: [Option<u32>; 2],
    actual: [Option<u32>; 2],
    weight: Option<u32>,
}

impl Counts {
    /// These counts with what `s` recorded on top.
    fn then(mut self, s: &Second) -> Counts {
        for v in 0..2 {
            self.desired[v] = s.desired[v].or(self.desired[v]);
            self.actual[v] = s.actual[v].or(self.actual[v]);
        }
        self.weight = s.weight.or(self.weight);
        self
    }
}

#[derive(Clone, Default)]
struct Second {
    at: u64,
    ok: u32,
    client_errors: u32,
    server_errors: u32,
    cold_starts: u32,
    /// Milliseconds; a sample of at most `SAMPLES`, and how many there were.
    took: Vec<f32>,
    seen: u32,
    /// Stable and canary.
    desired: [Option<u32>; 2],
    actual: [Option<u32>; 2],
    weight: Option<u32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    /// `scaling` or `canary`.
    pub kind: &'static str,
    pub text: String,
}

/// Version slot: 0 stable, 1 canary.
pub type Slot = usize;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl History {
    /// The handle of `function` (`name.namespace`), made on first use.
    pub fn of(&self, function: &str) -> Arc<Recent> {
        if let Some(r) = self.0.read().unwrap().get(function) {
            return r.clone();
        }
        self.0.write().unwrap().entry(function.to_string()).or_default().clone()
    }

    /// What is known of `function`, if anything.
    pub fn get(&self, function: &str) -> Option<Arc<Recent>> {
        self.0.read().unwrap().get(function).cloned()
    }

    /// Forgets every function `deployed` says is gone; how many it forgot.
    pub fn retain(&self, deployed: impl Fn(&str) -> bool) -> usize {
        let mut all = self.0.write().unwrap();
        let before = all.len();
        all.retain(|function, _| deployed(function));
        before - all.len()
    }

    /// The functions with a history.
    pub fn functions(&self) -> Vec<String> {
        self.0.read().unwrap().keys().cloned().collect()
    }

    /// Functions with a history.
    pub fn len(&self) -> usize {
        self.0.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Recent {
    fn second(inner: &mut Inner, at: u64) -> &mut Second {
        if inner.seconds.back().is_none_or(|s| s.at < at) {
            inner.seconds.push_back(Second { at, ..Default::default() });
            while inner.seconds.front().is_some_and(|s| s.at + KEPT <= at) {
                let gone = inner.seconds.pop_front().expect("just seen");
                inner.dropped = inner.dropped.then(&gone);
            }
        }
        // A late record (the clock's second turned while it waited) counts in the last second.
        inner.seconds.back_mut().expect("just pushed")
    }

    /// An invocation ended with `code` after `took`.
    pub fn answered(&self, code: u16, took: Duration, cold_start: bool) {
        let mut inner = self.0.lock().unwrap();
        let s = Self::second(&mut inner, now());
        match code {
            500.. => s.server_errors += 1,
            400..500 => s.client_errors += 1,
            _ => s.ok += 1,
        }
        s.cold_starts += cold_start as u32;
        s.seen += 1;
        let ms = took.as_secs_f32() * 1000.0;
        if s.took.len() < SAMPLES {
            s.took.push(ms);
        } else {
            // Reservoir sampling: every latency of the second equally likely to be kept.
            let i = fastrand::usize(..s.seen as usize);
            if i < SAMPLES {
                s.took[i] = ms;
            }
        }
    }

    /// The autoscaler's view of one version at this tick (recorded only if it changed).
    pub fn replicas(&self, slot: Slot, desired: u32, actual: u32) {
        self.record(|c| {
            c.desired[slot] = Some(desired);
            c.actual[slot] = Some(actual);
        });
    }

    pub fn canary_weight(&self, weight: u32) {
        self.record(|c| c.weight = Some(weight));
    }

    fn record(&self, change: impl FnOnce(&mut Counts)) {
        let mut inner = self.0.lock().unwrap();
        let mut counts = inner.last;
        change(&mut counts);
        if counts == inner.last {
            return;
        }
        inner.last = counts;
        let s = Self::second(&mut inner, now());
        (s.desired, s.actual, s.weight) = (counts.desired, counts.actual, counts.weight);
    }

    pub fn idle(&self, slot: Slot, view: IdleView) {
        self.0.lock().unwrap().idle[slot] = Some(view);
    }

    pub fn event(&self, kind: &'static str, text: String) {
        let mut inner = self.0.lock().unwrap();
        if inner.events.len() == EVENTS {
            inner.events.pop_front();
        }
        inner.events.push_back(Event { at: now(), kind, text });
    }

    /// The last `KEPT` seconds (or since the first record), one entry per second, empty seconds
    /// included, as columns.
    pub fn series(&self) -> Series {
        self.series_at(now())
    }

    fn series_at(&self, end: u64) -> Series {
        let inner = self.0.lock().unwrap();
        // From the first thing known (a new function's chart is not ten minutes of nothing).
        let first = inner.seconds.front().map(|s| s.at).into_iter().chain(inner.events.front().map(|e| e.at)).min();
        let start = end.saturating_sub(KEPT - 1).max(first.unwrap_or(end).min(end));
        let mut out = Series::default();
        // Replica counts hold until they change, from before the chart's first second too.
        let mut counts = inner.seconds.iter().take_while(|s| s.at < start).fold(inner.dropped, Counts::then);
        let mut seconds = inner.seconds.iter().filter(|s| s.at >= start).peekable();
        for at in start..=end {
            let s = match seconds.peek() {
                Some(s) if s.at == at => seconds.next().cloned().unwrap_or_default(),
                _ => Second::default(),
            };
            counts = counts.then(&s);
            let Counts { desired, actual, weight } = counts;
            let (p50, p99) = percentiles(s.took);
            out.t.push(at);
            out.ok.push(s.ok);
            out.client_errors.push(s.client_errors);
            out.server_errors.push(s.server_errors);
            out.cold_starts.push(s.cold_starts);
            out.p50_ms.push(p50);
            out.p99_ms.push(p99);
            out.desired_stable.push(desired[0]);
            out.actual_stable.push(actual[0]);
            out.desired_canary.push(desired[1]);
            out.actual_canary.push(actual[1]);
            out.canary_weight.push(weight);
        }
        out.events = inner.events.iter().filter(|e| e.at >= start).cloned().collect();
        out.idle = inner.idle.clone();
        out
    }

    /// Answers over the last `secs` seconds: (requests, error share in %, p99 ms).
    pub fn summary(&self, secs: u64) -> (u64, f64, Option<f32>) {
        let inner = self.0.lock().unwrap();
        let since = now().saturating_sub(secs);
        let (mut n, mut errors, mut took) = (0u64, 0u64, Vec::new());
        for s in inner.seconds.iter().filter(|s| s.at > since) {
            n += (s.ok + s.client_errors + s.server_errors) as u64;
            errors += s.server_errors as u64;
            took.extend_from_slice(&s.took);
        }
        let share = if n == 0 { 0.0 } else { errors as f64 * 100.0 / n as f64 };
        (n, share, percentiles(took).1)
    }
}

fn percentiles(mut took: Vec<f32>) -> (Option<f32>, Option<f32>) {
    if took.is_empty() {
        return (None, None);
    }
    took.sort_by(f32::total_cmp);
    let at = |p: f32| took[((took.len() as f32 * p).ceil() as usize).clamp(1, took.len()) - 1];
    (Some(at(0.5)), Some(at(0.99)))
}

/// Columns of one entry per second, for the portal's charts.
#[derive(Default, Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub t: Vec<u64>,
    pub ok: Vec<u32>,
    pub client_errors: Vec<u32>,
    pub server_errors: Vec<u32>,
    pub cold_starts: Vec<u32>,
    pub p50_ms: Vec<Option<f32>>,
    pub p99_ms: Vec<Option<f32>>,
    pub desired_stable: Vec<Option<u32>>,
    pub actual_stable: Vec<Option<u32>>,
    pub desired_canary: Vec<Option<u32>>,
    pub actual_canary: Vec<Option<u32>>,
    pub canary_weight: Vec<Option<u32>>,
    pub events: Vec<Event>,
    /// Stable and canary: the idle policy's windows and histogram and the scheduled minimums
    /// (for versions that have either).
    pub idle: [Option<IdleView>; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_of_functions_no_longer_deployed_is_forgotten() {
        let h = History::default();
        for f in ["a.default", "b.default", "c.other"] {
            h.of(f).answered(200, Duration::from_millis(3), false);
        }
        assert_eq!(h.retain(|f| f != "b.default"), 1);
        assert_eq!(h.len(), 2);
        assert!(h.get("b.default").is_none() && h.get("a.default").is_some());
    }

    #[test]
    fn answers_count_by_class_and_give_percentiles() {
        let r = Recent::default();
        for ms in 1..=100 {
            r.answered(200, Duration::from_millis(ms), false);
        }
        r.answered(404, Duration::from_millis(1), false);
        r.answered(503, Duration::from_millis(1), true);
        let s = r.series();
        assert!(s.t.len() <= 2, "from the first record: {:?}", s.t);
        // The clock may have turned a second while recording.
        let sum = |v: &[u32]| v.iter().sum::<u32>();
        assert_eq!((sum(&s.ok), sum(&s.client_errors), sum(&s.server_errors), sum(&s.cold_starts)), (100, 1, 1, 1));
        let (n, errors, p99) = r.summary(60);
        assert_eq!(n, 102);
        assert!((errors - 100.0 / 102.0).abs() < 1e-9, "{errors}");
        assert_eq!(p99, Some(99.0));
    }

    #[test]
    fn the_sample_of_a_busy_second_stays_bounded() {
        let r = Recent::default();
        for _ in 0..10_000 {
            r.answered(200, Duration::from_millis(5), false);
        }
        let inner = r.0.lock().unwrap();
        assert!(inner.seconds.iter().all(|s| s.took.len() <= SAMPLES));
        assert_eq!(inner.seconds.iter().map(|s| s.seen).sum::<u32>(), 10_000);
    }

    #[test]
    fn replica_counts_hold_between_ticks_and_old_seconds_go() {
        let r = Recent::default();
        {
            let mut inner = r.0.lock().unwrap();
            Recent::second(&mut inner, 1_000).desired = [Some(3), None];
            Recent::second(&mut inner, 1_000).actual = [Some(1), None];
            Recent::second(&mut inner, 1_005).actual = [Some(3), None];
            Recent::second(&mut inner, 1_000 + KEPT + 10).ok = 1;
            assert_eq!(inner.seconds.len(), 1, "seconds older than {KEPT}s are dropped");
        }
        let r = Recent::default();
        {
            let mut inner = r.0.lock().unwrap();
            Recent::second(&mut inner, 1_000).desired = [Some(3), None];
            Recent::second(&mut inner, 1_000).actual = [Some(1), None];
            Recent::second(&mut inner, 1_005).actual = [Some(3), None];
        }
        let s = r.series_at(1_010);
        let at = |t: u64| s.t.iter().position(|x| *x == t).unwrap();
        assert_eq!((s.t[0], s.t.len()), (1_000, 11), "from the first record to the end");
        assert_eq!(s.actual_stable[at(1_000)], Some(1));
        assert_eq!((s.desired_stable[at(1_003)], s.actual_stable[at(1_003)]), (Some(3), Some(1)));
        assert_eq!((s.desired_stable[at(1_010)], s.actual_stable[at(1_010)]), (Some(3), Some(3)));
    }

    #[test]
    fn unchanged_counts_take_no_second_and_outlive_the_seconds_kept() {
        let r = Recent::default();
        for _ in 0..5 {
            r.replicas(0, 0, 0);
            // As if the tick had been a second earlier.
            r.0.lock().unwrap().seconds.iter_mut().for_each(|s| s.at -= 1);
        }
        assert_eq!(r.0.lock().unwrap().seconds.len(), 1, "one record for five ticks of the same counts");
        let recorded = r.0.lock().unwrap().seconds[0].at;
        // Much later, a call: the second with the counts is dropped, the counts still hold.
        {
            let mut inner = r.0.lock().unwrap();
            Recent::second(&mut inner, recorded + 2 * KEPT).ok = 1;
            assert_eq!(inner.seconds.len(), 1);
        }
        let s = r.series_at(recorded + 2 * KEPT);
        assert_eq!((s.t.len(), s.desired_stable[0], s.actual_stable[0]), (1, Some(0), Some(0)));
        r.replicas(0, 1, 0);
        assert_eq!(r.0.lock().unwrap().seconds.back().unwrap().desired[0], Some(1), "a change is recorded");
    }
}
