//! One client connection, from accept to close.
//!
//! The first bytes say the protocol: the HTTP/2 preface, or anything else as HTTP/1.
//!
//! An HTTP/1 connection is served by hyper one stretch of requests at a time. Once hyper waits
//! for a request head that has not begun to come, and all it wrote is in the kernel, the
//! connection is *parked*: hyper and its buffers (8 KiB to read, more to write) are dropped, and
//! the task waits for the socket to become readable (or the idle timeout, or the stop), then
//! hands the socket to a new hyper connection. An idle keep-alive connection costs a socket and a
//! small task, as nginx's does (nginx frees its buffers between requests the same way). hyper
//! gives nothing up while it holds a connection, and keeping hyper for the protocol is worth more
//! than an HTTP/1 server of our own.
//!
//! An HTTP/2 connection stays with hyper throughout; its idleness is timed here (streams are
//! counted) and ended with a GOAWAY.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::{
    Request, Response,
    body::Incoming,
    server::conn::{http1, http2},
    service::Service,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Limits,
    socket::{Between, HeadTimer, Socket},
};
use crate::body::{Body, Watch, watched};

/// How long an idle HTTP/2 client has to leave after its GOAWAY before it is cut off.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// What every connection of one listener is served with.
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    limits: Limits,
}

impl Protocols {
    pub fn new(limits: Limits) -> Self {
        let mut http1 = http1::Builder::new();
        // hyper times a request head from the moment it starts waiting for one; between
        // requests the connection is parked and timed here instead.
        http1.header_read_timeout(limits.header_timeout);
        Protocols { http1, http2: http2::Builder::new(TokioExecutor::new()), limits }
    }
}

/// Serves `stream` until the client leaves, it holds its place without asking for too long, or
/// `stop` (after which the request under way, if any, is finished).
pub async fn serve<S>(stream: TcpStream, service: S, protocols: &Protocols, stop: &CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let limits = &protocols.limits;
    let activity = Arc::new(Activity::new(Instant::now()));
    let sniffed = tokio::select! {
        sniffed = sniff(&stream) => sniffed,
        _ = tokio::time::sleep_until(activity.accepted + limits.header_timeout) => {
            tracing::debug!("nothing asked within the header timeout: closing the connection");
            return;
        }
        _ = stop.cancelled() => return,
    };
    let Ok((protocol, first)) = sniffed else { return };
    let service = Tracked { inner: service, activity: activity.clone() };
    match protocol {
        Protocol::Http2 => {
            activity.multiplexed.store(true, Ordering::Release);
            let socket = Socket::new(stream, first, Arc::default());
            let connection = protocols.http2.serve_connection(TokioIo::new(socket), service);
            let mut connection = pin!(connection);
            let shut_down = |c: Pin<&mut _>| http2::Connection::graceful_shutdown(c);
            drive(connection.as_mut(), shut_down, || false, &activity, limits, stop).await;
        }
        Protocol::Http1 => serve_http1(stream, first, service, protocols, &activity, stop).await,
    }
}

async fn serve_http1<S>(
    stream: TcpStream,
    first: Bytes,
    mut service: Tracked<S>,
    protocols: &Protocols,
    activity: &Activity,
    stop: &CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let between = Arc::new(Between::default());
    let mut http1 = protocols.http1.clone();
    http1.timer(HeadTimer(between.clone()));
    let mut socket = Socket::new(stream, first, between.clone());
    loop {
        // Boxed: the parked task keeps only what it needs to wait, not room for hyper's state.
        let mut connection = Box::new(http1.serve_connection(TokioIo::new(socket), service));
        let shut_down = |c: Pin<&mut _>| http1::Connection::graceful_shutdown(c);
        let may_park = || between.idle();
        match drive(Pin::new(&mut *connection), shut_down, may_park, activity, &protocols.limits, stop).await {
            Ended::Closed => return,
            Ended::Parked => {}
        }
        let parts = connection.into_parts();
        (socket, service) = (parts.io.into_inner(), parts.service);
        if !parts.read_buf.is_empty() {
            // The start of a pipelined request that hyper had read: it is read again first.
            socket.read_again(parts.read_buf);
            continue;
        }
        // Even empty, it holds hyper's whole read buffer.
        drop(parts.read_buf);
        let woken = tokio::select! {
            readable = socket.stream().readable() => readable.is_ok(),
            _ = tokio::time::sleep(protocols.limits.idle_timeout) => false,
            _ = stop.cancelled() => false,
        };
        if !woken {
            return;
        }
    }
}

