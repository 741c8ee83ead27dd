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

/// The processes the watchdog started and waits for itself (their group leaders).
static OWN: Mutex<std::collections::BTreeSet<i32>> = Mutex::new(std::collections::BTreeSet::new());

impl Group {
    /// Made right after the spawn (nothing else runs on the watchdog's one runtime thread in
    /// between), it also marks the process as one the reaper leaves to its waiter.
    pub fn of(child: &tokio::process::Child) -> Option<Self> {
        let pid = child.id()? as i32;
        OWN.lock().unwrap().insert(pid);
        Some(Group(Pid::from_raw(pid)))
    }

    pub fn signal(&self, signal: Signal) {
        // ESRCH (already gone) is the normal case after the process exited.
        let _ = killpg(self.0, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        OWN.lock().unwrap().remove(&self.0.as_raw());
    }
}

/// As a container's PID 1, the watchdog adopts every process of the container whose parent
/// ended (a function's background child outliving its handler), and the kernel keeps each as a
/// zombie until PID 1 waits for it: left alone, they fill the container's process table. This
/// waits for the zombies among its children that it did not start itself (those are waited for
/// by the invocation that started them); how many it reaped.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten();
    for task in tasks {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
        for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
            if zombie && !OWN.lock().unwrap().contains(&pid) {
                let flags = nix::sys::wait::WaitPidFlag::WNOHANG;
                if nix::sys::wait::waitpid(Pid::from_raw(pid), Some(flags)).is_ok() {
                    reaped += 1;
                }
            }
        }
    }
    reaped
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

#[cfg(test)]
mod reaper_tests {
    /// What a container's PID 1 sees, here as a subreaper: an orphan of its child is its own
    /// to wait for, and one it started itself is left to its waiter.
    #[test]
    fn orphans_are_reaped_and_own_children_are_not() {
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            // The shell leaves a short sleep behind, which this process adopts.
            let mut sh = tokio::process::Command::new("sh").args(["-c", "sleep 0.1 &"]).spawn().unwrap();
            sh.wait().await.unwrap();
            let mut own = super::command(&["sleep".to_string(), "0.1".to_string()]).spawn().unwrap();
            let group = super::Group::of(&own).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            assert!(super::reap_orphans() >= 1, "the adopted sleep was left a zombie");
            assert!(own.wait().await.unwrap().success(), "the watchdog's own child was taken from its waiter");
            drop(group);
        });
    }
}
