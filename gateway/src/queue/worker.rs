//! The queue worker: takes stored calls and trigger messages and invokes the functions through
//! the gateway (scale from zero, throttles and timeouts included).
//!
//! One lane per function (and per trigger), each a durable JetStream consumer whose
//! `max_ack_pending` is the parallel limit: a slow or failing function holds only its own
//! lane, the limit holds across every worker sharing the consumer, and a worker holds at most
//! `parallel` messages per lane in memory however long the queue is (back-pressure stays in
//! the stream). A message is acknowledged only when it is done: answered 2xx, or written to the
//! dead-letter stream. 429, 502, 503, 504 and no answer are tried again after an exponential
//! back-off until `max_attempts`; any other status is final. A worker that dies mid-call leaves
//! its messages unacknowledged, and they are delivered again after `ack_wait`: every call runs
//! at least once.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use bytes::Bytes;
use futures::StreamExt;
use hyper::{HeaderMap, Method, StatusCode, header::HeaderValue};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    CALLS, Queue,
    message::{self, Call},
};
use crate::{
    client::{Answer, CallError, SelfClient},
    metrics::{CallbackLabels, FunctionLabels, Metrics, OutcomeLabels, QueueLabels},
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
    pub stream: &'static str,
    pub consumer: String,
    pub subject: String,
    pub namespace: String,
    pub name: String,
    /// The path a message that names none is sent to.
    pub path: String,
    pub source: Source,
}

impl Lane {
    pub fn calls(namespace: &str, name: &str) -> Lane {
        Lane {
            stream: CALLS,
            // `_` is in no namespace or function name: the name cannot be another lane's.
            consumer: format!("calls_{namespace}_{name}"),
            subject: message::calls_subject(namespace, name),
            namespace: namespace.to_string(),
            name: name.to_string(),
            path: "/".into(),
            source: Source::Async,
        }
    }

