//! What the gateway's and the watchdog's keep-alive connections to the servers behind them
//! share: a connection goes back to its pool only once the response it carries has been read
//! to the end. A response dropped half-read leaves its connection unusable: it is closed.

use hyper::{body::Incoming, client::conn::http1::SendRequest};

use crate::body::{Body, BoxError, Watch, watched};
use http_body_util::BodyExt;

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
