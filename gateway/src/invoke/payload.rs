//! The request body on its way to a replica. A body that ends within `REPLAY_LIMIT` is read
//! whole first, whatever its framing (Content-Length, chunked, HTTP/2 DATA frames without a
//! length), so that the request can be sent again if a replica fails it; a larger one streams
//! through, its first bytes included, and is sent once.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use bytes::Bytes;
use flint_http::{Body, BoxError};
use futures::{StreamExt, stream};
use http_body_util::{BodyExt, BodyStream, LengthLimitError, Limited, StreamBody};
use hyper::{HeaderMap, body::Frame, header::CONTENT_LENGTH};

/// Bodies up to this size are read before sending, so they can be sent again.
pub const REPLAY_LIMIT: usize = 64 * 1024;

pub enum Payload {
    Replayable(Bytes),
    /// Taken by the first send; given back with the request when it never left.
    Streaming(Option<Body>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Over the gateway's body limit.
    TooLarge(u64),
    Failed(String),
}

impl Payload {
    /// Reads `body` up to `REPLAY_LIMIT`; `max` is the gateway's body limit, if any.
    pub async fn read<B>(body: B, max: Option<u64>, over: Arc<AtomicBool>) -> Result<Payload, ReadError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut body = limit(body, max, over.clone());
        let mut prefix: Vec<Bytes> = Vec::new();
        let mut size = 0;
        let failed = |e: BoxError| match (over.load(Ordering::Relaxed), max) {
            (true, Some(max)) => ReadError::TooLarge(max),
            _ => ReadError::Failed(flint_http::error_chain(&*e)),
        };
        while size <= REPLAY_LIMIT {
            match body.frame().await {
                None => return Ok(Payload::Replayable(concat(prefix, size))),
                Some(Err(e)) => return Err(failed(e)),
                // Trailers are not forwarded (nor were they by any function server we know).
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        size += data.len();
                        prefix.push(data);
                    }
                }
            }
        }
        let first = stream::iter(prefix.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b))));
        Ok(Payload::Streaming(Some(StreamBody::new(first.chain(BodyStream::new(body))).boxed_unsync())))
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Payload::Replayable(_))
    }
}

fn concat(parts: Vec<Bytes>, size: usize) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.into_iter().next().expect("one part"),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(size);
            for p in parts {
                all.extend_from_slice(&p);
            }
            all.freeze()
        }
    }
}

fn limit<B>(body: B, max: Option<u64>, over: Arc<AtomicBool>) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let body = body.map_err(Into::into);
    match max {
        None => body.boxed_unsync(),
        Some(max) => Limited::new(body, max as usize)
            .map_err(move |e| {
                if e.is::<LengthLimitError>() {
                    over.store(true, Ordering::Relaxed);
                }
                e
            })
            .boxed_unsync(),
    }
}

/// The body's length when its Content-Length says so up front.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `chunks` frames with no length known up front (chunked, or HTTP/2 DATA frames).
    fn unsized_body(chunks: Vec<&'static [u8]>) -> Body {
        let frames = stream::iter(chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c)))));
        StreamBody::new(frames).boxed_unsync()
    }

    async fn bytes_of(p: Payload) -> Bytes {
        match p {
            Payload::Replayable(b) => b,
            Payload::Streaming(b) => b.unwrap().collect().await.unwrap().to_bytes(),
        }
    }

    #[tokio::test]
    async fn a_small_body_without_a_length_is_read_whole_and_replayable() {
        let p = Payload::read(unsized_body(vec![b"hello ", b"world"]), None, Default::default()).await.unwrap();
        assert!(p.replayable());
        assert_eq!(bytes_of(p).await, "hello world");
    }

    #[tokio::test]
    async fn a_large_body_streams_through_whole_including_what_was_read_first() {
        static CHUNK: [u8; 16 * 1024] = [7; 16 * 1024];
        let p = Payload::read(unsized_body(vec![&CHUNK; 10]), None, Default::default()).await.unwrap();
        assert!(!p.replayable());
        let all = bytes_of(p).await;
        assert_eq!(all.len(), 160 * 1024);
        assert!(all.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_as_too_large() {
        let got = Payload::read(unsized_body(vec![b"0123456789"; 3]), Some(25), Default::default()).await;
        assert_eq!(got.err(), Some(ReadError::TooLarge(25)));
    }

    #[test]
    fn the_declared_length_comes_from_content_length_only() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.insert(CONTENT_LENGTH, "12".parse().unwrap());
        assert_eq!(declared_length(&h), Some(12));
    }
}
