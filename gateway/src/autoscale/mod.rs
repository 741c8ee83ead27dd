//! The autoscaler: a loop that, every tick, reads each function version's request rate and
//! concurrency from a `source` (Prometheus, or the gateway's own counters), decides its
//! replicas with the `algorithm`, and sets them through the provider. Every decision is
//! visible: desired and actual replicas as metrics, a counter of changes by reason, and one log
//! line per change with its inputs.

pub mod algorithm;
pub mod idle;
pub mod remember;
pub mod schedule;
pub mod source;
pub mod view;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use flint_api::ScaleMetric;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::{
    algorithm::{Bounds, Observation, Params, Reason, State, Warmed},
    idle::IdleTimes,
    schedule::Schedule,
    source::{Key, Source},
    view::IdleView,
};
use crate::{
    invoke::Invoker,
    metrics::{AvoidedLabels, FunctionLabels, Metrics, ScalingLabels, VersionLabels},
    provider::{Provider, ScaleTarget, Version},
};

pub struct Autoscaler {
    pub provider: Arc<dyn Provider>,
    pub invoker: Arc<Invoker>,
    pub metrics: Arc<Metrics>,
    pub source: Box<dyn Source>,
    /// Where the canary analysis reads its numbers.
    pub canary_numbers: Box<dyn crate::canary::Numbers>,
    pub params: Params,
    pub tick: Duration,
}

/// How often at most a version's learned idle times are written where the provider keeps them
/// (the Function's status on Kubernetes: one write per version per half minute at most).
const REMEMBER_EVERY: Duration = Duration::from_secs(30);

/// A version's decision state, and how much of what it learned is kept.
struct Tracked {
    /// Where its learned idle times are kept.
    namespace: String,
    name: String,
    version: Version,
    state: State,
    /// Spells learned when last kept, and when.
    kept: (u64, Option<Instant>),
    /// Its image, its schedule, and what the portal was last shown of its idle policy.
    image: String,
    schedule: Schedule,
    shown: Option<IdleView>,
}

impl Tracked {
    fn new(t: &ScaleTarget, state: State) -> Self {
        Tracked {
            namespace: t.namespace().to_string(),
            name: t.name().to_string(),
            version: t.version,
            kept: (state.idle_times.count(), None),
            state,
            image: t.image().to_string(),
            schedule: Schedule::new(&t.scale().schedule),
            shown: None,
        }
    }
}

/// Writes a version's learned idle times where the provider keeps them.
async fn keep(
    provider: Arc<dyn Provider>,
    namespace: String,
    name: String,
    version: Version,
    image: String,
    idle: IdleTimes,
) {
    if let Err(e) = provider.remember_idle(&namespace, &name, version, &image, idle).await {
        tracing::warn!(function = %name, namespace = %namespace, error = %e, "could not keep the learned idle times");
    }
}

/// How long a stopping gateway waits to keep what its versions learned since their last write.
const KEEP_AT_STOP: Duration = Duration::from_secs(5);

/// Whether a version at zero may be left alone while nothing calls it: its decisions need no
/// memory of the past (no learned idle times, no schedule, no minimum).
fn may_rest(t: &ScaleTarget) -> bool {
    t.scale().min <= 0
        && t.scale().schedule.is_empty()
        && t.scale().idle.as_ref().is_none_or(|i| i.policy != flint_api::IdlePolicy::Learned)
}

fn quiet(s: source::Sample) -> bool {
    s.rps == 0.0 && s.in_flight == 0.0 && s.waiting == 0
}

impl Autoscaler {
    /// At stop (shutdown, or the Lease lost): what was learned since the last write is kept,
    /// so that the next holder starts from all of it.
    async fn keep_all(&self, states: &mut HashMap<Key, Tracked>) {
        let writes = states
            .drain()
            .map(|(_, t)| t)
            .filter(|t| t.state.idle_times.count() != t.kept.0)
            .map(|t| keep(self.provider.clone(), t.namespace, t.name, t.version, t.image, t.state.idle_times));
        let writes: Vec<_> = writes.collect();
        let n = writes.len();
        if n > 0 && tokio::time::timeout(KEEP_AT_STOP, futures::future::join_all(writes)).await.is_err() {
            tracing::warn!(versions = n, "stopping: not every version's idle times were kept in time");
        }
    }

