//! The one response body type every layer speaks, and a wrapper that keeps something alive (an
//! in-flight permit, a metrics observation) until the body has been fully sent or dropped: an
//! invocation lasts as long as its response body, not just until its headers.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Sees the frames of a body go by; dropped with the body.
pub trait Watch: Send + 'static {
    fn on_data(&mut self, _bytes: usize) {}
    fn on_error(&mut self) {}
    /// The body ended normally: every frame was sent.
    fn on_end(&mut self) {}
}

impl Watch for tokio::sync::OwnedSemaphorePermit {}

pin_project_lite::pin_project! {
    pub struct Watched<W> {
        #[pin]
        inner: Body,
        watch: W,
    }
}

/// `body`, with `watch` told of its frames and dropped when it is.
pub fn watched<W: Watch>(body: Body, watch: W) -> Body {
    Watched { inner: body, watch }.boxed_unsync()
}

impl<W: Watch> HttpBody for Watched<W> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.watch.on_data(data.len());
                }
                // A server that knows the length stops polling after the last byte, so the
                // end is seen here, not only as a final `None`.
                if this.inner.is_end_stream() {
                    this.watch.on_end();
                }
            }
            Poll::Ready(Some(Err(_))) => this.watch.on_error(),
            Poll::Ready(None) => this.watch.on_end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What [`read_at_most`] read.
#[derive(Debug)]
pub struct Read {
    /// The body, or its first `limit` bytes.
    pub bytes: Bytes,
    /// There was more than `limit` bytes; the rest was not read.
    pub truncated: bool,
}

/// Reads at most `limit` bytes of `body` and stops there: what someone else sends (a function's
/// answer, a callback receiver's, a Prometheus's) never grows this process beyond `limit`.
pub async fn read_at_most<B>(body: B, limit: usize) -> Result<Read, B::Error>
where
    B: HttpBody<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        if out.len() + data.len() > limit {
            out.extend_from_slice(&data[..limit - out.len()]);
            return Ok(Read { bytes: out.freeze(), truncated: true });
        }
        out.extend_from_slice(&data);
    }
    Ok(Read { bytes: out.freeze(), truncated: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_stops_at_the_limit() {
        // A body that never ends: 4 KiB frames forever.
        let frames = std::iter::repeat_with(|| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 4096]))));
        let endless = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        let read = read_at_most(endless, 10_000).await.unwrap();
        assert_eq!((read.bytes.len(), read.truncated), (10_000, true));
        let small = read_at_most(Full::new(Bytes::from_static(b"hello")), 5).await.unwrap();
        assert_eq!((&small.bytes[..], small.truncated), (&b"hello"[..], false));
        let over = read_at_most(Full::new(Bytes::from_static(b"hello!")), 5).await.unwrap();
        assert_eq!((&over.bytes[..], over.truncated), (&b"hello"[..], true));
    }
}
