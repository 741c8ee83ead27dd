//! The queue worker: takes stored calls and trigger messages and invokes the functions through
//! the gateway (scale from zero, throttles and timeouts included).
//!
//! One lane per function (and per trigger), each a durable JetStream consumer whose
//! `max_ack_pending` is the parallel limit: a slow or failing function holds only its own
//! lane, the limit holds across every worker sharing the consumer, and a worker holds at most
//! `parallel` messages per lane in memory however long the queue is (back-pressure stays in
//! the stream). A message is acknowledged only when it is done: answered 2xx, or written to the
//! dead-letter stream. 429, 502, 503, 504 and no answer are tried again after an exponential
//! back-off (or the answer's `Retry-After`, if longer) until `max_attempts`; any other status
//! is final. A worker that dies mid-call leaves its messages unacknowledged, and they are
//! delivered again after `ack_wait`: every call runs at least once.
//!
//! A function the gateway itself holds back (paused, or over its throttle) has not failed: its
//! message is kept taken and tried again after `Retry-After` (paused: every few seconds),
//! without counting an attempt, so a paused function's calls wait in the stream (the lane
//! pulls no more than it holds) and run when it is unpaused. The result goes to the callback
//! after the lane's slot is given back (`callback`). A calls lane with nothing waiting for a
//! while is stopped and its consumer deleted, so a deleted function leaves nothing behind.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use bytes::Bytes;
use futures::StreamExt;
use hyper::{HeaderMap, StatusCode, header::HeaderValue};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    Queue,
    callback::{Callbacks, Delivery},
    message::{self, Origin},
};
use crate::{
    client::{Answer, CallError, SelfClient},
    metrics::{FunctionLabels, Metrics, OutcomeLabels, QueueLabels},
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// Invocations of one function (or one trigger) in flight at once, across all workers.
    pub parallel: usize,
    /// Attempts at most, the first included; then the dead-letter stream.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each one after, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A message taken by a worker that goes silent this long is delivered again.
    pub ack_wait: Duration,
    /// Longest one attempt may take (the function's own timeout answers 504 first).
    pub call_timeout: Duration,
    /// Most of a function's answer read (for its callback); `None`: what NATS takes in one
    /// message, the most an asynchronous call's request may hold.
    pub answer_limit: Option<usize>,
}

/// Where a lane's messages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Async,
    Nats,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Async => "async",
            Source::Nats => "nats",
        }
    }
}

/// A durable consumer and the function its messages invoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    pub stream: String,
    pub consumer: String,
    pub subject: String,
    pub namespace: String,
    pub name: String,
    /// The path a trigger's messages are sent to.
    pub path: String,
    pub source: Source,
}

impl Lane {
    pub fn calls(queue: &Queue, namespace: &str, name: &str) -> Lane {
        Lane {
            stream: queue.names.calls_stream(),
            consumer: calls_consumer(namespace, name),
            subject: queue.names.calls_subject(namespace, name),
            namespace: namespace.to_string(),
            name: name.to_string(),
            path: "/".into(),
            source: Source::Async,
        }
    }

    fn function(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    fn origin(&self) -> Origin<'_> {
        match self.source {
            Source::Async => Origin::Stored,
            Source::Nats => Origin::Trigger(&self.path),
        }
    }
}

/// `_` is in no namespace or function name: the name cannot be another lane's.
fn calls_consumer(namespace: &str, name: &str) -> String {
    format!("calls_{namespace}_{name}")
}

pub struct Worker {
    pub queue: Arc<Queue>,
    pub client: SelfClient,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub callbacks: Arc<Callbacks>,
}

/// How often a worker looks for functions with calls waiting.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A calls lane with nothing waiting this long is stopped and its consumer deleted.
const LANE_IDLE: Duration = Duration::from_secs(15);
/// How often the calls of a paused function are tried again.
const PAUSED_RETRY: Duration = Duration::from_secs(2);
/// The longest a throttled call waits before it is tried again, whatever `Retry-After` says.
const THROTTLED_RETRY_MAX: Duration = Duration::from_secs(30);

