//! `exec_timeout`: an invocation that has not answered by the deadline gets 504 and its future
//! is dropped (which, in streaming mode, kills the process group). One that answered but is
//! still streaming its body at the deadline has the body cut off: the status is already sent.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use flint_http::{Body, BoxError};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};
use tower::{Layer, Service};

use crate::{
    error::InvokeError,
    stack::{Req, Res, ResFuture},
};

#[derive(Clone, Copy)]
/// None: no limit (`exec_timeout=0`).
pub struct TimeoutLayer(pub Option<Duration>);

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, limit: self.0 }
    }
}

#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Option<Duration>,
}

impl<S> Service<Req> for Timeout<S>
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
        let Some(limit) = self.limit else {
            return self.inner.call(req);
        };
        let deadline = Instant::now() + limit;
        let response = self.inner.call(req);
        Box::pin(async move {
            match timeout_at(deadline, response).await {
                Err(_) => Err(InvokeError::Timeout(limit)),
                Ok(response) => Ok(response?.map(|body| {
                    Deadline { inner: body, sleep: Box::pin(sleep_until(deadline)), limit, fired: false }.boxed_unsync()
                })),
            }
        })
    }
}

pin_project_lite::pin_project! {
    struct Deadline {
        #[pin]
        inner: Body,
        sleep: Pin<Box<Sleep>>,
        limit: Duration,
        fired: bool,
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.fired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            *this.fired = true;
            tracing::warn!(limit = ?this.limit, "response cut short: the function timed out while streaming");
            return Poll::Ready(Some(Err(InvokeError::Timeout(*this.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.fired || self.inner.is_end_stream()
    }
}
