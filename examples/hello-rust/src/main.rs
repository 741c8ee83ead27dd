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
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let body = match (chunked, length) {
            (true, _) => read_chunked(&mut reader)?,
            (false, length) if length <= MAX_BODY => Some(read_exact(&mut reader, length)?),
            _ => None,
        };
        let Some(body) = body else {
            // Said, and the connection closed: the rest of the body is not read.
            let reply = "request body over 1 MiB\n";
            return write!(
                writer,
                "HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            );
        };
        let reply = format!("Hello from Rust! You said: {}\n", String::from_utf8_lossy(&body));
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
    }
}

/// The largest body read: a caller's length is not a reason to allocate it.
const MAX_BODY: usize = 1 << 20;

fn read_exact(reader: &mut impl Read, length: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// A body whose length the caller did not know (streamed): chunks, each after its size in hex,
/// up to a chunk of size 0 and the trailers' empty line. `None`: over `MAX_BODY`.
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size > MAX_BODY - body.len() {
            return Ok(None);
        }
        if size == 0 {
            line.clear();
            while reader.read_line(&mut line)? > 0 && !matches!(line.as_str(), "\r\n" | "\n") {
                line.clear();
            }
            return Ok(Some(body));
        }
        body.extend(read_exact(reader, size)?);
        reader.read_line(&mut String::new())?;
    }
}
