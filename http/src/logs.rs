//! Where the watchdog's log lines go (one per invocation by default, and the function's output):
//! off the request path, in batches. (The gateway still writes its lines as they come: its tests
//! and its operators read a line as soon as what it tells has happened.)
//!
//! A line is appended to a buffer in memory: no system call and no other thread woken for it.
//! One thread writes what has gathered to stdout, in one write, `GATHER` after the first line
//! of a batch (at once when `WRITE_AT` bytes have gathered, and at exit). Written one by one,
//! with a wake-up of a writer thread each, the lines cost the watchdog a quarter of its work per
//! request. A slow reader of the logs never stalls a request: beyond `LIMIT` bytes waiting, lines
//! are dropped, and how many is said once the reader catches up.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// How long lines gather before they are written.
const GATHER: Duration = Duration::from_millis(20);
/// Written at once from this many bytes waiting.
const WRITE_AT: usize = 64 * 1024;
/// Lines beyond this many bytes waiting are dropped.
const LIMIT: usize = 4 * 1024 * 1024;

/// Appends whole lines (each `write` is one line or more) to the batch; cheap to clone.
#[derive(Clone)]
pub struct Writer(Arc<Shared>);

struct Shared {
    waiting: Mutex<Waiting>,
    /// Told when a batch begins, when it is large, and at exit.
    wake: Condvar,
}

#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    dropped: u64,
    stopping: bool,
}

/// Writes what is left and stops the writing thread when dropped: keep it until exit.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer whose batches go to `out`, written by a thread of its own.
pub fn writer(out: impl Write + Send + 'static) -> (Writer, Guard) {
    let shared = Arc::new(Shared { waiting: Mutex::default(), wake: Condvar::new() });
    let writing = shared.clone();
    let thread = std::thread::Builder::new()
        .name("logs".into())
        .spawn(move || write_batches(&writing, out))
        .expect("a thread for the logs");
    (Writer(shared.clone()), Guard { shared, thread: Some(thread) })
}

/// Sets up `tracing` (text or JSON, level from `RUST_LOG`, default info) to write to stdout
/// through a [`Writer`], which is returned for other lines (a function's output).
pub fn init(json: bool) -> (Writer, Guard) {
    let (writer, guard) = self::writer(io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer.clone());
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    (writer, guard)
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let (dropped, stopping) = {
            let mut waiting = shared.waiting.lock().unwrap();
            while waiting.bytes.is_empty() && !waiting.stopping {
                waiting = shared.wake.wait(waiting).unwrap();
            }
            if !waiting.stopping && waiting.bytes.len() < WRITE_AT {
                // Let the batch gather.
                waiting = shared.wake.wait_timeout(waiting, GATHER).unwrap().0;
            }
            std::mem::swap(&mut batch, &mut waiting.bytes);
            (std::mem::take(&mut waiting.dropped), waiting.stopping)
        };
        // Nothing to do when stdout is gone but go on draining, so that no one waits on us.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        if dropped > 0 {
            let _ = writeln!(out, "{dropped} log lines were dropped: the logs were read too slowly")
                .and_then(|()| out.flush());
        }
        batch.clear();
        if stopping && shared.waiting.lock().unwrap().bytes.is_empty() {
            return;
        }
    }
}

impl Write for Writer {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut waiting = self.0.waiting.lock().unwrap();
        let before = waiting.bytes.len();
        if before + line.len() > LIMIT {
            waiting.dropped += 1;
        } else {
            waiting.bytes.extend_from_slice(line);
            let after = waiting.bytes.len();
            if before == 0 || (before < WRITE_AT && after >= WRITE_AT) {
                self.0.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.waiting.lock().unwrap().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writing thread wrote, and how many writes it made.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut out = self.0.lock().unwrap();
            out.0.extend_from_slice(buf);
            out.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_batches_and_all_of_them_by_exit() {
        let out = Out::default();
        let (mut writer, guard) = writer(out.clone());
        for i in 0..1000 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        std::thread::sleep(GATHER * 5);
        let (text, writes) = out.0.lock().unwrap().clone();
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 1000, "gathered lines are written");
        assert!(writes < 10, "1,000 lines took {writes} writes");
        writer.write_all(b"the last\n").unwrap();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().0.clone()).unwrap();
        assert!(text.starts_with("line 0\nline 1\n") && text.ends_with("line 999\nthe last\n"), "{text}");
    }

    /// A reader that takes nothing until told to.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Out);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, turned) = &*self.0;
            let _open = turned.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_holds_no_writer_and_hears_how_many_lines_were_dropped() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Out::default();
        let (mut writer, guard) = writer(Stuck(gate.clone(), out.clone()));
        let line = [b'x'; 1023].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let started = std::time::Instant::now();
        // Three times what may wait: the first batch is taken (and stuck), then LIMIT waits.
        for _ in 0..3 * LIMIT / line.len() {
            writer.write_all(&line).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "writing lines was held up by the reader");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().0.clone()).unwrap();
        let written = text.lines().filter(|l| l.starts_with('x')).count();
        let said = text.lines().find(|l| l.ends_with("log lines were dropped: the logs were read too slowly"));
        let dropped: usize = said.expect("the drop is said").split(' ').next().unwrap().parse().unwrap();
        assert_eq!(written + dropped, 3 * LIMIT / line.len(), "every line is written or counted");
        // The batch taken before the reader stuck, and LIMIT after it.
        assert!(written * line.len() <= 2 * LIMIT, "{written} lines written");
    }
}
