//! The innermost service: one invocation of the function, in the configured mode.

pub mod http;
pub mod streaming;

use std::task::{Context, Poll};

use tower::Service;

use crate::{
    error::InvokeError,
    stack::{Req, Res, ResFuture},
};

#[derive(Clone)]
pub enum Invoke {
    Http(http::Proxy),
    Streaming(streaming::Fork),
}

impl Service<Req> for Invoke {
    type Response = Res;
    type Error = InvokeError;
    type Future = ResFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> ResFuture {
        match self {
            Invoke::Http(proxy) => proxy.call(req),
            Invoke::Streaming(fork) => fork.call(req),
        }
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded.
pub fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    use hyper::header::*;
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
