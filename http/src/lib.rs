//! HTTP pieces the watchdog and the gateway share, so that both proxies behave alike:
//! - [`body`]: the one boxed body type, and [`body::watched`] to keep a guard alive as long as a
//!   response body;
//! - [`headers`]: hop-by-hop headers, never forwarded;
//! - [`client`]: a keep-alive connection goes back to its pool once its response is read;
//! - [`server`]: the accept loop (HTTP/1.1 + HTTP/2, TCP_NODELAY, graceful stop), which parks idle
//!   HTTP/1 connections without hyper's buffers;
//! - [`logs`]: the watchdog's log lines written off the request path, in batches;
//! - [`exit`]: process exit statuses in words;
//! - [`port`]: loopback ports reserved for a process that binds them later.

pub mod body;
pub mod client;
pub mod exit;
pub mod headers;
pub mod logs;
pub mod port;
pub mod server;

pub use body::{Body, BoxError, empty, full};

/// An error and its sources on one line: "client error (Connect): tcp connect error: Connection refused".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
