//! The gateway's front door holds a bounded number of client connections: one beyond
//! `--max-connections` is told 503 and closed while the others keep being served, and a
//! keep-alive connection idle for `--idle-timeout` is closed.

mod common;

use std::time::Duration;

use common::{Dir, Gateway};
use flint_testkit::wait_for;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// One HTTP/1.1 request on an open connection; the response's status line and body, or `None`
/// when the connection was closed instead.
async fn ask(conn: &mut TcpStream, path: &str) -> Option<(String, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()));
            if length.is_some_and(|len: usize| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

async fn connect(g: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", g.port)).await.unwrap()
}

#[tokio::test]
async fn a_connection_beyond_the_cap_gets_503_and_the_others_are_still_served() {
    let dir = Dir::new("connections");
    let g = Gateway::start(&dir.0, &["--max-connections", "20"]).await;
    // The health check that waited for the gateway has closed its connection by now.
    let mut open = Vec::new();
    while open.len() < 20 {
        let mut conn = connect(&g).await;
        match ask(&mut conn, "/healthz").await {
            Some((status, _)) if status.contains(" 200 ") => open.push(conn),
            // The start-up check's connection may not be gone yet.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    let mut extra = connect(&g).await;
    let (status, body) = ask(&mut extra, "/healthz").await.expect("an answer before the close");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, "too many open connections to this server; retry in a moment\n");
    assert!(ask(&mut extra, "/healthz").await.is_none(), "the refused connection is closed");

    for conn in &mut open {
        let (status, _) = ask(conn, "/healthz").await.expect("an open connection is still served");
        assert!(status.contains(" 200 "), "{status}");
    }
    // A place freed is a place for the next client.
    open.truncate(15);
    wait_for("a new connection to be served", Duration::from_secs(10), || async {
        let mut conn = connect(&g).await;
        ask(&mut conn, "/healthz").await.filter(|(s, _)| s.contains(" 200 "))
    })
    .await;
    g.process.wait_log("open connections at the cap: refusing new ones", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let dir = Dir::new("idle");
    let g = Gateway::start(&dir.0, &["--idle-timeout", "1s"]).await;
    let mut conn = connect(&g).await;
    assert!(ask(&mut conn, "/healthz").await.unwrap().0.contains(" 200 "));
    let idle = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.expect("closed within 10 s");
    assert_eq!(n.unwrap(), 0, "the gateway closed the connection");
    let after = idle.elapsed();
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the idle timeout");
}
