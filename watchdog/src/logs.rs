//! Where the watchdog's own log lines (through `tracing`) and the function's forwarded output go:
//! one non-blocking writer, so a slow log reader never stalls an invocation and lines from
//! different sources never interleave mid-line.

use std::io::Write;

use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Writes the function's output lines, optionally prefixed with the stream's name.
#[derive(Clone)]
pub struct Output {
    writer: NonBlocking,
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
/// until exit: dropping it flushes what is queued.
pub fn init(json: bool, prefix: bool) -> (Output, WorkerGuard) {
    // The default queue preallocates 128k lines (4 MiB): more than the whole idle watchdog.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer.clone());
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    (Output { writer, prefix }, guard)
}