    /// Counts what became of replicas kept up for calls that had not come yet.
    fn count_warmed(&self, key: &Key, version: Version, warmed: Option<Warmed>) {
        let labels = VersionLabels { function_name: key.0.clone(), version: version.as_str() };
        match warmed {
            None | Some(Warmed::Unused) => {}
            Some(Warmed::Used { by, ready }) => {
                if by == Reason::PreWarm {
                    self.metrics.pre_warms_used.get_or_create(&labels).inc();
                }
                if ready {
                    let labels =
                        AvoidedLabels { function_name: labels.function_name, version: labels.version, by: by.as_str() };
                    self.metrics.cold_starts_avoided.get_or_create(&labels).inc();
                }
            }
        }
    }

    /// What the portal shows of a version's idle policy and schedule, updated when it changes.
    fn show_idle(
        &self,
        key: &Key,
        t: &ScaleTarget,
        bounds: &Bounds,
        tracked: &mut Tracked,
        wall: chrono::DateTime<chrono::Utc>,
    ) {
        if bounds.learned.is_none() && t.scale().schedule.is_empty() {
            return;
        }
        if tracked.shown.is_none() {
            // Its counters start at zero rather than at their first event, so that dashboards
            // show "none yet" and not "no data".
            let labels = VersionLabels { function_name: key.0.clone(), version: key.1 };
            let avoided = |by| AvoidedLabels { function_name: key.0.clone(), version: key.1, by };
            if bounds.learned.is_some() {
                self.metrics.pre_warms.get_or_create(&labels).inc_by(0);
                self.metrics.pre_warms_used.get_or_create(&labels).inc_by(0);
                self.metrics.cold_starts_avoided.get_or_create(&avoided(Reason::PreWarm.as_str())).inc_by(0);
            }
            if !t.scale().schedule.is_empty() {
                self.metrics.cold_starts_avoided.get_or_create(&avoided(Reason::Scheduled.as_str())).inc_by(0);
            }
        }
        let view = IdleView::new(&mut tracked.state, bounds, &tracked.schedule, wall);
        if tracked.shown.as_ref() != Some(&view) {
            self.metrics.history.of(&key.0).idle(t.version as usize, view.clone());
            tracked.shown = Some(view);
        }
    }

    /// Judges each canary under analysis once per its `interval` (see `crate::canary`).
    async fn judge_canaries(&self, checked: &mut HashMap<(String, String), Instant>, now: Instant) {
        for c in self.provider.canaries() {
            let label = format!("{}.{}", c.name, c.namespace);
            self.metrics
                .canary_weight
                .get_or_create(&FunctionLabels { function_name: label.clone() })
                .set(c.status.weight as i64);
            self.metrics.history.of(&label).canary_weight(c.status.weight.max(0) as u32);
            let since = *checked.entry((c.namespace.clone(), c.name.clone())).or_insert(now);
            if now.duration_since(since) < c.analysis.interval.get() {
                continue;
            }
            checked.insert((c.namespace.clone(), c.name.clone()), now);
            let stats = match self.canary_numbers.stats(&label, now.duration_since(since)).await {
                Ok(stats) => stats,
                Err(e) => {
                    // No numbers, no verdict: a canary is never judged on missing data.
                    tracing::warn!(function = %label, error = %e, "canary analysis skipped");
                    continue;
                }
            };
            let Some(next) = crate::canary::judge(&c.analysis, &c.status, stats) else { continue };
            let message = next.message.clone().unwrap_or_default();
            let reason = match next.phase {
                flint_api::CanaryPhase::RolledBack => "CanaryRolledBack",
                flint_api::CanaryPhase::Succeeded => "CanarySucceeded",
                _ => "CanaryPromoted",
            };
            if next.phase == flint_api::CanaryPhase::RolledBack {
                tracing::warn!(function = %label, weight = next.weight, "{message}");
            } else {
                tracing::info!(function = %label, weight = next.weight, phase = ?next.phase, "{message}");
            }
            let weight = next.weight;
            match self.provider.set_canary(&c.namespace, &c.name, next).await {
                Ok(()) => {
                    self.metrics
                        .canary_weight
                        .get_or_create(&FunctionLabels { function_name: label.clone() })
                        .set(weight as i64);
                    let recent = self.metrics.history.of(&label);
                    recent.canary_weight(weight.max(0) as u32);
                    recent.event("canary", format!("{reason}: weight {weight}: {message}"));
                    self.provider.event(&c.namespace, &c.name, reason, message).await;
                }
                Err(e) => tracing::warn!(function = %label, error = %e, "could not set the canary's weight"),
            }
        }
    }

