//! Keep-alive connections to replicas, kept per replica address. Unlike a general-purpose
//! client, a send that fails before the request left (the replica refused the connection, or
//! a pooled connection had been closed) hands the request back, so the caller can try another
//! replica: a replica that is stopping never costs a caller its request.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use flint_http::{
    Body, BoxError,
    body::{Watch, watched},
};
use http_body_util::BodyExt;
use hyper::{Request, Response, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = http1::SendRequest<Body>;

/// Idle connections kept per replica, at most.
const MAX_IDLE: usize = 256;
/// How long a pooled connection may take to become ready before a fresh one is used.
const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

pub enum SendError {
    /// The request never left: it can go to another replica.
    NotSent(Box<Request<Body>>, String),
    /// It left and failed before any response. `reused`: on a pooled connection, which the
    /// replica may have closed (or died) just before; a replayable request can be sent again.
    Failed { reason: String, reused: bool },
}

impl Pool {
    pub async fn send(self: &Arc<Self>, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Body>, SendError> {
        // A pooled connection first; one that turns out closed gives the request back.
        while let Some(mut sender) = self.checkout(addr) {
            // Just after its last response the connection may need a moment to be ready again;
            // one that was closed says so here.
            if !matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.checkin_after(addr, sender, response)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => {
                        self.forget(addr);
                        return Err(SendError::Failed {
                            reason: flint_http::error_chain(&e.into_error()),
                            reused: true,
                        });
                    }
                },
            }
        }
        let mut sender = match connect(addr).await {
            Ok(sender) => sender,
            Err(reason) => {
                self.forget(addr);
                return Err(SendError::NotSent(Box::new(req), reason));
            }
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok(self.checkin_after(addr, sender, response)),
            Err(mut e) => match e.take_message() {
                Some(back) => Err(SendError::NotSent(Box::new(back), flint_http::error_chain(e.error()))),
                None => Err(SendError::Failed { reason: flint_http::error_chain(&e.into_error()), reused: false }),
            },
        }
    }

    /// Drops the idle connections to a replica that just failed one: they are likely dead too.
    fn forget(&self, addr: SocketAddr) {
        self.idle.lock().unwrap().remove(&addr);
    }

    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap();
        let senders = idle.get_mut(&addr)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// The response, whose body gives the connection back to the pool when fully read.
    fn checkin_after(
        self: &Arc<Self>,
        addr: SocketAddr,
        sender: Sender,
        response: Response<hyper::body::Incoming>,
    ) -> Response<Body> {
        response.map(|body| {
            let ended = hyper::body::Body::is_end_stream(&body);
            let body = body.map_err(BoxError::from).boxed_unsync();
            watched(body, Checkin { pool: self.clone(), addr, sender: Some(sender), ended })
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "replica connection ended");
        }
    });
    Ok(sender)
}

/// Returns the connection to the pool once its response has been read to the end; a response
/// dropped half-read leaves the connection unusable, so it is closed instead.
struct Checkin {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: Option<Sender>,
    ended: bool,
}

impl Watch for Checkin {
    fn on_end(&mut self) {
        self.ended = true;
    }
}

impl Drop for Checkin {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take()
            && self.ended
            && !sender.is_closed()
        {
            let mut idle = self.pool.idle.lock().unwrap();
            let senders = idle.entry(self.addr).or_default();
            if senders.len() < MAX_IDLE {
                senders.push(sender);
            }
        }
    }
}