enum Protocol {
    Http1,
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes differ from the HTTP/2 preface or are all of it; returns what was read.
async fn sniff(stream: &TcpStream) -> io::Result<(Protocol, Bytes)> {
    let mut read = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        stream.readable().await?;
        match stream.try_read(&mut read[n..]) {
            // hyper sees the end too, and closes quietly.
            Ok(0) => return Ok((Protocol::Http1, Bytes::copy_from_slice(&read[..n]))),
            Ok(got) => n += got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if read[..n] != H2_PREFACE[..n] {
            return Ok((Protocol::Http1, Bytes::copy_from_slice(&read[..n])));
        }
        if n == H2_PREFACE.len() {
            return Ok((Protocol::Http2, Bytes::copy_from_slice(&read)));
        }
    }
}

enum Ended {
    /// The connection is over.
    Closed,
    /// hyper holds nothing but buffers: it can be dropped and the socket kept.
    Parked,
}

/// Runs one hyper connection until it ends, `may_park` says it can be parked, it is cut off
/// for holding a place without asking, or it has shut down gracefully on `stop` or when idle.
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    shut_down: impl Fn(Pin<&mut C>),
    may_park: impl Fn() -> bool,
    activity: &Activity,
    limits: &Limits,
    stop: &CancellationToken,
) -> Ended
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let watching = activity.quiet(limits.header_timeout, limits.idle_timeout);
    let mut watching = pin!(watching);
    let mut shutting = false;
    let mut cut_off_at: Option<Instant> = None;
    let ended = loop {
        let served = std::future::poll_fn(|cx| match connection.as_mut().poll(cx) {
            Poll::Ready(ended) => Poll::Ready(Some(ended)),
            Poll::Pending if !shutting && may_park() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        tokio::select! {
            served = served => match served {
                Some(ended) => break ended,
                None => return Ended::Parked,
            },
            _ = stop.cancelled(), if !shutting => {
                // The server's drain bounds what follows: the connection only stops taking requests.
                shut_down(connection.as_mut());
                shutting = true;
            }
            quiet = watching.as_mut(), if !shutting => match quiet {
                Quiet::NoRequest => {
                    tracing::debug!("no request head within the header timeout: closing the connection");
                    return Ended::Closed;
                }
                Quiet::Idle => {
                    shut_down(connection.as_mut());
                    shutting = true;
                    cut_off_at = Some(Instant::now() + GOAWAY_GRACE);
                }
            },
            _ = tokio::time::sleep_until(cut_off_at.unwrap_or_else(Instant::now)), if cut_off_at.is_some() => {
                if activity.open.load(Ordering::Acquire) == 0 {
                    return Ended::Closed;
                }
                // A request came in before the GOAWAY: it finishes under the server's drain.
                cut_off_at = None;
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    Ended::Closed
}

/// What a connection is doing, as its service sees it.
struct Activity {
    accepted: Instant,
    /// A whole request head arrived (any protocol).
    asked: AtomicBool,
    /// HTTP/2, whose idleness is timed here (HTTP/1's is timed while parked).
    multiplexed: AtomicBool,
    /// HTTP/2 requests whose response has not ended.
    open: AtomicUsize,
    /// When `open` last fell to 0.
    idle_since: Mutex<Option<Instant>>,
    /// Told when `open` falls to 0.
    quiet: tokio::sync::Notify,
}

enum Quiet {
    /// Nothing asked within the header timeout.
    NoRequest,
    /// An HTTP/2 connection with nothing under way for the idle timeout.
    Idle,
}

impl Activity {
    fn new(accepted: Instant) -> Self {
        Activity {
            accepted,
            asked: AtomicBool::new(false),
            multiplexed: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(None),
            quiet: tokio::sync::Notify::new(),
        }
    }

    /// Resolves when the connection has held its place without asking for long enough.
    async fn quiet(&self, header_timeout: Duration, idle_timeout: Duration) -> Quiet {
        if !self.asked.load(Ordering::Acquire) {
            tokio::time::sleep_until(self.accepted + header_timeout).await;
            if !self.asked.load(Ordering::Acquire) {
                return Quiet::NoRequest;
            }
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
            let since = self.idle_since.lock().unwrap().unwrap_or(self.accepted);
            tokio::time::sleep_until(since + idle_timeout).await;
            let still = self.open.load(Ordering::Acquire) == 0
                && self.idle_since.lock().unwrap().unwrap_or(self.accepted) == since;
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
        // Only HTTP/2 requests are counted (no allocation on the HTTP/1 path).
        let open = (req.version() == hyper::Version::HTTP_2).then(|| Open::enter(&self.activity));
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
