//! The accept loop: HTTP/1.1 and HTTP/2 on one port, TCP_NODELAY, a deadline for a new
//! connection's first request, an idle timeout for both protocols, a cap on open connections,
//! and a graceful stop that lets every accepted request finish.
//!
//! Every connection holds a place among `max_connections`, so a connection that holds one
//! without asking anything is closed: one that has not sent a whole request head within
//! `header_timeout` of being accepted (whatever it sent: nothing, half an HTTP/1 head, the
//! first bytes of the HTTP/2 preface), and one with no request under way for `idle_timeout`
//! (hyper times HTTP/1 keep-alive itself; HTTP/2 connections are counted here and sent a
//! GOAWAY, then closed if the client does not go).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{Request, Response, body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::body::{Body, Watch, watched};

/// What one listener allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A new connection must have sent a whole request head within this long, or it is closed.
    pub header_timeout: Duration,
    /// A connection with no request under way for this long is closed (on HTTP/1 a later
    /// request's head must also arrive within it).
    pub idle_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Limits {
    /// One timeout for the first request and for idleness, and room for as many connections
    /// as the process has file descriptors.
    pub fn idle(idle_timeout: Duration) -> Self {
        Limits { header_timeout: idle_timeout, idle_timeout, max_connections: Semaphore::MAX_PERMITS }
    }
}

/// What a connection beyond the cap is told before it is closed.
/// Most of a refused connection's request head read before it is answered.
const MAX_REFUSED_HEAD: usize = 16 * 1024;

const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 60\r\n\r\n\
too many open connections to this server; retry in a moment\n";

/// How long an idle HTTP/2 client has to leave after its GOAWAY before it is cut off.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Serves `listener` until `stop`, then waits up to `drain` for accepted requests to finish.
/// `make` builds each connection's service from the peer's address. Returns whether every
/// connection finished within `drain`.
pub async fn serve<M, S>(
    listener: TcpListener,
    make: M,
    stop: CancellationToken,
    limits: Limits,
    drain: Duration,
) -> bool
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper arms its header timeout as soon as it waits for a request, so on HTTP/1 it is the
    // keep-alive idle timeout too.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    let connections = TaskTracker::new();
    let places = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let refused = Arc::new(AtomicU64::new(0));
    // Refusing takes a task for up to a second; beyond these many at once, close without a word.
    let refusing = Arc::new(Semaphore::new(256));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(place) = places.clone().try_acquire_owned() else {
                    if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(max = limits.max_connections, "open connections at the cap: refusing new ones");
                    }
                    if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse(stream).await;
                            drop(refusal);
                        });
                    }
                    continue;
                };
                let activity = Arc::new(Activity::default());
                let service = Tracked { inner: make(peer), activity: activity.clone() };
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let (refused, stop) = (refused.clone(), stop.clone());
                connections.spawn(async move {
                    drive(connection, |c| c.graceful_shutdown(), &activity, &limits, &stop).await;
                    drop(place);
                    let n = refused.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        tracing::warn!(refused = n, "open connections below the cap again");
                    }
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(listener);
    connections.close();
    tokio::time::timeout(drain, connections.wait()).await.is_ok()
}

/// Runs one connection to its end: closed by the client, cut off for holding a place without
/// asking, or shut down gracefully on `stop` or when idle.
async fn drive<C, E>(
    connection: C,
    shut_down: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limits: &Limits,
    stop: &CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut connection = pin!(connection);
    let watching = activity.quiet(limits.header_timeout, limits.idle_timeout);
    let mut watching = pin!(watching);
    let mut shutting = false;
    let mut cut_off_at: Option<Instant> = None;
    let ended = loop {
        tokio::select! {
            ended = connection.as_mut() => break ended,
            _ = stop.cancelled(), if !shutting => {
                // The server's drain bounds what follows: the connection only stops taking requests.
                shut_down(connection.as_mut());
                shutting = true;
            }
            quiet = watching.as_mut(), if !shutting => match quiet {
                Quiet::NoRequest => {
                    tracing::debug!("no request head within the header timeout: closing the connection");
                    return;
                }
                Quiet::Idle => {
                    shut_down(connection.as_mut());
                    shutting = true;
                    cut_off_at = Some(Instant::now() + GOAWAY_GRACE);
                }
            },
            _ = tokio::time::sleep_until(cut_off_at.unwrap_or_else(Instant::now)), if cut_off_at.is_some() => {
                if activity.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                // A request came in before the GOAWAY: it finishes under the server's drain.
                cut_off_at = None;
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection is doing, as its service sees it.
#[derive(Default)]
struct Activity {
    /// A whole request head arrived (any protocol).
    asked: AtomicBool,
    /// HTTP/2, whose idleness is timed here (hyper times HTTP/1's).
    multiplexed: AtomicBool,
    /// HTTP/2 requests whose response has not ended.
    open: AtomicUsize,
    /// When `open` last fell to 0.
    idle_since: Mutex<Option<Instant>>,
    /// Told when `open` falls to 0.
    quiet: Notify,
}

enum Quiet {
    /// Nothing asked within the header timeout.
    NoRequest,
    /// An HTTP/2 connection with nothing under way for the idle timeout.
    Idle,
}

impl Activity {
    /// Resolves when the connection has held its place without asking for long enough.
    async fn quiet(&self, header_timeout: Duration, idle_timeout: Duration) -> Quiet {
        let accepted = Instant::now();
        tokio::time::sleep_until(accepted + header_timeout).await;
        if !self.asked.load(Ordering::Acquire) {
            return Quiet::NoRequest;
        }
        if !self.multiplexed.load(Ordering::Acquire) {
            return std::future::pending().await;
        }
        loop {
            let fell = self.quiet.notified();
            let mut fell = pin!(fell);
            fell.as_mut().enable();
            if self.open.load(Ordering::Acquire) > 0 {
                fell.await;
                continue;
            }
            let since = self.idle_since.lock().unwrap().unwrap_or(accepted);
            tokio::time::sleep_until(since + idle_timeout).await;
            let still =
                self.open.load(Ordering::Acquire) == 0 && self.idle_since.lock().unwrap().unwrap_or(accepted) == since;
            if still {
                return Quiet::Idle;
            }
        }
    }
}

/// One HTTP/2 request under way on a connection, until its response body ends or is dropped.
struct Open(Arc<Activity>);

impl Open {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Open(activity.clone())
    }
}

impl Watch for Open {}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap() = Some(Instant::now());
            self.0.quiet.notify_waiters();
        }
    }
}

/// A connection's service, telling its `Activity` what it is asked.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.asked.store(true, Ordering::Release);
        // HTTP/1 keep-alive is timed by hyper: only HTTP/2 requests are counted (no allocation
        // on the HTTP/1 path).
        let open = (req.version() == hyper::Version::HTTP_2).then(|| {
            self.activity.multiplexed.store(true, Ordering::Release);
            Open::enter(&self.activity)
        });
        TrackedFuture { inner: self.inner.call(req), open }
    }
}

pin_project_lite::pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else { return Poll::Pending };
        Poll::Ready(Ok(match this.open.take() {
            Some(open) => response.map(|body| watched(body, open)),
            None => response,
        }))
    }
}

/// Tells a connection beyond the cap why it is closed, after its request head: a client takes
/// an answer that comes before its request as a broken server (hyper's: `UnexpectedMessage`),
/// and one answered at accept had, about one time in two, not written yet. Reading what the
/// client sent before closing keeps the kernel from answering it with a reset that could
/// discard the 503. A client that sends nothing is closed after a second, unanswered.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REFUSED_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(FULL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
