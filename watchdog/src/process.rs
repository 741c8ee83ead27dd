//! Starting the function's process: in a process group of its own (so a timeout or shutdown
//! stops everything it started), with its output forwarded line by line.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::logs::Output;

/// The function's process group. Dropping it kills the whole group: whatever the function
/// started must not outlive its invocation (streaming) or the watchdog (http).
pub struct Group(Pid);

impl Group {
    pub fn of(child: &tokio::process::Child) -> Option<Self> {
        child.id().map(|pid| Group(Pid::from_raw(pid as i32)))
    }

    pub fn signal(&self, signal: Signal) {
        // ESRCH (already gone) is the normal case after the process exited.
        let _ = killpg(self.0, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// A command for `argv` that starts its own process group, with piped stdio, and dies with
/// the watchdog: a watchdog killed outright (the OOM killer, SIGKILL) runs no clean-up, and its
/// function would live on, holding its port.
pub fn command(argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watchdog = nix::unistd::getpid();
    // SAFETY: prctl and getppid are async-signal-safe and touch only the child being set up.
    // The signal follows the thread that forked, which here is the watchdog's only runtime
    // thread (a current-thread runtime), alive as long as the watchdog.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The watchdog may have died before the line above took effect.
            if nix::unistd::getppid() != watchdog {
                return Err(std::io::Error::other("the watchdog exited while starting the function"));
            }
            Ok(())
        });
    }
    cmd
}

/// The last bytes a stream wrote, kept to explain a failure.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<String>>);

const TAIL_LIMIT: usize = 4096;

impl Tail {
    fn push(&self, line: &str) {
        let mut tail = self.0.lock().unwrap();
        tail.push_str(line);
        tail.push('\n');
        if tail.len() > TAIL_LIMIT {
            let mut cut = tail.len() - TAIL_LIMIT;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
    }

    pub fn take(&self) -> String {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// Forwards `reader` line by line to the log until it closes; keeps a tail if asked. The
/// handle finishes at the stream's end: a reply built from the tail awaits it, since a process
/// can exit before the watchdog has read what it wrote last.
pub fn forward(
    reader: impl AsyncRead + Unpin + Send + 'static,
    stream: &'static str,
    out: Output,
    tail: Option<Tail>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            out.line(stream, &line);
            if let Some(tail) = &tail {
                tail.push(&line);
            }
        }
    })
}