    fn function(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

pub struct Worker {
    pub queue: Arc<Queue>,
    pub client: SelfClient,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
}

/// How often a worker looks for functions with calls waiting.
const LOOK_EVERY: Duration = Duration::from_secs(1);
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

impl Worker {
    /// Takes asynchronous calls until `stop`: a lane for each function with calls in the stream,
    /// looked for every second and whenever `stored` says a call was stored here.
    pub async fn run_calls(self: Arc<Self>, stored: Arc<Notify>, stop: CancellationToken) {
        let mut lanes: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut shown: Vec<String> = Vec::new();
        loop {
            match self.waiting().await {
                Ok(counts) => {
                    for function in counts.keys() {
                        if lanes.contains_key(function) {
                            continue;
                        }
                        let Some((namespace, name)) = function.split_once('/') else { continue };
                        let lane = Lane::calls(namespace, name);
                        lanes.insert(function.clone(), tokio::spawn(self.clone().run_lane(lane, stop.clone())));
                    }
                    for gone in shown.iter().filter(|f| !counts.contains_key(*f)) {
                        self.pending(gone).set(0);
                    }
                    for (function, count) in &counts {
                        self.pending(function).set(*count as i64);
                    }
                    shown = counts.into_keys().collect();
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the calls stream; looking again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stored.notified() => {}
                _ = stop.cancelled() => break,
            }
        }
        for (_, lane) in lanes {
            let _ = lane.await;
        }
    }

    /// Calls waiting, by `namespace/name`.
    async fn waiting(&self) -> Result<HashMap<String, usize>, String> {
        let stream = self.queue.js.get_stream(CALLS).await.map_err(|e| flint_http::error_chain(&e))?;
        let mut subjects = stream.info_with_subjects("flint.async.>").await.map_err(|e| flint_http::error_chain(&e))?;
        let mut out = HashMap::new();
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry.map_err(|e| flint_http::error_chain(&e))?;
            if let Some((namespace, name)) = message::function_of(&subject) {
                out.insert(format!("{namespace}/{name}"), count);
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
        let stream = self.queue.js.get_stream(lane.stream).await.map_err(|e| err(&e))?;
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
    async fn deliver(self: Arc<Self>, msg: jetstream::Message, lane: Lane, _permit: OwnedSemaphorePermit) {
        let (attempt, published_ns) =
            msg.info().map(|i| (i.delivered.max(1) as u32, i.published.unix_timestamp_nanos())).unwrap_or((1, 0));
        let call = message::decode(msg.headers.as_ref(), &lane.path);
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
        let invoked = self.client.invoke(
            &lane.namespace,
            &lane.name,
            call.method.clone(),
            &call.path,
            headers,
            msg.payload.clone(),
            self.settings.call_timeout,
        );
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
                let delay = backoff(&self.settings, attempt);
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
        if let Some(url) = &call.callback {
            self.call_back(url, &call, &function, result, took).await;
        }
    }

    /// Runs `invoked`, telling the server every third of `ack_wait` that the message is still
    /// being worked on (a long call is not delivered to a second worker meanwhile).
    async fn keep_taken(
        &self,
        msg: &jetstream::Message,
        invoked: impl Future<Output = Result<Answer, CallError>>,
    ) -> Result<Answer, CallError> {
        let mut ticks = tokio::time::interval(self.settings.ack_wait / 3);
        ticks.tick().await;
        tokio::pin!(invoked);
        loop {
            tokio::select! {
                r = &mut invoked => return r,
                _ = ticks.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
            }
        }
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
        let subject = message::dead_subject(&lane.namespace, &lane.name);
        let ack = self
            .queue
            .js
            .publish_with_headers(subject, headers, msg.payload.clone())
            .await
            .map_err(|e| flint_http::error_chain(&e))?;
        ack.await.map(|_| ()).map_err(|e| flint_http::error_chain(&e))
    }

    /// POSTs the final result to the caller's `X-Callback-Url`, once.
    async fn call_back(
        &self,
        url: &str,
        call: &Call,
        function: &str,
        result: Result<Answer, CallError>,
        took: Duration,
    ) {
        let mut headers = HeaderMap::new();
        let (status, body) = match result {
            Ok(a) => {
                if let Some(ct) = a.headers.get(hyper::header::CONTENT_TYPE) {
                    headers.insert(hyper::header::CONTENT_TYPE, ct.clone());
                }
                (a.status.as_u16(), a.body)
            }
            Err(e) => (StatusCode::GATEWAY_TIMEOUT.as_u16(), Bytes::from(e.to_string())),
        };
        if let Some(id) = call.call_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert("x-call-id", id);
        }
        headers.insert("x-function-name", HeaderValue::from_str(function).expect("names are header-safe"));
        headers.insert("x-function-status", HeaderValue::from(status));
        headers.insert(
            "x-duration-seconds",
            HeaderValue::from_str(&format!("{:.6}", took.as_secs_f64())).expect("a number"),
        );
        let outcome = match self.client.send(Method::POST, url, headers, body, CALLBACK_TIMEOUT).await {
            Ok(a) if a.status.is_success() => "delivered",
            Ok(a) => {
                tracing::warn!(%function, %url, status = a.status.as_u16(), "the callback URL refused the result");
                "failed"
            }
            Err(e) => {
                tracing::warn!(%function, %url, error = %e, "cannot deliver the result to the callback URL");
                "failed"
            }
        };
        self.metrics.queue.callbacks.get_or_create(&CallbackLabels { outcome }).inc();
    }
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
    use super::*;

    fn answer(code: u16) -> Result<Answer, CallError> {
        Ok(Answer { status: StatusCode::from_u16(code).unwrap(), headers: HeaderMap::new(), body: Bytes::new() })
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
        };
        for (attempt, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0)] {
            let d = backoff(&s, attempt).as_secs_f64();
            assert!(d <= full && d >= full * 0.8, "attempt {attempt}: {d}s, expected {full}s less up to 20%");
        }
    }
}
