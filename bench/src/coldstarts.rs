//! `coldstarts`: idle policies compared on a synthetic trace, driven through the autoscaler's
//! own decision code (`State::decide`, the code the gateway runs) on a simulated clock: no
//! sleeping, two weeks of a thousand functions in about a minute.
//!
//! The trace (seeded, and labelled synthetic in every output) is shaped on the published
//! characterisation of Azure Functions (Shahrad et al., USENIX ATC 2020): 45% of functions are
//! called at most once an hour, 36% at most once a minute, the rest more often; each follows
//! one pattern: a timer (periodic, 2% jitter), Poisson, bursts (2–10 calls seconds apart), or
//! diurnal (Poisson whose rate follows the day, none at night). Calls last a log-normal time
//! (median 300 ms).
//!
//! Per policy: the share of calls that were cold starts (over all calls, and for the function
//! at the 75th percentile of cold-start share) and wasted replica-hours (a replica up with no
//! call in flight). A call is cold when it finds no replica ready: none, or one started less
//! than `COLD` before. The trade-off curve (fixed idle times) with the learned policy as
//! points goes to `target/bench/coldstarts.svg`.

use std::time::Duration;

use flint_api::ScheduledMin;
use flint_gateway::autoscale::{
    algorithm::{Bounds, Observation, Params, State},
    idle::Settings,
    schedule::Schedule,
};
use tokio::time::Instant;

/// How long a replica takes from the scale call to ready.
const COLD: f64 = 1.0;
/// The simulated autoscaler's tick. Idle decisions are minute-scale; a 10 s tick keeps the
/// run short while every decision still passes through `decide`.
const TICK: f64 = 10.0;

/// One function's trace: calls (arrival, duration) in seconds from the start, sorted.
struct Trace {
    calls: Vec<(f64, f64)>,
    /// A timer's period and first firing (whole seconds): its schedule is known to its author
    /// (for scheduled minimums).
    period: Option<(u32, u32)>,
}

/// Where the simulated clock starts on the wall clock, for the schedules' cron: a Monday.
const EPOCH: &str = "2026-01-05T00:00:00Z";

/// What a timer's author writes: one replica from a minute before each firing for two
/// minutes, `scale.schedule: [{cron, min: 1, for: 2m}]` (timers of 10 minutes or more).
fn author_schedule(period: u32, first: u32) -> Vec<ScheduledMin> {
    if period < 600 {
        return Vec::new();
    }
    let start = (first as i64 - 60).rem_euclid(period as i64) as u32;
    let (sec, min, hour) = (start % 60, start / 60 % 60, start / 3600);
    let cron = match period {
        p if p < 3600 => format!("{sec} {}-59/{} * * * *", start / 60, p / 60),
        3600 => format!("{sec} {min} * * * *"),
        p if p < 86_400 => format!("{sec} {min} {hour}-23/{} * * *", p / 3600),
        _ => format!("{sec} {min} {hour} * * *"),
    };
    vec![ScheduledMin { cron, min: 1, lasting: "2m".parse().unwrap(), time_zone: None }]
}

#[derive(Clone, Copy)]
enum Pattern {
    Timer,
    Poisson,
    Bursts,
    Diurnal,
}

