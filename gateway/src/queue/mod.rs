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
//! - `names`: one installation's streams and subjects (`--nats-prefix`);
//! - `callback`: where a caller's `X-Callback-Url` may point, and the sending of results.
//!
//! Streams (without a prefix): `FLINT_CALLS` (`flint.async.NAMESPACE.NAME`, work queue: each
//! call is taken once), `FLINT_DEAD` (`flint.dead.NAMESPACE.NAME`, kept 7 days),
//! `FLINT_TRIGGERS` (the triggers' subjects, kept until every function bound to them has taken
//! the message). NATS credentials are used to connect and never shown: every URL in a log line
//! or an answer is written without them.

pub mod accept;
pub mod callback;
pub mod message;
pub mod names;
pub mod server;
pub mod triggers;
pub mod worker;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, stream};
use tokio::sync::watch;

pub use self::names::Names;

const DEAD_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to NATS at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("cannot set up JetStream stream {stream} on {url}: {why} (is JetStream on? nats-server -js)")]
    Stream { url: String, stream: String, why: String },
}

/// Where this installation's NATS is and how to log in to it.
#[derive(Clone)]
pub struct Nats {
    /// Without credentials: what is connected to, and shown.
    url: String,
    pub login: Option<Login>,
    pub names: Names,
    /// Calls the calls stream holds at most (a call beyond is refused, not stored).
    pub max_queued: i64,
}

/// How the gateway proves who it is to NATS.
#[derive(Clone)]
pub enum Login {
    Password(String, String),
    Token(String),
}

impl Nats {
    /// `url` may hold a login (`nats://USER:PASSWORD@host`, `nats://TOKEN@host`); `login`, given
    /// apart (`--nats-user`, `--nats-password`), wins over it.
    pub fn new(url: &str, login: Option<Login>, names: Names, max_queued: i64) -> Nats {
        let login = login.or_else(|| url.split(',').find_map(login_in));
        Nats { url: without_credentials(url), login, names, max_queued }
    }

    /// The URL as it may be shown: without the user and password it may hold.
    pub fn shown(&self) -> String {
        self.url.clone()
    }
}

/// The login a URL holds, percent-decoded.
fn login_in(url: &str) -> Option<Login> {
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let (userinfo, _) = rest.rsplit_once('@')?;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some(match userinfo.split_once(':') {
        Some((user, password)) => Login::Password(decode(user), decode(password)),
        None => Login::Token(decode(userinfo)),
    })
}

/// `url` without its `user:password@` part (every URL in a comma-separated list).
pub fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &one[..scheme + 3], &one[at + 1..]),
            (None, Some(at)) => one[at + 1..].to_string(),
            _ => one.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A connection to NATS with the streams Flint uses.
pub struct Queue {
    /// Where, as it may be shown (no credentials).
    pub url: String,
    pub names: Names,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Queue {
    /// Connects and makes sure the calls and dead-letter streams exist as configured.
    pub async fn connect(nats: &Nats) -> Result<Queue, QueueError> {
        let url = nats.shown();
        let mut options = async_nats::ConnectOptions::new().name("flint").connection_timeout(Duration::from_secs(5));
        match &nats.login {
            Some(Login::Password(user, password)) => {
                options = options.user_and_password(user.clone(), password.clone())
            }
            Some(Login::Token(token)) => options = options.token(token.clone()),
            None => {}
        }
        let client = options
            .connect(nats.url.as_str())
            .await
            .map_err(|e| QueueError::Connect { url: url.clone(), why: flint_http::error_chain(&e) })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let queue = Queue { url, names: nats.names.clone(), client, js };
        let calls = stream::Config {
            name: queue.names.calls_stream(),
            subjects: vec![queue.names.calls_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: nats.max_queued,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let dead = stream::Config {
            name: queue.names.dead_stream(),
            subjects: vec![queue.names.dead_subjects()],
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

    /// Largest message the server takes, in bytes (as the client keeps it: read per call, where
    /// the server's whole `INFO` would be copied).
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }
}

/// Connects, retrying until it works or `stop` (NATS may start after the gateway, as its pod
/// or process comes up beside it).
pub async fn connect_patiently(nats: &Nats, stop: &tokio_util::sync::CancellationToken) -> Option<Queue> {
    let mut delay = Duration::from_millis(100);
    loop {
        match Queue::connect(nats).await {
            Ok(q) => return Some(q),
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

    /// `url` as it may be shown.
    pub fn connecting(url: &str) -> Link {
        Link(Arc::new(watch::Sender::new(State::Connecting(without_credentials(url)))))
    }

    /// The queue is ready: said in the log only once it is in place, since tests and operators
    /// take that line as the moment `/async-function/` accepts calls.
    pub fn set(&self, queue: Queue) {
        let url = queue.url.clone();
        self.0.send_replace(State::Ready(Arc::new(queue)));
        tracing::info!(%url, "NATS JetStream ready: asynchronous invocations and queue triggers on");
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

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_never_shown() {
        let shown = super::without_credentials;
        assert_eq!(shown("nats://flint:s3cret@nats:4222"), "nats://nats:4222");
        assert_eq!(shown("nats://tok@nats:4222,nats://u:p@b:4222"), "nats://nats:4222,nats://b:4222");
        assert_eq!(shown("nats://nats:4222"), "nats://nats:4222");
        assert_eq!(shown("u:p@nats:4222"), "nats:4222");
        let nats = super::Nats::new("nats://fl%40nt:s3c%3Aret@nats:4222", None, super::Names::new("").unwrap(), 1);
        assert_eq!(nats.shown(), "nats://nats:4222");
        assert!(matches!(nats.login, Some(super::Login::Password(ref u, ref p)) if u == "fl@nt" && p == "s3c:ret"));
        let token = super::Nats::new("nats://t0ken@nats:4222", None, super::Names::new("").unwrap(), 1);
        assert!(matches!(token.login, Some(super::Login::Token(ref t)) if t == "t0ken"));
        let link = super::Link::connecting("nats://flint:s3cret@nats:4222");
        let Err(why) = link.ready() else { panic!("not connected yet") };
        assert!(why.contains("nats://nats:4222") && !why.contains("s3cret"), "{why}");
    }
}
