//! What lets an idle HTTP/1 connection be taken away from hyper and given back to it: the
//! socket hyper reads and writes through, and the timer hyper arms while it waits for a
//! request head. Together they tell the connection's task when hyper holds nothing but its
//! buffers: it is waiting for a head, nothing of that head has come, and everything it wrote
//! has gone to the kernel.
//!
//! hyper starts its header-read timer when it starts waiting for a request head and drops it
//! once the head is parsed (`http1::Builder::header_read_timeout`); that is the only way it
//! tells anyone it is between requests, so the timer is the signal.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// What hyper is doing on one HTTP/1 connection, as its socket and timer see it.
#[derive(Debug)]
pub struct Between {
    /// Header-read timers alive: hyper is waiting for a request head while this is above 0.
    head_waits: AtomicUsize,
    /// Bytes came in since hyper last started waiting for a head.
    heard: AtomicBool,
    /// Nothing written since the last flush: hyper's write buffer is empty (hyper flushes the
    /// socket only once it has written all it holds).
    flushed: AtomicBool,
}

impl Default for Between {
    fn default() -> Self {
        Between { head_waits: AtomicUsize::new(0), heard: AtomicBool::new(false), flushed: AtomicBool::new(true) }
    }
}

impl Between {
    /// Whether hyper can be dropped without losing anything: it waits for a request head,
    /// none of it has come, and all it wrote has been handed to the kernel.
    pub fn idle(&self) -> bool {
        self.head_waits.load(Ordering::Relaxed) > 0
            && !self.heard.load(Ordering::Relaxed)
            && self.flushed.load(Ordering::Relaxed)
    }
}

/// The client's socket, as hyper sees it: bytes hyper had read but not used when it was last
/// dropped are read again first.
pub struct Socket {
    stream: TcpStream,
    unread: Bytes,
    between: Arc<Between>,
}

impl Socket {
    pub fn new(stream: TcpStream, unread: Bytes, between: Arc<Between>) -> Self {
        Socket { stream, unread, between }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes to be read before the stream's.
    pub fn read_again(&mut self, unread: Bytes) {
        self.unread = unread;
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
        } else {
            std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        }
        if buf.filled().len() > before {
            self.between.heard.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.between.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.between.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        self.between.flushed.store(true, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// hyper's timer on one HTTP/1 connection: tokio's, counting the header-read timers alive.
#[derive(Clone)]
pub struct HeadTimer(pub Arc<Between>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.0.head_waits.fetch_add(1, Ordering::Relaxed);
        self.0.heard.store(false, Ordering::Relaxed);
        Box::pin(HeadWait { sleep: tokio::time::sleep_until(deadline.into()), between: self.0.clone() })
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

pin_project_lite::pin_project! {
    struct HeadWait {
        #[pin]
        sleep: tokio::time::Sleep,
        between: Arc<Between>,
    }

    impl PinnedDrop for HeadWait {
        fn drop(this: Pin<&mut Self>) {
            this.between.head_waits.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl std::future::Future for HeadWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

impl hyper::rt::Sleep for HeadWait {}
