//! What the gateway's and the watchdog's keep-alive connections to the servers behind them
//! share: idle connections kept by key, most recent first, within a cap and an idle timeout
//! (`Idle`); a request sent on one of them or on a new one (`Idle::send`); and a connection
//! going back only once the response it carries has been read to the end (`give_back_after`).
//! A response dropped half-read leaves its connection unusable: it is closed.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use hyper::{Request, Response, body::Incoming, client::conn::http1::SendRequest};

use crate::body::{Body, BoxError, Watch, watched};

/// How long an idle connection may take to become ready (just after its last response) before
/// another is used.
const READY_WAIT: Duration = Duration::from_millis(200);

/// Idle connections, each under the key of the server it goes to.
pub struct Idle<K, B> {
    /// Oldest first.
    conns: Mutex<VecDeque<(K, SendRequest<B>, Instant)>>,
    /// Kept at most, all keys together; the oldest goes first.
    cap: usize,
    /// A connection idle this long is closed when next seen.
    timeout: Duration,
}

/// Whether a request's connection was kept from an earlier one or made for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    Kept,
    New,
}

impl<K: PartialEq, B: hyper::body::Body + 'static> Idle<K, B> {
    pub fn new(cap: usize, timeout: Duration) -> Self {
        Idle { conns: Mutex::default(), cap, timeout }
    }

    /// Sends `req` on the most recent idle connection of `key` that is still open, or on one
    /// `connect` makes: the response, its connection (for `give_back_after`), and which it was.
    /// A connection the server closed while it sat idle gives the request back unsent, and the
    /// next is tried. On failure: on which connection it failed, and why.
    pub async fn send<C, E>(
        &self,
        key: &K,
        mut req: Request<B>,
        connect: impl FnOnce() -> C,
    ) -> Result<(Response<Incoming>, SendRequest<B>, Made), (Made, BoxError)>
    where
        C: Future<Output = Result<SendRequest<B>, E>>,
        E: Into<BoxError>,
    {
        while let Some(mut sender) = self.checkout(key) {
            if !matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, sender, Made::Kept)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err((Made::Kept, e.into_error().into())),
                },
            }
        }
        let mut sender = connect().await.map_err(|e| (Made::New, e.into()))?;
        let response = sender.send_request(req).await.map_err(|e| (Made::New, e.into()))?;
        Ok((response, sender, Made::New))
    }

    /// The most recent idle connection of `key` that is still open and not idle too long.
    fn checkout(&self, key: &K) -> Option<SendRequest<B>> {
        let mut conns = self.conns.lock().unwrap();
        while let Some(i) = conns.iter().rposition(|(k, ..)| k == key) {
            let (_, sender, since) = conns.remove(i).expect("found");
            if !sender.is_closed() && since.elapsed() < self.timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender`'s connection for the next request to `key`.
    pub fn checkin(&self, key: K, sender: SendRequest<B>) {
        let mut conns = self.conns.lock().unwrap();
        // Oldest first: those idle too long go now, not only when reached.
        let now = Instant::now();
        while conns.front().is_some_and(|(_, _, since)| now.duration_since(*since) >= self.timeout) {
            conns.pop_front();
        }
        if conns.len() >= self.cap {
            conns.pop_front();
        }
        if self.cap > 0 {
            conns.push_back((key, sender, now));
        }
    }

    /// Connections kept now.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `body`, the response `sender`'s connection carries: when it has ended, `give` gets the
/// connection back (if it is still open).
pub fn give_back_after<B, F>(body: Incoming, sender: SendRequest<B>, give: F) -> Body
where
    B: Send + 'static,
    F: FnOnce(SendRequest<B>) + Send + 'static,
{
    let ended = hyper::body::Body::is_end_stream(&body);
    watched(body.map_err(BoxError::from).boxed_unsync(), Checkin { sender: Some((sender, give)), ended })
}

struct Checkin<B, F: FnOnce(SendRequest<B>)> {
    sender: Option<(SendRequest<B>, F)>,
    ended: bool,
}

impl<B, F> Watch for Checkin<B, F>
where
    B: Send + 'static,
    F: FnOnce(SendRequest<B>) + Send + 'static,
{
    fn on_end(&mut self) {
        self.ended = true;
    }
}

impl<B, F: FnOnce(SendRequest<B>)> Drop for Checkin<B, F> {
    fn drop(&mut self) {
        if let Some((sender, give)) = self.sender.take()
            && self.ended
            && !sender.is_closed()
        {
            give(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A client connection over an in-memory pipe, and the pipe's other end (its "server").
    async fn connection() -> (SendRequest<Empty<Bytes>>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (sender, connection) = http1::handshake(TokioIo::new(ours)).await.unwrap();
        tokio::spawn(connection);
        (sender, theirs)
    }

    #[tokio::test]
    async fn the_most_recent_open_connection_of_the_key_is_reused() {
        let idle = Idle::new(8, Duration::from_secs(60));
        let (a, _a) = connection().await;
        let (b, _b) = connection().await;
        let (c, c_server) = connection().await;
        idle.checkin("x", a);
        idle.checkin("y", b);
        idle.checkin("x", c);
        // The server of the most recent one for "x" closed it: it is skipped and dropped.
        drop(c_server);
        tokio::task::yield_now().await;
        let got = idle.checkout(&"x").expect("the older open one");
        assert!(!got.is_closed());
        assert_eq!(idle.len(), 1, "only y's is left");
        assert!(idle.checkout(&"x").is_none());
        assert!(idle.checkout(&"y").is_some());
    }

    #[tokio::test]
    async fn no_more_than_the_cap_is_kept_and_the_oldest_goes_first() {
        let idle = Idle::new(2, Duration::from_secs(60));
        let mut servers = Vec::new();
        for key in ["first", "second", "third"] {
            let (sender, server) = connection().await;
            servers.push(server);
            idle.checkin(key, sender);
        }
        assert_eq!(idle.len(), 2);
        assert!(idle.checkout(&"first").is_none(), "the oldest made room");
        assert!(idle.checkout(&"second").is_some() && idle.checkout(&"third").is_some());
        let none: Idle<&str, Empty<Bytes>> = Idle::new(0, Duration::from_secs(60));
        none.checkin("x", connection().await.0);
        assert!(none.is_empty(), "a cap of 0 keeps nothing");
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_not_reused_and_goes_at_the_next_checkin() {
        let timeout = Duration::from_millis(50);
        let idle = Idle::new(8, timeout);
        let (old, _old) = connection().await;
        idle.checkin("x", old);
        tokio::time::sleep(timeout * 2).await;
        assert!(idle.checkout(&"x").is_none());
        let (a, _a) = connection().await;
        let (b, _b) = connection().await;
        idle.checkin("x", a);
        tokio::time::sleep(timeout * 2).await;
        idle.checkin("y", b);
        assert_eq!(idle.len(), 1, "x's went when y's came");
    }
}
