//! Many idle keep-alive client connections: each sends one request, all stay open and idle,
//! then each sends a second request on the same connection. What the server's memory grew by
//! while they were open is their cost.

use std::time::Duration;

use flint_testkit::rss;
use nix::unistd::Pid;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub struct Held {
    pub opened: usize,
    pub answered: usize,
    pub errors: usize,
    pub idle_secs: u64,
    /// The server's resident memory before the connections opened, and while they were idle.
    pub rss_before: u64,
    pub rss_idle: u64,
}

impl Held {
    /// One line: what each idle connection cost `server`.
    pub fn report(&self, server: &str) -> String {
        format!(
            "{server:>16}: {} opened, {} answering again after {}s idle, {} errors; RSS {:.1} -> {:.1} MiB, {:.1} KiB per connection",
            self.opened,
            self.answered,
            self.idle_secs,
            self.errors,
            self.rss_before as f64 / 1048576.0,
            self.rss_idle as f64 / 1048576.0,
            self.rss_idle.saturating_sub(self.rss_before) as f64 / 1024.0 / self.opened.max(1) as f64
        )
    }
}

/// Asks `request` and reads the answer (a small one with a length) and says whether it was a 200.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> bool {
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 512];
    let mut got = Vec::new();
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
            if length.is_some_and(|length| got.len() >= end + 4 + length) {
                return got.starts_with(b"HTTP/1.1 200");
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
}

/// Holds `count` connections to `port` idle, each asked `GET path` before and after, and reads
/// the resident memory of `server` (the process that holds the connections) meanwhile.
pub async fn hold(port: u16, path: &str, count: usize, server: Pid) -> Held {
    let rss_before = rss(server);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let request = request.as_bytes();
    let mut streams = Vec::with_capacity(count);
    let mut errors = 0;
    for _ in 0..count {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut s) => {
                if exchange(&mut s, request).await {
                    streams.push(s);
                } else {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
    let opened = streams.len();
    let idle_secs = 5;
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let rss_idle = rss(server);
    let mut answered = 0;
    for s in &mut streams {
        if exchange(s, request).await {
            answered += 1;
        } else {
            errors += 1;
        }
    }
    Held { opened, answered, errors, idle_secs, rss_before, rss_idle }
}

/// Room for many connections, for this process and the servers it starts.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
