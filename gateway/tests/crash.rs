//! Replicas killed under load (local mode, real processes): what the resend rule promises, in
//! numbers. Every invocation records its id and the pid of the watchdog that ran it, so the
//! test can tell a request that ran twice, one that never ran, and one that was running on a
//! replica at the moment it was killed.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Dir, Gateway, SECS_20};
use flint_testkit::{children, wait_for};
use hyper::Method;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::time::Instant;

/// Each call appends "ID WATCHDOG-PID" to runs.log before it answers its id. A process whose
/// watchdog was killed before it started records init's pid, 1.
const RECORDING: &str = "  image: x\n  command: [sh, -c, 'echo \"$Http_X_Id $PPID\" >> runs.log; sleep 0.02; echo \"$Http_X_Id\"']\n  \
                         scale: {min: 3, max: 3}";

/// Replicas killed, one every 2 s, while the load runs.
const KILLS: usize = 9;

#[derive(Default)]
struct Outcomes {
    /// (id, method, status or none, body or error) of every call.
    calls: Vec<(String, Method, Option<u16>, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_replicas_under_load_loses_no_request_it_could_resend_and_runs_no_post_twice() {
    let dir = Dir::new("crash-load");
    dir.function("ledger", RECORDING, &[]);
    // The request path's debug lines (resends, and why) explain any failure below.
    let filter = "info,flint_gateway::invoke=debug,flint_gateway::provider::local=debug";
    let g =
        Arc::new(Gateway::start_logging(&dir.0, flint_testkit::free_port(), &["--autoscale", "false"], filter).await);
    g.wait_available("ledger", 3).await;

    // The load runs until the last kill, however long a loaded machine takes to get there.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    // 16 keep-alive callers, half GET and half POST, as fast as the function answers.
    let callers: Vec<_> = (0..16)
        .map(|c| {
            let (g, outcomes, stop) = (g.clone(), outcomes.clone(), stop.clone());
            tokio::spawn(async move {
                let caller = flint_testkit::Caller::new();
                let method = if c % 2 == 0 { Method::GET } else { Method::POST };
                let url = g.url("/function/ledger");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("{c}-{n}");
                    let r = caller.call(method.clone(), &url, &[("x-id", &id), ("x-call-id", &id)], id.clone()).await;
                    let (status, text) = match r {
                        Ok(r) => (Some(r.status), r.text()),
                        Err(e) => (None, e),
                    };
                    outcomes.lock().unwrap().calls.push((id, method.clone(), status, text));
                }
            })
        })
        .collect();

    // One replica SIGKILLed every 2 s, each one not killed before (a killed one may still show
    // as live for a moment after the signal).
    let mut killed = HashSet::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = wait_for("a live replica to kill", SECS_20, || async {
            let live: Vec<i32> =
                children(g.process.pid()).into_iter().filter(|p| !killed.contains(&p.to_string())).collect();
            live.get(fastrand::usize(..live.len().max(1))).copied()
        })
        .await;
        nix::sys::signal::kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        killed.insert(victim.to_string());
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }

    // What ran where: id -> the watchdogs that ran it.
    let log = std::fs::read_to_string(dir.0.join("ledger/runs.log")).unwrap();
    let mut ran: HashMap<String, Vec<String>> = HashMap::new();
    for line in log.lines() {
        let (id, pid) = line.split_once(' ').unwrap_or((line, ""));
        ran.entry(id.to_string()).or_default().push(pid.to_string());
    }
    let on_killed = |pid: &String| pid == "1" || killed.contains(pid);
    let calls = std::mem::take(&mut outcomes.lock().unwrap().calls);
    let gateway_log = g.process.log();
    // The gateway's lines about a call, and about the replicas it went to.
    let about = |id: &str| -> String {
        let needle = format!("\"{id}\"");
        let lines: Vec<&str> = gateway_log.lines().filter(|l| l.contains(&needle)).collect();
        let replicas: Vec<&str> =
            lines.iter().filter_map(|l| l.split("replica=").nth(1)?.split_whitespace().next()).collect();
        let about_replicas = gateway_log.lines().filter(|l| replicas.iter().any(|r| l.contains(&format!("addr={r}"))));
        lines.iter().copied().chain(about_replicas).collect::<Vec<_>>().join("\n")
    };
    let total = calls.len();
    let (mut failed_posts, mut failed_unrun, mut cut_gets, mut cut_posts) = (0, 0, 0, 0);
    for (id, method, status, text) in &calls {
        let runs = ran.get(id).cloned().unwrap_or_default();
        if *method == Method::POST {
            assert!(runs.len() <= 1, "POST {id} ran {} times: {runs:?}\n{}", runs.len(), about(id));
        }
        if *status == Some(200) && text.trim() == id {
            continue;
        }
        // A request may fail only if a replica had it when that replica was killed (it ran
        // there, or the watchdog was killed before it started the process), never if a live
        // replica ran it.
        assert!(
            runs.iter().all(on_killed),
            "{method} {id} failed but ran on a live replica ({runs:?}): {status:?} {text}\n{}",
            about(id)
        );
        // Any request whose answer had begun when its replica died can only be cut off (the
        // status is on its way); only the caller can retry it.
        let cut_off = status.is_none() && text.starts_with("body:");
        if *method == Method::GET {
            // An idempotent request is sent again unless its answer had begun.
            assert!(cut_off, "GET {id} failed: {status:?} {text}\n{}", about(id));
            cut_gets += 1;
        } else if cut_off {
            cut_posts += 1;
        } else {
            assert_eq!(*status, Some(502), "POST {id}: {text}\n{}", about(id));
            assert!(text.contains("not sent again"), "POST {id}: {text}");
            failed_posts += 1;
            failed_unrun += runs.is_empty() as usize;
        }
    }
    // Requests the gateway stopped waiting on because their replica's process had ended while
    // their connection stayed silent (it normally breaks at once).
    let abandoned = gateway_log.lines().filter(|l| l.contains("process ended with the request on it")).count();
    println!(
        "crash under load: {total} calls over {:.1} s, {} replicas killed; failed: {failed_posts} POST \
         ({failed_unrun} of them before their process started) and {cut_posts} POST cut off after its \
         answer began, 0 GET before its answer began, {cut_gets} GET cut off after its answer began; {abandoned} attempts given up on a dead replica's silent connection",
        started.elapsed().as_secs_f64(),
        killed.len(),
    );
    assert!(total > 500, "only {total} calls: the load did not flow");
}