/// The functions the worker in this process has a calls lane for, and how a call stored for any
/// other wakes it: a stored call of a function already taken needs no look at the stream (at
/// thousands of calls a second, one look per call was two JetStream API requests each).
#[derive(Default)]
pub struct Lanes {
    running: RwLock<HashSet<String>>,
    wake: Notify,
}

impl Lanes {
    /// A call of `name` in `namespace` was stored.
    pub fn stored(&self, namespace: &str, name: &str) {
        if !self.running.read().expect("never poisoned").contains(&lane_key(namespace, name)) {
            self.wake.notify_waiters();
        }
    }

    fn started(&self, function: &str) {
        self.running.write().expect("never poisoned").insert(function.to_string());
    }

    fn stopped(&self, function: &str) {
        self.running.write().expect("never poisoned").remove(function);
    }
}

/// How the calls stream's subjects name a function, and so its lane.
fn lane_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Since when nothing has waited for it.
    empty_since: Option<Instant>,
}

impl Worker {
    /// Takes asynchronous calls until `stop`: a lane for each function with calls in the stream,
    /// looked for every second and whenever a call is stored here for a function with none.
    pub async fn run_calls(self: Arc<Self>, known: Arc<Lanes>, stop: CancellationToken) {
        let mut lanes: HashMap<String, Running> = HashMap::new();
        loop {
            match self.waiting().await {
                Ok(counts) => {
                    for (function, count) in &counts {
                        self.pending(function).set(*count as i64);
                        if let Some(lane) = lanes.get_mut(function) {
                            lane.empty_since = None;
                            continue;
                        }
                        let Some((namespace, name)) = function.split_once('/') else { continue };
                        let lane = Lane::calls(&self.queue, namespace, name);
                        let token = stop.child_token();
                        let task = tokio::spawn(self.clone().run_lane(lane, token.clone()));
                        lanes.insert(function.clone(), Running { stop: token, task, empty_since: None });
                        known.started(function);
                    }
                    let now = Instant::now();
                    let mut idle = Vec::new();
                    for (function, lane) in lanes.iter_mut().filter(|(f, _)| !counts.contains_key(*f)) {
                        if now.duration_since(*lane.empty_since.get_or_insert(now)) >= LANE_IDLE {
                            idle.push(function.clone());
                        }
                    }
                    for function in idle {
                        let lane = lanes.remove(&function).expect("listed");
                        known.stopped(&function);
                        self.retire(&function, lane).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the calls stream; looking again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = known.wake.notified() => {}
                _ = stop.cancelled() => break,
            }
        }
        for (_, lane) in lanes {
            let _ = lane.task.await;
        }
    }

    /// Stops a calls lane nothing waits for and deletes its consumer (with nothing in the
    /// stream for it, no worker holds one of its messages): a function called once, or deleted,
    /// leaves no consumer and no task behind. The next call makes them again.
    async fn retire(&self, function: &str, lane: Running) {
        lane.stop.cancel();
        let _ = lane.task.await;
        let (namespace, name) = function.split_once('/').unwrap_or(("", function));
        if let Ok(stream) = self.queue.js.get_stream(self.queue.names.calls_stream()).await {
            let _ = stream.delete_consumer(&calls_consumer(namespace, name)).await;
        }
        let labels = FunctionLabels { function_name: format!("{name}.{namespace}") };
        self.metrics.queue.pending.remove(&labels);
        tracing::debug!(function = %labels.function_name, "asynchronous calls lane retired: nothing waiting");
    }

    /// Calls waiting, by `namespace/name`.
    async fn waiting(&self) -> Result<HashMap<String, usize>, String> {
        let names = &self.queue.names;
        let stream = self.queue.js.get_stream(names.calls_stream()).await.map_err(|e| flint_http::error_chain(&e))?;
        let mut subjects =
            stream.info_with_subjects(names.calls_subjects()).await.map_err(|e| flint_http::error_chain(&e))?;
        let mut out = HashMap::new();
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry.map_err(|e| flint_http::error_chain(&e))?;
            if let Some((namespace, name)) = names.function_of(&subject) {
                out.insert(lane_key(namespace, name), count);
            }
        }
        Ok(out)
    }

    fn pending(&self, function: &str) -> prometheus_client::metrics::gauge::Gauge {
        let (namespace, name) = function.split_once('/').unwrap_or(("", function));
        let labels = FunctionLabels { function_name: format!("{name}.{namespace}") };
        self.metrics.queue.pending.get_or_create(&labels).clone()
    }

    /// Takes the lane's messages until `stop`, setting its consumer up again after an error.
    pub async fn run_lane(self: Arc<Self>, lane: Lane, stop: CancellationToken) {
        loop {
            match self.clone().take(&lane, &stop).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(consumer = %lane.consumer, error = %e, "queue lane interrupted; resuming"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn take(self: Arc<Self>, lane: &Lane, stop: &CancellationToken) -> Result<(), String> {
        let err = |e: &(dyn std::error::Error + 'static)| flint_http::error_chain(e);
        let stream = self.queue.js.get_stream(&lane.stream).await.map_err(|e| err(&e))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(lane.consumer.clone()),
                filter_subject: lane.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                // The worker decides when a message is done (dead-lettered), not the server.
                max_deliver: -1,
                max_ack_pending: self.settings.parallel as i64,
                // A trigger starts with the messages published after it was bound.
                deliver_policy: if lane.source == Source::Nats { DeliverPolicy::New } else { DeliverPolicy::All },
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let mut messages =
            consumer.stream().max_messages_per_batch(self.settings.parallel).messages().await.map_err(|e| err(&e))?;
        let room = Arc::new(Semaphore::new(self.settings.parallel));
        loop {
            let permit = tokio::select! {
                p = room.clone().acquire_owned() => p.expect("never closed"),
                _ = stop.cancelled() => return Ok(()),
            };
            let next = tokio::select! {
                m = messages.next() => m,
                _ = stop.cancelled() => return Ok(()),
            };
            match next {
                Some(Ok(msg)) => {
                    tokio::spawn(self.clone().deliver(msg, lane.clone(), permit));
                }
                Some(Err(e)) => return Err(err(&e)),
                None => return Err("the consumer's message stream ended".into()),
            }
        }
    }

    /// One attempt at one message, and what follows from its outcome.
    async fn deliver(self: Arc<Self>, msg: jetstream::Message, lane: Lane, permit: OwnedSemaphorePermit) {
        let (attempt, published_ns) =
            msg.info().map(|i| (i.delivered.max(1) as u32, i.published.unix_timestamp_nanos())).unwrap_or((1, 0));
        let call = message::decode(msg.headers.as_ref(), lane.origin());
        let function = lane.function();
        let labels = QueueLabels { function_name: function.clone(), source: lane.source.as_str() };
        if attempt == 1 {
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(published_ns);
            self.metrics.queue.age.get_or_create(&labels).observe(((now_ns - published_ns).max(0) as f64) / 1e9);
        }
        let in_progress = self.metrics.queue.in_progress.get_or_create(&labels).clone();
        in_progress.inc();
        let started = Instant::now();
        let mut headers = call.headers.clone();
        if lane.source == Source::Nats {
            headers.insert("x-flint-trigger", HeaderValue::from_static("nats"));
            if let Ok(subject) = HeaderValue::from_str(msg.subject.as_str()) {
                headers.insert("x-flint-subject", subject);
            }
        }
        if let Some(id) = call.call_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert("x-call-id", id);
        }
        let limit = self.settings.answer_limit.unwrap_or_else(|| self.queue.max_payload());
        let invoked = async {
            let mut held = false;
            loop {
                let result = self
                    .client
                    .invoke(
                        &lane.namespace,
                        &lane.name,
                        call.method.clone(),
                        &call.path,
                        headers.clone(),
                        msg.payload.clone(),
                        (self.settings.call_timeout, limit),
                    )
                    .await;
                let Some(wait) = held_back(&result) else { return result };
                if !held {
                    held = true;
                    tracing::info!(%function, source = lane.source.as_str(), call_id = ?call.call_id, ?wait, "function paused or throttled: its call waits, no attempt counted");
                }
                tokio::time::sleep(wait).await;
            }
        };
        let result = self.keep_taken(&msg, invoked).await;
        in_progress.dec();
        let took = started.elapsed();
        let (status, why) = match &result {
            Ok(a) => (a.status.as_u16(), String::new()),
            Err(e) => (0, e.to_string()),
        };
        let finished = |outcome| {
            let labels = OutcomeLabels { function_name: function.clone(), source: lane.source.as_str(), outcome };
            self.metrics.queue.finished.get_or_create(&labels).inc();
        };
        match verdict(&result, attempt, self.settings.max_attempts) {
            Verdict::Done => {
                let _ = msg.ack().await;
                finished("succeeded");
                tracing::info!(%function, source = lane.source.as_str(), call_id = ?call.call_id, attempt, status, "queued call done");
            }
            Verdict::Again => {
                let delay = backoff(&self.settings, attempt).max(retry_after(&result).min(self.settings.backoff_max));
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                self.metrics.queue.retried.get_or_create(&labels).inc();
                tracing::info!(%function, source = lane.source.as_str(), call_id = ?call.call_id, attempt, status, error = %why, ?delay, "queued call failed; trying again");
                return;
            }
            Verdict::Dead => {
                if let Err(e) = self.dead_letter(&msg, &lane, attempt, status, &why).await {
                    // Not stored as dead: it stays in its stream and comes back.
                    tracing::warn!(%function, error = %e, "cannot write the dead letter; the message will come back");
                    let _ = msg.ack_with(AckKind::Nak(Some(self.settings.backoff))).await;
                    return;
                }
                let _ = msg.ack().await;
                finished("dead_lettered");
                tracing::warn!(%function, source = lane.source.as_str(), call_id = ?call.call_id, attempt, status, error = %why, "queued call dead-lettered");
            }
        }
        // The lane's slot is the function's, not the callback receiver's.
        drop(permit);
        if let Some(url) = call.callback {
            self.callbacks.post(delivery(url, call.call_id.as_deref(), function, result, took, limit));
        }
    }

    /// Runs `invoked`, telling the server every third of `ack_wait` that the message is still
    /// being worked on (a long call is not delivered to a second worker meanwhile).
    async fn keep_taken(
        &self,
        msg: &jetstream::Message,
        invoked: impl Future<Output = Result<Answer, CallError>>,
    ) -> Result<Answer, CallError> {
        with_progress(self.settings.ack_wait / 3, invoked, || async {
            let _ = msg.ack_with(AckKind::Progress).await;
        })
        .await
    }

    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        lane: &Lane,
        attempts: u32,
        status: u16,
        why: &str,
    ) -> Result<(), String> {
        let mut headers = msg.headers.clone().unwrap_or_default();
        headers.insert(message::ATTEMPTS, attempts.to_string());
        headers.insert(message::LAST_STATUS, status.to_string());
        headers.insert(message::LAST_ERROR, why);
        headers.insert(message::SUBJECT, msg.subject.as_str());
        let subject = self.queue.names.dead_subject(&lane.namespace, &lane.name);
        let ack = self
            .queue
            .js
            .publish_with_headers(subject, headers, msg.payload.clone())
            .await
            .map_err(|e| flint_http::error_chain(&e))?;
        ack.await.map(|_| ()).map_err(|e| flint_http::error_chain(&e))
    }
}

/// Runs `work` at once, and `progress` every `every` while it runs.
async fn with_progress<T, P: Future<Output = ()>>(
    every: Duration,
    work: impl Future<Output = T>,
    mut progress: impl FnMut() -> P,
) -> T {
    // The first tick one period in: an interval's "immediate" first tick is not immediate
    // (tokio rounds its deadline up to the timer wheel's next millisecond), and awaiting it
    // held every queued call up to 1 ms before it was sent to the function.
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = ticks.tick() => progress().await,
        }
    }
}

/// The final result as the callback receiver gets it: the function's body and `Content-Type`,
/// `X-Call-Id`, `X-Function-Name`, `X-Function-Status` (504 when there was no answer) and
/// `X-Duration-Seconds`; `X-Flint-Error` says why a body is missing.
fn delivery(
    url: String,
    call_id: Option<&str>,
    function: String,
    result: Result<Answer, CallError>,
    took: Duration,
    limit: usize,
) -> Delivery {
    let mut headers = HeaderMap::new();
    let (status, body) = match result {
        Ok(a) => {
            if let Some(ct) = a.headers.get(hyper::header::CONTENT_TYPE) {
                headers.insert(hyper::header::CONTENT_TYPE, ct.clone());
            }
            if a.over_limit {
                let why = format!("the function's answer was over {limit} bytes, the most a callback carries");
                headers.insert("x-flint-error", HeaderValue::from_str(&why).expect("text"));
                headers.remove(hyper::header::CONTENT_TYPE);
            }
            (a.status.as_u16(), a.body)
        }
        Err(e) => (StatusCode::GATEWAY_TIMEOUT.as_u16(), Bytes::from(e.to_string())),
    };
    if let Some(id) = call_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert("x-call-id", id);
    }
    headers.insert("x-function-name", HeaderValue::from_str(&function).expect("names are header-safe"));
    headers.insert("x-function-status", HeaderValue::from(status));
    headers
        .insert("x-duration-seconds", HeaderValue::from_str(&format!("{:.6}", took.as_secs_f64())).expect("a number"));
    Delivery { url, headers, body, function }
}

