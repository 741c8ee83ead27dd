//! Events beyond HTTP, on NATS JetStream: asynchronous invocations and queue triggers.
//!
//! - `server`: local mode's own `nats-server -js`, a child of the gateway;
//! - `message`: an invocation as a JetStream message and back (method, path, headers, body,
//!   call id, callback);
//! - `accept`: `/async-function/NAME[.NS][/path]` → stored in the calls stream → 202 + `X-Call-Id`;
//! - `worker`: one lane per function (and per trigger) takes messages, invokes the function
//!   through the gateway, retries with back-off, dead-letters, calls back;
//! - `triggers`: keeps the trigger stream's subjects and lanes in step with the Functions.
//!
//! Streams: `FLINT_CALLS` (`flint.async.NAMESPACE.NAME`, work queue: each call is taken once),
//! `FLINT_DEAD` (`flint.dead.NAMESPACE.NAME`, kept 7 days), `FLINT_TRIGGERS` (the triggers'
//! subjects, kept until every function bound to them has taken the message).

pub mod accept;
pub mod message;
pub mod server;
pub mod triggers;
pub mod worker;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, stream};
use tokio::sync::watch;

pub const CALLS: &str = "FLINT_CALLS";
pub const DEAD: &str = "FLINT_DEAD";
pub const TRIGGERS: &str = "FLINT_TRIGGERS";
const DEAD_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to NATS at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("cannot set up JetStream stream {stream} on {url}: {why} (is JetStream on? nats-server -js)")]
    Stream { url: String, stream: String, why: String },
}

/// A connection to NATS with the streams Flint uses.
pub struct Queue {
    pub url: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Queue {
    /// Connects and makes sure the calls and dead-letter streams exist as configured;
    /// `max_queued`: calls the stream holds at most (a call beyond is refused, not stored).
    pub async fn connect(url: &str, max_queued: i64) -> Result<Queue, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name("flint")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| QueueError::Connect { url: url.to_string(), why: flint_http::error_chain(&e) })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let queue = Queue { url: url.to_string(), client, js };
        let calls = stream::Config {
            name: CALLS.into(),
            subjects: vec!["flint.async.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: max_queued,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let dead = stream::Config {
            name: DEAD.into(),
            subjects: vec!["flint.dead.>".into()],
            retention: stream::RetentionPolicy::Limits,
            max_age: DEAD_KEPT,
            ..Default::default()
        };
        for config in [calls, dead] {
            queue.ensure(config).await?;
        }
        Ok(queue)
    }

    /// Creates the stream, or brings an existing one to `config`, on disk.
    pub async fn ensure(&self, config: stream::Config) -> Result<(), QueueError> {
        let config = stream::Config { storage: stream::StorageType::File, ..config };
        let stream = config.name.clone();
        self.js.create_or_update_stream(config).await.map(|_| ()).map_err(|e| QueueError::Stream {
            url: self.url.clone(),
            stream,
            why: flint_http::error_chain(&e),
        })
    }

    /// Largest message the server takes, in bytes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

/// Connects, retrying until it works or `stop` (NATS may start after the gateway, as its pod
/// or process comes up beside it).
pub async fn connect_patiently(
    url: &str,
    max_queued: i64,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Queue> {
    let mut delay = Duration::from_millis(100);
    loop {
        match Queue::connect(url, max_queued).await {
            Ok(q) => {
                tracing::info!(%url, "NATS JetStream ready: asynchronous invocations and queue triggers on");
                return Some(q);
            }
            Err(e) => tracing::warn!("{e}; trying again in {delay:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Where the gateway stands with NATS: every part that needs the queue reads it from here.
#[derive(Clone)]
pub struct Link(Arc<watch::Sender<State>>);

#[derive(Clone)]
enum State {
    /// No NATS, and why (said to whoever calls `/async-function/`).
    Off(String),
    Connecting(String),
    Ready(Arc<Queue>),
}

impl Link {
    pub fn off(why: impl Into<String>) -> Link {
        Link(Arc::new(watch::Sender::new(State::Off(why.into()))))
    }

    pub fn connecting(url: &str) -> Link {
        Link(Arc::new(watch::Sender::new(State::Connecting(url.to_string()))))
    }

    pub fn set(&self, queue: Queue) {
        self.0.send_replace(State::Ready(Arc::new(queue)));
    }

    /// The queue, or why there is none (for a 503's body).
    pub fn ready(&self) -> Result<Arc<Queue>, String> {
        match &*self.0.borrow() {
            State::Ready(q) => Ok(q.clone()),
            State::Off(why) => Err(format!("asynchronous invocations are off: {why}")),
            State::Connecting(url) => {
                Err(format!("asynchronous invocations are not available yet: connecting to NATS at {url}"))
            }
        }
    }

    /// Waits for the queue; `None` when there will be none.
    pub async fn wait(&self) -> Option<Arc<Queue>> {
        let mut rx = self.0.subscribe();
        let state = rx.wait_for(|s| !matches!(s, State::Connecting(_))).await.ok()?.clone();
        match state {
            State::Ready(q) => Some(q),
            _ => None,
        }
    }
}
