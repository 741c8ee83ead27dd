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