/// How long to wait before trying a call again that the gateway held back (paused, or over
/// the function's throttle: its answer says so in `X-Flint-Throttled`); `None` for any other
/// outcome.
fn held_back(result: &Result<Answer, CallError>) -> Option<Duration> {
    let answer = result.as_ref().ok()?;
    let reason = answer.headers.get(crate::invoke::THROTTLED)?;
    let wait = if reason == "paused" { PAUSED_RETRY } else { retry_after(result).max(Duration::from_millis(100)) };
    // Calls held back together do not all come back together.
    Some(wait.min(THROTTLED_RETRY_MAX).mul_f64(1.0 + fastrand::f64() * 0.2))
}

/// The answer's `Retry-After` in seconds; zero when it has none.
fn retry_after(result: &Result<Answer, CallError>) -> Duration {
    let seconds = result
        .as_ref()
        .ok()
        .and_then(|a| a.headers.get(hyper::header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs(seconds.min(3600))
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    Again,
    Dead,
}

/// 2xx is done; a busy, absent or silent function is tried again while attempts remain; any
/// other answer is the function's final word.
fn verdict(result: &Result<Answer, CallError>, attempt: u32, max_attempts: u32) -> Verdict {
    let retryable = match result {
        Ok(a) if a.status.is_success() => return Verdict::Done,
        Ok(a) => matches!(a.status.as_u16(), 429 | 502 | 503 | 504),
        Err(_) => true,
    };
    if retryable && attempt < max_attempts { Verdict::Again } else { Verdict::Dead }
}

/// `backoff × 2^(attempt-1)`, at most `backoff_max`, less up to a fifth at random so that
/// calls failed together do not all come back together.
fn backoff(settings: &Settings, attempt: u32) -> Duration {
    let full = settings.backoff.saturating_mul(1 << attempt.saturating_sub(1).min(20)).min(settings.backoff_max);
    full.mul_f64(1.0 - fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// Whether a call stored for `name` woke a worker waiting for new functions.
    fn wakes(lanes: &Lanes, name: &str) -> bool {
        let woken = lanes.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        lanes.stored("default", name);
        woken.now_or_never().is_some()
    }

    #[test]
    fn only_a_call_of_a_function_without_a_lane_wakes_the_worker() {
        let lanes = Lanes::default();
        assert!(wakes(&lanes, "hello"));
        lanes.started(&lane_key("default", "hello"));
        assert!(!wakes(&lanes, "hello"), "its lane takes it: no look at the stream");
        assert!(wakes(&lanes, "other"));
        lanes.stopped(&lane_key("default", "hello"));
        assert!(wakes(&lanes, "hello"), "a retired lane is started again");
    }

    /// The call is under way at the first poll: nothing waits for a timer before it.
    #[tokio::test]
    async fn a_call_is_sent_at_once_not_at_the_timers_next_turn() {
        let started = std::cell::Cell::new(false);
        let run = with_progress(
            Duration::from_secs(10),
            async {
                started.set(true);
                std::future::pending::<()>().await
            },
            || async {},
        );
        tokio::pin!(run);
        assert!(futures::poll!(run.as_mut()).is_pending());
        assert!(started.get(), "the call waited for the timer before it was sent");
    }

    /// On a paused clock: the runtime's time, not this machine's speed.
    #[tokio::test(start_paused = true)]
    async fn a_long_call_is_reported_in_progress_every_period() {
        let progress = std::cell::Cell::new(0);
        let long = with_progress(Duration::from_millis(300), tokio::time::sleep(Duration::from_secs(1)), || async {
            progress.set(progress.get() + 1)
        });
        long.await;
        assert_eq!(progress.get(), 3, "at 0.3, 0.6 and 0.9 s of a 1 s call");
    }

    fn answer(code: u16) -> Result<Answer, CallError> {
        Ok(Answer {
            status: StatusCode::from_u16(code).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            over_limit: false,
        })
    }

    #[test]
    fn busy_or_silent_functions_are_tried_again_until_the_last_attempt() {
        for code in [429, 502, 503, 504] {
            assert_eq!(verdict(&answer(code), 1, 3), Verdict::Again, "{code}");
            assert_eq!(verdict(&answer(code), 3, 3), Verdict::Dead, "{code}");
        }
        let silent = Err(CallError::Timeout(Duration::from_secs(1)));
        assert_eq!(verdict(&silent, 2, 3), Verdict::Again);
        assert_eq!(verdict(&answer(200), 1, 3), Verdict::Done);
        assert_eq!(verdict(&answer(202), 3, 3), Verdict::Done);
        for code in [400, 404, 500] {
            assert_eq!(verdict(&answer(code), 1, 3), Verdict::Dead, "{code} is the function's final word");
        }
    }

    #[test]
    fn the_back_off_doubles_up_to_its_cap() {
        let s = Settings {
            parallel: 1,
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ack_wait: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            answer_limit: None,
        };
        for (attempt, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0)] {
            let d = backoff(&s, attempt).as_secs_f64();
            assert!(d <= full && d >= full * 0.8, "attempt {attempt}: {d}s, expected {full}s less up to 20%");
        }
    }

    fn with(code: u16, headers: &[(&str, &str)]) -> Result<Answer, CallError> {
        let mut a = answer(code).unwrap();
        for (k, v) in headers {
            a.headers.insert(hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Ok(a)
    }

    #[test]
    fn only_the_gateways_own_refusals_hold_a_call_back_and_retry_after_is_honoured() {
        let paused = held_back(&with(503, &[("x-flint-throttled", "paused")])).unwrap();
        assert!(paused >= PAUSED_RETRY && paused <= PAUSED_RETRY.mul_f64(1.2), "{paused:?}");
        let rate = held_back(&with(429, &[("x-flint-throttled", "rate"), ("retry-after", "3")])).unwrap();
        assert!(rate >= Duration::from_secs(3) && rate <= Duration::from_millis(3600), "{rate:?}");
        let long = held_back(&with(429, &[("x-flint-throttled", "rate"), ("retry-after", "86400")])).unwrap();
        assert!(long <= THROTTLED_RETRY_MAX.mul_f64(1.2), "{long:?}");
        // The function's own 429 is an attempt like any other, with its Retry-After.
        let own = with(429, &[("retry-after", "7")]);
        assert_eq!(held_back(&own), None);
        assert_eq!(retry_after(&own), Duration::from_secs(7));
        assert_eq!(retry_after(&answer(503)), Duration::ZERO);
        assert_eq!(held_back(&Err(CallError::Timeout(Duration::from_secs(1)))), None);
    }

    #[test]
    fn an_answer_over_the_limit_reaches_the_callback_without_its_body_and_says_why() {
        let mut a = with(200, &[("content-type", "application/json")]).unwrap();
        a.over_limit = true;
        let d = delivery("http://h/x".into(), Some("c-1"), "f.default".into(), Ok(a), Duration::from_millis(5), 1024);
        assert!(d.body.is_empty());
        assert!(d.headers["x-flint-error"].to_str().unwrap().contains("over 1024 bytes"));
        assert!(d.headers.get("content-type").is_none());
        assert_eq!(
            (&d.headers["x-function-status"], &d.headers["x-call-id"]),
            (&"200".parse::<HeaderValue>().unwrap(), &"c-1".parse::<HeaderValue>().unwrap())
        );
    }
}
