//! `max_inflight`: invocations beyond the limit are refused at once with 429 (load shedding, not
//! queueing: the gateway or the client retries elsewhere). A permit lasts until the response
//! body is done, so a long streaming response counts as in flight.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use flint_http::body::watched;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::{
    error::InvokeError,
    stack::{Req, Res, ResFuture},
};

#[derive(Clone)]
pub struct LimitLayer {
    max: usize,
    /// None: unlimited (`max_inflight=0`).
    permits: Option<Arc<Semaphore>>,
}

impl LimitLayer {
    pub fn new(max: usize) -> Self {
        Self { max, permits: (max > 0).then(|| Arc::new(Semaphore::new(max))) }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Limit<S> {
        Limit { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    layer: LimitLayer,
}

impl<S> Service<Req> for Limit<S>
where
    S: Service<Req, Response = Res, Future = ResFuture, Error = InvokeError>,
{
    type Response = Res;
    type Error = InvokeError;
    type Future = ResFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> ResFuture {
        let Some(permits) = &self.layer.permits else {
            return self.inner.call(req);
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let max = self.layer.max;
            return Box::pin(async move { Err(InvokeError::Overloaded(max)) });
        };
        let response = self.inner.call(req);
        Box::pin(async move { Ok(response.await?.map(|body| watched(body, permit))) })
    }
}