fn trace(rng: &mut fastrand::Rng, seconds: f64) -> Trace {
    // Mean time between calls, log-uniform within the function's class.
    let class = rng.f64();
    let (lo, hi): (f64, f64) = if class < 0.45 {
        (3600.0, 86_400.0)
    } else if class < 0.81 {
        (60.0, 3600.0)
    } else {
        (1.0, 60.0)
    };
    let mean: f64 = lo.ln() + rng.f64() * (hi.ln() - lo.ln());
    let mean = mean.exp();
    let pattern = match rng.f64() {
        p if p < 0.25 => Pattern::Timer,
        p if p < 0.60 => Pattern::Poisson,
        p if p < 0.80 => Pattern::Bursts,
        _ => Pattern::Diurnal,
    };
    let exp = |rng: &mut fastrand::Rng, mean: f64| -mean * (1.0 - rng.f64()).ln();
    let duration = |rng: &mut fastrand::Rng| {
        // Log-normal, median 0.3 s, sigma 1 (Box-Muller), at most a minute.
        let z = (-2.0 * (1.0 - rng.f64()).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
        (0.3 * z.exp()).min(60.0)
    };
    let mut calls = Vec::new();
    let mut period = None;
    match pattern {
        Pattern::Timer => {
            // Timers fire on round periods: a minute, 5, 10, 15, 30 minutes, hours.
            let p = [60u32, 300, 600, 900, 1800, 3600, 7200, 21_600, 86_400]
                .into_iter()
                .min_by(|a, b| (*a as f64 - mean).abs().total_cmp(&(*b as f64 - mean).abs()))
                .unwrap();
            let first = rng.u32(..p);
            period = Some((p, first));
            let (p, mut t) = (p as f64, first as f64);
            while t < seconds {
                calls.push((t + rng.f64() * 0.02 * p, duration(rng)));
                t += p;
            }
        }
        Pattern::Poisson => {
            let mut t = exp(rng, mean);
            while t < seconds {
                calls.push((t, duration(rng)));
                t += exp(rng, mean);
            }
        }
        Pattern::Bursts => {
            let size = 2 + rng.usize(..9);
            let mut t = exp(rng, mean * size as f64);
            while t < seconds {
                let mut at = t;
                for _ in 0..size {
                    calls.push((at, duration(rng)));
                    at += 1.0 + rng.f64() * 4.0;
                }
                t += exp(rng, mean * size as f64);
            }
        }
        Pattern::Diurnal => {
            // Thinning: rate 2/mean at the day's peak, following sin over the day, 0 at night.
            let phase = rng.f64() * 86_400.0;
            let mut t = exp(rng, mean / 2.0);
            while t < seconds {
                let day = ((t + phase) / 86_400.0 * std::f64::consts::TAU).sin();
                if rng.f64() < day.max(0.0) {
                    calls.push((t, duration(rng)));
                }
                t += exp(rng, mean / 2.0);
            }
        }
    }
    calls.sort_by(|a, b| a.0.total_cmp(&b.0));
    calls.retain(|c| c.0 < seconds);
    Trace { calls, period }
}

#[derive(Clone, Copy, Debug)]
enum Policy {
    Fixed(Duration),
    Learned { cv_threshold: f64, scheduled: bool },
}

impl Policy {
    fn label(&self) -> String {
        match self {
            Policy::Fixed(d) => format!("fixed {} min", d.as_secs() / 60),
            Policy::Learned { cv_threshold, scheduled: false } => format!("learned (CV ≥ {cv_threshold})"),
            Policy::Learned { cv_threshold, scheduled: true } => {
                format!("learned (CV ≥ {cv_threshold}) + scheduled")
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Outcome {
    calls: u64,
    cold: u64,
    wasted: f64,
}

/// One function under one policy: every tick through `State::decide`, replicas as it decides
/// (ready `COLD` later), a call at zero scaling to one itself as the gateway does.
fn simulate(trace: &Trace, policy: Policy, seconds: f64) -> Outcome {
    let params = Params::default();
    let start = Instant::now();
    let at = |s: f64| start + Duration::from_secs_f64(s);
    let (zero_after, learned) = match policy {
        Policy::Fixed(d) => (d, None),
        Policy::Learned { cv_threshold, .. } => {
            (Duration::from_secs(300), Some(Settings { cv_threshold, ..Settings::default() }))
        }
    };
    let schedule = match (policy, trace.period) {
        (Policy::Learned { scheduled: true, .. }, Some((p, first))) => author_schedule(p, first),
        _ => Vec::new(),
    };
    let schedule = Schedule::new(&schedule);
    let epoch: chrono::DateTime<chrono::Utc> = EPOCH.parse().unwrap();
    let wall = |s: f64| epoch + chrono::Duration::milliseconds((s * 1000.0) as i64);
    // The schedule's minimum, and until when it stays so (worked out again only then).
    let mut scheduled = (0u32, if schedule.is_for(&[]) { f64::INFINITY } else { 0.0 });
    let mut state = State::new(start);
    let mut out = Outcome::default();
    let mut replicas = 0u32;
    let mut ready_at = 0.0f64;
    let mut next = 0usize;
    // Calls not yet over: (start, end).
    let mut running: Vec<(f64, f64)> = Vec::new();
    let mut t = 0.0;
    while t < seconds {
        let end = t + TICK;
        // Replica-seconds over the tick, less the time calls kept them busy.
        let mut up = replicas as f64 * TICK;
        let mut arrived = 0u32;
        while next < trace.calls.len() && trace.calls[next].0 < end {
            let (a, d) = trace.calls[next];
            next += 1;
            arrived += 1;
            out.calls += 1;
            if replicas == 0 {
                replicas = 1;
                ready_at = a + COLD;
                up += end - a;
                out.cold += 1;
            } else if a < ready_at {
                out.cold += 1;
            }
            let begins = a.max(ready_at);
            running.push((begins, begins + d));
        }
        let busy: f64 = running.iter().map(|&(s, e)| (e.min(end) - s.max(t)).max(0.0)).sum();
        running.retain(|&(_, e)| e > end);
        out.wasted += (up - busy).max(0.0);
        let in_flight = running.len() as f64;
        if end >= scheduled.1 {
            let now = wall(end);
            let since = |t: chrono::DateTime<chrono::Utc>| (t - epoch).num_milliseconds() as f64 / 1000.0;
            scheduled = match schedule.in_effect(now) {
                Some(e) => (e.min, since(e.until)),
                None => (0, schedule.next(now).map_or(f64::INFINITY, |n| since(n.at))),
            };
        }
        let bounds = Bounds { min: 0, max: 20, target: 10.0, zero_after, learned, scheduled: scheduled.0 };
        let o = Observation {
            now: at(end),
            value: Some(in_flight),
            arrivals: arrived as f64 / TICK,
            in_flight,
            waiting: 0,
            replicas,
            ready: replicas,
        };
        let desired = state.decide(&params, bounds, o).desired;
        if replicas == 0 && desired > 0 {
            ready_at = end + COLD;
        }
        replicas = desired;
        t = end;
    }
    out
}

struct Row {
    label: String,
    all: f64,
    p75: f64,
    wasted_hours: f64,
}

pub fn run(functions: usize, days: u64, seed: u64) {
    let seconds = days as f64 * 86_400.0;
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let mut policies: Vec<Policy> =
        [1, 2, 5, 10, 15, 20, 30, 60, 120].into_iter().map(|m| Policy::Fixed(minutes(m))).collect();
    for cv_threshold in [0.5, 2.0, 5.0] {
        policies.push(Policy::Learned { cv_threshold, scheduled: false });
    }
    policies.push(Policy::Learned { cv_threshold: 5.0, scheduled: true });
    let started = std::time::Instant::now();
    // Each function under every policy, on two threads; per policy, per function.
    let results: Vec<Vec<Outcome>> = {
        let per_thread = functions.div_ceil(2);
        let policies = &policies;
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|k| {
                    s.spawn(move || {
                        let mut rows = Vec::new();
                        for f in (k * per_thread)..((k + 1) * per_thread).min(functions) {
                            let mut rng =
                                fastrand::Rng::with_seed(seed ^ (f as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                            let trace = trace(&mut rng, seconds);
                            rows.push(policies.iter().map(|p| simulate(&trace, *p, seconds)).collect::<Vec<_>>());
                        }
                        rows
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        })
    };
    let calls: u64 = results.iter().map(|r| r[0].calls).sum();
    println!(
        "# cold starts against idle replicas: SYNTHETIC trace (seed {seed}), {functions} functions over {days} days, \
         {calls} calls; the autoscaler's decision code every {TICK} s of simulated time; {:.0} s to run",
        started.elapsed().as_secs_f64()
    );
    let rows: Vec<Row> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let outcomes: Vec<Outcome> = results.iter().map(|r| r[i]).collect();
            let (cold, total) = outcomes.iter().fold((0, 0), |(c, n), o| (c + o.cold, n + o.calls));
            let mut shares: Vec<f64> =
                outcomes.iter().filter(|o| o.calls > 0).map(|o| o.cold as f64 / o.calls as f64).collect();
            shares.sort_by(f64::total_cmp);
            let p75 = shares.get(shares.len() * 3 / 4).copied().unwrap_or(0.0);
            Row {
                label: p.label(),
                all: cold as f64 / total.max(1) as f64,
                p75,
                wasted_hours: outcomes.iter().map(|o| o.wasted).sum::<f64>() / 3600.0,
            }
        })
        .collect();
    println!("{:<34} {:>12} {:>14} {:>16}", "policy", "cold, all", "cold, p75 fn", "wasted replica-h");
    for r in &rows {
        println!("{:<34} {:>11.2}% {:>13.1}% {:>16.0}", r.label, r.all * 100.0, r.p75 * 100.0, r.wasted_hours);
    }
    let ten = rows.iter().find(|r| r.label == "fixed 10 min").unwrap();
    for r in rows.iter().filter(|r| r.label.starts_with("learned")) {
        println!(
            "{} against fixed 10 min: cold starts at the p75 function {:+.1} points, wasted replica-hours {:+.0}% ({})",
            r.label,
            (r.p75 - ten.p75) * 100.0,
            (r.wasted_hours / ten.wasted_hours - 1.0) * 100.0,
            if r.p75 < ten.p75 && r.wasted_hours < ten.wasted_hours { "better on both" } else { "not better on both" }
        );
    }
    let path = flint_testkit::workspace().join("target/bench/coldstarts.svg");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, svg(&rows, seed, functions, days)).unwrap();
    println!("trade-off curve: {}", path.display());
}

/// Wasted replica-hours (x) against the p75 function's cold-start share (y): the fixed idle
/// times as a line, the learned policies as points.
fn svg(rows: &[Row], seed: u64, functions: usize, days: u64) -> String {
    let (w, h, m) = (720.0, 480.0, 70.0);
    let max_x = rows.iter().map(|r| r.wasted_hours).fold(0.0, f64::max) * 1.05;
    let max_y = rows.iter().map(|r| r.p75 * 100.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let x = |v: f64| m + v / max_x * (w - 2.0 * m);
    let y = |v: f64| h - m - v / max_y * (h - 2.0 * m);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{m}\" y=\"24\" font-size=\"14\">Cold starts vs idle replicas — SYNTHETIC trace (seed {seed}, {functions} functions, {days} days)</text>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">wasted replica-hours</text>\n\
         <text x=\"18\" y=\"{}\" transform=\"rotate(-90 18 {})\" text-anchor=\"middle\">cold starts, 75th-percentile function (%)</text>\n",
        h - m,
        w - m,
        h - m,
        h - m,
        w / 2.0,
        h - 20.0,
        h / 2.0,
        h / 2.0
    );
    let fixed: Vec<&Row> = rows.iter().filter(|r| r.label.starts_with("fixed")).collect();
    let points: Vec<String> =
        fixed.iter().map(|r| format!("{:.1},{:.1}", x(r.wasted_hours), y(r.p75 * 100.0))).collect();
    out.push_str(&format!("<polyline fill=\"none\" stroke=\"#888\" points=\"{}\"/>\n", points.join(" ")));
    for (i, r) in rows.iter().enumerate() {
        let (cx, cy) = (x(r.wasted_hours), y(r.p75 * 100.0));
        // Fixed idle times labelled below the line, alternately lower; learned ones above it.
        let (colour, dy) = if r.label.starts_with("fixed") {
            ("#888", if i % 2 == 0 { 16.0 } else { 30.0 })
        } else {
            ("#c0392b", -8.0 - 14.0 * (i % 2) as f64)
        };
        out.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>\n",
            cx + 6.0,
            cy + dy,
            r.label.replace('≥', "&#8805;")
        ));
    }
    for i in 0..=4 {
        let (vx, vy) = (max_x * i as f64 / 4.0, max_y * i as f64 / 4.0);
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{vx:.0}</text><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{vy:.1}</text>\n",
            x(vx),
            h - m + 16.0,
            m - 6.0,
            y(vy) + 4.0
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window a timer's author writes opens a minute before each firing, for every period.
    #[test]
    fn an_authors_schedule_holds_a_replica_around_each_firing_of_the_timer() {
        let epoch: chrono::DateTime<chrono::Utc> = EPOCH.parse().unwrap();
        for (period, first) in
            [(600u32, 30u32), (900, 899), (1800, 0), (3600, 1234), (7200, 100), (21_600, 20_000), (86_400, 30)]
        {
            let s = author_schedule(period, first);
            for k in 1..4u32 {
                let firing = epoch + chrono::Duration::seconds((first + k * period) as i64);
                let held = |at: chrono::DateTime<chrono::Utc>| Schedule::new(&s).in_effect(at).map_or(0, |e| e.min);
                let secs = chrono::Duration::seconds;
                assert_eq!(held(firing - secs(61)), 0, "{period}/{first}: before the window");
                assert_eq!(held(firing - secs(59)), 1, "{period}/{first}: a minute before firing {k}");
                assert_eq!(held(firing + secs(59)), 1, "{period}/{first}: a minute after firing {k}");
                assert_eq!(held(firing + secs(61)), 0, "{period}/{first}: after the window");
            }
        }
        assert!(author_schedule(300, 10).is_empty(), "a replica is kept warm between firings of short timers anyway");
    }
}
