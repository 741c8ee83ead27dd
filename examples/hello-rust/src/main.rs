//! A Flint function in Rust, standard library only: a small HTTP/1.1 server the watchdog
//! proxies to (mode=http). It listens on $PORT (local mode gives each replica its own) and
//! answers every request with a greeting and the body it was sent.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    thread,
};

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind $PORT");
    println!("hello-rust listening on {port}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = serve(stream);
        });
    }
}

/// Serves requests on one keep-alive connection until the client closes it.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let reply = format!("Hello from Rust! You said: {}\n", String::from_utf8_lossy(&body));
        write!(writer, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{reply}", reply.len())?;
    }
}
