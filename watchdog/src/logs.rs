//! Where the watchdog's own log lines (through `tracing`) and the function's forwarded output go:
//! one batched writer off the request path (`flint_http::logs`), so a slow log reader never
//! stalls an invocation and lines from different sources never interleave mid-line.

use std::io::Write;

use flint_http::logs::{Guard, Writer};

/// Writes the function's output lines, optionally prefixed with the stream's name.
#[derive(Clone)]
pub struct Output {
    writer: Writer,
    prefix: bool,
}

impl Output {
    pub fn line(&self, stream: &str, line: &str) {
        let text = if self.prefix { format!("{stream}: {line}\n") } else { format!("{line}\n") };
        // A full log queue drops the line rather than block the function.
        let _ = self.writer.clone().write_all(text.as_bytes());
    }
}

/// Sets up `tracing` (text or JSON, level from `RUST_LOG`, default info). Keep the guard alive
/// until exit: dropping it writes what is waiting.
pub fn init(json: bool, prefix: bool) -> (Output, Guard) {
    let (writer, guard) = flint_http::logs::init(json);
    (Output { writer, prefix }, guard)
}
