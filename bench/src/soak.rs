//! A long run of mixed traffic against a local-mode gateway, a minute-long cycle repeated:
//! steady load with a replica killed in the middle, a burst that scales out, an idle gap that
//! scales to zero, a cold start, a canary added and removed again with SIGHUP. Every call is a
//! GET (idempotent, so a killed replica's calls are sent again): any answer but 200 is an
//! unexpected error. Prints requests, errors by status and p50/p99 per phase, and the gateway's
//! resident memory over time.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use flint_testkit::{Caller, children, rss};
use hyper::Method;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::time::Instant;

use crate::{LocalHello, local_function, write_hello};

const SCALE: &str = "  scale: {min: 0, max: 4, target: 8, zeroAfter: 5s}\n";
const CANARY: &str = "  canary: {image: bench-canary, weight: 50}\n";
const TUNING: &[&str] =
    &["--autoscale-tick", "250ms", "--stable-window", "6s", "--panic-window", "2s", "--scale-down-delay", "3s"];

/// One phase of the cycle: its name, how long, how many callers.
const CYCLE: &[(&str, u64, usize)] = &[
    ("steady (a replica killed)", 15, 8),
    ("burst", 10, 64),
    ("idle", 10, 0),
    ("cold start", 5, 8),
    ("canary added", 10, 8),
    ("canary removed", 10, 8),
];

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<String, u64>,
    /// Replicas (all versions) at the end of each time the phase ran.
    replicas: Vec<u64>,
    killed: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.replicas.extend(other.replicas);
        self.killed += other.killed;
    }
}

pub async fn run(duration: Duration) {
    let local = local_function(SCALE, TUNING).await;
    let gateway_pid = local.gateway.pid();
    println!("# soak: {} s of mixed traffic in local mode, a {} s cycle", duration.as_secs(), cycle_secs());
    let started = Instant::now();
    let sampling = Arc::new(AtomicBool::new(true));
    let memory = tokio::spawn(sample_rss(gateway_pid, sampling.clone()));
    let mut phases: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut cycles = 0;
    while started.elapsed() + Duration::from_secs(cycle_secs()) <= duration {
        cycles += 1;
        for &(name, secs, callers) in CYCLE {
            let tally = phase(&local, name, Duration::from_secs(secs), callers).await;
            phases.entry(name).or_default().merge(tally);
        }
    }
    sampling.store(false, Ordering::Relaxed);
    let samples = memory.await.unwrap();

    println!("{cycles} cycles in {:.0} s", started.elapsed().as_secs_f64());
    println!("| phase | requests | not 200 | statuses | p50 ms | p99 ms | replicas at its end | replicas killed |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut unexpected = 0;
    for &(name, _, _) in CYCLE {
        let Some(t) = phases.get_mut(name) else { continue };
        t.latencies_us.sort_unstable();
        let pick = |q: f64| {
            let v = &t.latencies_us;
            if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0 }
        };
        let bad: u64 = t.statuses.iter().filter(|(k, _)| *k != "200").map(|(_, v)| v).sum();
        unexpected += bad;
        let statuses: Vec<String> = t.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let replicas: Vec<String> = t.replicas.iter().map(u64::to_string).collect();
        println!(
            "| {name} | {} | {bad} | {} | {:.2} | {:.2} | {} | {} |",
            t.latencies_us.len(),
            statuses.join(", "),
            pick(0.5),
            pick(0.99),
            replicas.join(" "),
            t.killed
        );
    }
    println!("unexpected errors: {unexpected} (goal 0)");
    report_memory(&samples);
}

fn cycle_secs() -> u64 {
    CYCLE.iter().map(|(_, s, _)| s).sum()
}

/// Sets the phase's scene, then calls `hello` from `callers` tasks until the phase ends.
async fn phase(local: &LocalHello, name: &str, length: Duration, callers: usize) -> Tally {
    let until = Instant::now() + length;
    match name {
        "canary added" => reload(local, &format!("{SCALE}{CANARY}")),
        "canary removed" => reload(local, SCALE),
        _ => {}
    }
    let killer = name.starts_with("steady").then(|| {
        let gateway = local.gateway.pid();
        tokio::spawn(async move {
            tokio::time::sleep(length / 2).await;
            // A replica is a watchdog child of the gateway; its function dies with it.
            let replica = children(gateway).first().copied();
            replica.is_some_and(|r| kill(Pid::from_raw(r), Signal::SIGKILL).is_ok())
        })
    });
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let url = local.url.clone();
            tokio::spawn(async move {
                let caller = Caller::new();
                let mut tally = Tally::default();
                while Instant::now() < until {
                    let began = Instant::now();
                    let status = match caller.call(Method::GET, &url, &[], "").await {
                        Ok(r) => r.status.to_string(),
                        Err(_) => "no answer".to_string(),
                    };
                    tally.latencies_us.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    *tally.statuses.entry(status).or_default() += 1;
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.unwrap());
    }
    tokio::time::sleep_until(until).await;
    if let Some(k) = killer {
        tally.killed += u64::from(k.await.unwrap());
    }
    let status = flint_testkit::get(&format!("http://127.0.0.1:{}/system/function/hello", local.port)).await;
    let replicas = status.ok().and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok());
    tally.replicas.push(replicas.and_then(|v| v["replicas"].as_u64()).unwrap_or_default());
    tally
}

/// Rewrites `hello`'s manifest and tells the gateway to read it again.
fn reload(local: &LocalHello, tail: &str) {
    write_hello(&local.dir, tail);
    local.gateway.signal(Signal::SIGHUP);
}

/// The gateway's resident memory every 5 s: (seconds since the start, KiB).
async fn sample_rss(pid: Pid, sampling: Arc<AtomicBool>) -> Vec<(u64, u64)> {
    let started = Instant::now();
    let mut samples = Vec::new();
    while sampling.load(Ordering::Relaxed) {
        samples.push((started.elapsed().as_secs(), rss(pid) / 1024));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    samples
}

fn report_memory(samples: &[(u64, u64)]) {
    let warm: Vec<_> = samples.iter().filter(|(t, _)| *t >= cycle_secs()).collect();
    let (Some(first), Some(last)) = (warm.first(), warm.last()) else {
        println!("gateway RSS: too short a run to say");
        return;
    };
    let max = warm.iter().map(|(_, kib)| *kib).max().unwrap_or_default();
    let min = warm.iter().map(|(_, kib)| *kib).min().unwrap_or_default();
    println!(
        "gateway RSS after the first cycle: {:.1} MiB at {} s, {:.1} MiB at {} s (min {:.1}, max {:.1}); goal: flat",
        first.1 as f64 / 1024.0,
        first.0,
        last.1 as f64 / 1024.0,
        last.0,
        min as f64 / 1024.0,
        max as f64 / 1024.0
    );
    let series: Vec<String> =
        samples.iter().step_by(6).map(|(t, kib)| format!("{t}s {:.1}", *kib as f64 / 1024.0)).collect();
    println!("gateway RSS every 30 s (MiB): {}", series.join(", "));
}
