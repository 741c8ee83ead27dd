//! The serve loop over real sockets, with clients that do what hyper's parking of idle HTTP/1
//! connections must survive: pipelined requests (whole, and split across writes), bodies sent in
//! pieces, a large answer read late, a request head sent slowly, stop while connections are
//! parked, and HTTP/2 on the same port.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use flint_http::{
    Body, full,
    server::{Limits, serve},
};
use http_body_util::BodyExt;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// Large enough that the kernel cannot take it at once from a client that does not read.
const BIG: usize = 8 * 1024 * 1024;

/// `/big` answers `BIG` bytes at once and reads the request's body meanwhile; everything else
/// answers "METHOD PATH LENGTH-OF-BODY-READ".
async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/big" {
        tokio::spawn(req.into_body().collect());
        return Ok(Response::new(full(vec![b'x'; BIG])));
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let read = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(usize::MAX);
    Ok(Response::new(full(format!("{method} {path} {read}"))))
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<bool>,
}

async fn start(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let make = |_peer| service_fn(answer);
    let serving = tokio::spawn(serve(listener, make, stop.clone(), limits, Duration::from_secs(5)));
    Server { addr, stop, serving }
}

fn limits() -> Limits {
    Limits { header_timeout: Duration::from_secs(1), idle_timeout: Duration::from_secs(30), max_connections: 1000 }
}

/// A raw HTTP/1.1 client that keeps what it read past one response for the next.
struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Client {
    async fn connect(server: &Server) -> Client {
        Client { stream: TcpStream::connect(server.addr).await.unwrap(), read: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response's status code and body; `None` if the connection closed first.
    async fn response(&mut self) -> Option<(u16, Bytes)> {
        loop {
            if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.read[..end]).to_ascii_lowercase();
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("every answer here has a length");
                if self.read.len() >= end + 4 + length {
                    let body = Bytes::copy_from_slice(&self.read[end + 4..end + 4 + length]);
                    self.read.drain(..end + 4 + length);
                    return Some((status, body));
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("an answer or a close within 10 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.read.extend_from_slice(&buf[..n]);
        }
    }

    async fn ask(&mut self, path: &str) -> Option<(u16, Bytes)> {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await;
        self.response().await
    }

    /// Whether the server closed the connection (reading gives nothing more).
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn said(answer: Option<(u16, Bytes)>) -> String {
    let (status, body) = answer.expect("an answer, not a close");
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_keep_alive_connection_is_served_again_after_each_quiet_spell() {
    let server = start(limits()).await;
    let mut client = Client::connect(&server).await;
    for i in 0..5 {
        assert_eq!(said(client.ask(&format!("/{i}")).await), format!("GET /{i} 0"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order_whole_or_split_across_writes() {
    let server = start(limits()).await;
    let mut client = Client::connect(&server).await;
    client.send(b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(said(client.response().await), "GET /a 0");
    assert_eq!(said(client.response().await), "GET /b 0");

    // The second head begins in the first request's write and ends a while later.
    client.send(b"GET /c HTTP/1.1\r\nhost: t\r\n\r\nPOST /d HT").await;
    assert_eq!(said(client.response().await), "GET /c 0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(b"TP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello").await;
    assert_eq!(said(client.response().await), "POST /d 5");
    assert_eq!(said(client.ask("/e").await), "GET /e 0");
}

#[tokio::test]
async fn a_body_sent_in_pieces_is_read_whole_and_the_connection_goes_on() {
    let server = start(limits()).await;
    let mut client = Client::connect(&server).await;
    client.send(b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 50000\r\n\r\n").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send(&[b'y'; 10_000]).await;
    }
    assert_eq!(said(client.response().await), "POST /upload 50000");
    client.send(b"POST /chunks HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n").await;
    for piece in ["5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send(piece.as_bytes()).await;
    }
    assert_eq!(said(client.response().await), "POST /chunks 11");
    assert_eq!(said(client.ask("/after").await), "GET /after 0");
}

#[tokio::test]
async fn an_answer_larger_than_the_kernel_holds_arrives_whole_when_read_late() {
    let server = start(limits()).await;
    let mut client = Client::connect(&server).await;
    // Answered before its body has come: hyper queues the answer and writes what the kernel
    // takes, then reads the body, and then waits for the next request head while most of the
    // answer is still its to write. The unwritten rest must not be dropped with hyper.
    client.send(b"POST /big HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(b"hello").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = client.response().await.expect("the whole answer");
    assert_eq!(status, 200);
    assert_eq!(body.len(), BIG);
    assert!(body.iter().all(|b| *b == b'x'));
    assert_eq!(said(client.ask("/next").await), "GET /next 0");
}

#[tokio::test]
async fn a_request_head_begun_and_not_finished_is_cut_off_at_the_header_timeout() {
    let server = start(limits()).await;
    let mut client = Client::connect(&server).await;
    assert_eq!(said(client.ask("/first").await), "GET /first 0");
    // One byte every 200 ms: the head would take 3 s, the header timeout is 1 s.
    let head = b"GET /slow HTTP/1.1\r\n\r\n";
    let mut sent = 0;
    for byte in head {
        if client.stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        let mut buf = [0u8; 256];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(200), client.stream.read(&mut buf)).await {
            assert!(matches!(read, Ok(0) | Err(_)), "no answer to a head cut off: {read:?}");
            break;
        }
    }
    assert!(sent < head.len(), "the connection was still open after the whole slow head");
}

#[tokio::test]
async fn a_quiet_connection_is_closed_at_the_idle_timeout_and_at_stop_at_once() {
    let server = start(Limits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_millis(500),
        max_connections: 10,
    })
    .await;
    let mut client = Client::connect(&server).await;
    assert_eq!(said(client.ask("/").await), "GET / 0");
    let quiet = tokio::time::Instant::now();
    assert!(client.closed().await, "closed when idle");
    assert!(
        quiet.elapsed() >= Duration::from_millis(400),
        "closed after {:?}, before the idle timeout",
        quiet.elapsed()
    );

    let server = start(limits()).await;
    let mut parked = Vec::new();
    for _ in 0..20 {
        let mut client = Client::connect(&server).await;
        assert_eq!(said(client.ask("/").await), "GET / 0");
        parked.push(client);
    }
    server.stop.cancel();
    assert!(server.serving.await.unwrap(), "every connection ended within the drain");
    for client in &mut parked {
        assert!(client.closed().await, "a parked connection is closed at stop");
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    let server = start(limits()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for path in ["/one", "/two"] {
        let req = Request::post(format!("http://test{path}")).body(full("abc")).unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("POST {path} 3"));
    }
}
