//! Many idle keep-alive client connections: each sends one request, all stay open and idle,
//! then each sends a second request on the same connection.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub struct Held {
    pub opened: usize,
    pub answered: usize,
    pub errors: usize,
    pub idle_secs: u64,
}

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n";

/// Reads one `/healthz` answer (a small fixed response) and says whether it was a 200.
async fn exchange(stream: &mut TcpStream) -> bool {
    if stream.write_all(REQUEST).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 512];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"OK\n\n") && !got.ends_with(b"OK\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

pub async fn hold(port: u16, count: usize) -> Held {
    raise_fd_limit();
    let mut streams = Vec::with_capacity(count);
    let mut errors = 0;
    for _ in 0..count {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut s) => {
                if exchange(&mut s).await {
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
    let mut answered = 0;
    for s in &mut streams {
        if exchange(s).await {
            answered += 1;
        } else {
            errors += 1;
        }
    }
    Held { opened, answered, errors, idle_secs }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