    /// The loop; state starts fresh each time (a new leader learns the load anew).
    pub async fn run_shared(self: Arc<Self>, stop: CancellationToken) {
        let mut states: HashMap<Key, Tracked> = HashMap::new();
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut source_down = false;
        let mut checked: HashMap<(String, String), Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return self.keep_all(&mut states).await,
            }
            let targets = self.provider.scale_targets();
            let keys: Vec<Key> =
                targets.iter().map(|t| (format!("{}.{}", t.name(), t.namespace()), t.version.as_str())).collect();
            let samples = match self.source.read(&keys).await {
                Ok(s) => {
                    if source_down {
                        tracing::info!(source = self.source.name(), "autoscaler metrics are back");
                    }
                    source_down = false;
                    Some(s)
                }
                Err(e) => {
                    if !source_down {
                        tracing::warn!(source = self.source.name(), error = %e, "no metrics: keeping every function's replica count until they are back (no scale to zero)");
                    }
                    source_down = true;
                    None
                }
            };
            let (now, wall) = (Instant::now(), chrono::Utc::now());
            self.judge_canaries(&mut checked, now).await;
            // A set, not a scan of the targets per state: that was quadratic, a third of a core
            // at 10,000 functions.
            let live: HashSet<&Key> = keys.iter().collect();
            states.retain(|k, _| live.contains(k));
            for (t, key) in targets.iter().zip(&keys) {
                // Thousands of functions make a long tick: requests on this thread get their
                // turn every so often rather than after it.
                tokio::task::consume_budget().await;
                let sample = samples.as_ref().and_then(|s| s.get(key)).copied();
                // Waiting here is known now; waiting at other gateways only through the source.
                let waiting_here = self.invoker.waiting(t.namespace(), t.name(), t.version);
                let resting = may_rest(t) && t.replicas == 0;
                if resting && !states.contains_key(key) && t.ready == 0 && waiting_here == 0 && sample.is_none_or(quiet)
                {
                    // At rest: nothing to decide, and nothing kept until it is called.
                    continue;
                }
                let tracked = states.entry(key.clone()).or_insert_with(|| {
                    let learned = self.provider.learned_idle(t.namespace(), t.name(), t.version, t.image());
                    if let Some(idle) = &learned {
                        tracing::info!(function = %key.0, version = key.1, spells = idle.count(), "starting from the idle times learned before");
                    }
                    Tracked::new(t, State::with_idle_times(now, learned.unwrap_or_default()))
                });
                if tracked.image != t.image() {
                    // A new image is a new function as far as its calls go: learned afresh.
                    *tracked = Tracked::new(t, State::new(now));
                }
                if !tracked.schedule.is_for(&t.scale().schedule) {
                    tracked.schedule = Schedule::new(&t.scale().schedule);
                }
                let state = &mut tracked.state;
                let gaps_before = state.idle_times.count();
                let value = sample.map(|s| match t.scale().metric {
                    ScaleMetric::Concurrency => s.in_flight,
                    ScaleMetric::Rps => s.rps,
                });
                let observation = Observation {
                    now,
                    value,
                    arrivals: sample.map_or(0.0, |s| s.rps),
                    in_flight: sample.map_or(0.0, |s| s.in_flight),
                    waiting: waiting_here.max(sample.map_or(0, |s| s.waiting)),
                    replicas: t.replicas,
                    ready: t.ready,
                };
                let bounds = Bounds {
                    min: t.scale().min.max(0) as u32,
                    max: t.scale().max.max(1) as u32,
                    target: t.scale().target.max(1) as f64,
                    zero_after: t.scale().zero_after.get(),
                    learned: t.scale().idle.as_ref().filter(|i| i.policy == flint_api::IdlePolicy::Learned).map(|i| {
                        idle::Settings {
                            max_keep_alive: i.max_keep_alive.get(),
                            cv_threshold: self.params.idle_cv_threshold,
                            bin: self.params.idle_bin,
                            ..Default::default()
                        }
                    }),
                    scheduled: tracked.schedule.in_effect(wall).map_or(0, |e| e.min),
                };
                let decision = state.decide(&self.params, bounds, observation);
                self.count_warmed(key, t.version, decision.warmed);
                let learned = state.idle_times.count();
                if learned != gaps_before {
                    tracing::debug!(function = %key.0, version = key.1, gaps = learned, plan = ?state.plan(&bounds), "idle time learned");
                }
                if learned != tracked.kept.0 && tracked.kept.1.is_none_or(|at| now.duration_since(at) >= REMEMBER_EVERY)
                {
                    tracked.kept = (learned, Some(now));
                    tokio::spawn(keep(
                        self.provider.clone(),
                        t.namespace().to_string(),
                        t.name().to_string(),
                        t.version,
                        t.image().to_string(),
                        state.idle_times.clone(),
                    ));
                }
                self.show_idle(key, t, &bounds, tracked, wall);
                let labels = VersionLabels { function_name: key.0.clone(), version: key.1 };
                self.metrics.desired_replicas.get_or_create(&labels).set(decision.desired as i64);
                self.metrics.actual_replicas.get_or_create(&labels).set(t.replicas as i64);
                self.metrics.history.of(&key.0).replicas(t.version as usize, decision.desired, t.replicas);
                if decision.desired == t.replicas || decision.reason == Reason::NoData {
                    if resting && tracked.state.at_rest(now) {
                        states.remove(key);
                    }
                    continue;
                }
                tracing::info!(
                    function = %key.0,
                    version = key.1,
                    from = t.replicas,
                    to = decision.desired,
                    reason = decision.reason.as_str(),
                    metric = ?t.scale().metric,
                    stable_avg = decision.stable_avg,
                    panic_avg = decision.panic_avg,
                    in_flight = observation.in_flight,
                    waiting = observation.waiting,
                    target = bounds.target,
                    "scaling"
                );
                let labels =
                    ScalingLabels { function_name: key.0.clone(), version: key.1, reason: decision.reason.as_str() };
                self.metrics.scaling.get_or_create(&labels).inc();
                if decision.reason == Reason::PreWarm {
                    self.metrics
                        .pre_warms
                        .get_or_create(&VersionLabels { function_name: key.0.clone(), version: key.1 })
                        .inc();
                }
                match self.provider.scale(t.namespace(), t.name(), t.version, decision.desired).await {
                    Ok(()) => {
                        let note = format!(
                            "{} version: {} -> {} replicas ({}; stable avg {:.2}, panic avg {:.2}, target {})",
                            t.version.as_str(),
                            t.replicas,
                            decision.desired,
                            decision.reason.as_str(),
                            decision.stable_avg,
                            decision.panic_avg,
                            bounds.target
                        );
                        self.metrics.history.of(&key.0).event("scaling", note.clone());
                        self.provider.event(t.namespace(), t.name(), decision.reason.as_str(), note).await;
                    }
                    Err(e) => tracing::warn!(function = %key.0, error = %e, "could not scale"),
                }
            }
        }
    }
}
