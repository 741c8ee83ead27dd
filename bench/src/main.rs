//! `flint-bench`: Flint's performance figures, measured as ratios within one run so that the
//! machine's speed cancels out. `scripts/bench` builds release binaries and runs it.
//!
//! - `watchdog`: direct to a fast upstream vs. through the watchdog (http mode) at 1, 16 and 64
//!   connections, alternating; the watchdog's idle RSS, time to ready, and binary size;
//! - `upstream`: the fast upstream itself (started by the watchdog as its `fprocess`).

mod upstream;
mod wrk;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use flint_testkit::{Spawned, free_port, get, rss, wait_for};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `hello` on 127.0.0.1:PORT as fast as hyper can.
    Upstream { port: u16 },
    /// Direct vs. through the watchdog.
    Watchdog {
        /// Seconds of load per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds per connection count (direct and watchdog alternate within a round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join(name)
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Upstream { port } => upstream::serve(port).await,
        Command::Watchdog { seconds, rounds } => watchdog(Duration::from_secs(seconds), rounds).await,
    }
}

async fn watchdog(duration: Duration, rounds: usize) {
    let me = std::env::current_exe().unwrap();
    let watchdog = release_bin("watchdog");
    let (up_port, wd_port, wd_metrics) = (free_port(), free_port(), free_port());
    let fprocess = format!("{} upstream {up_port}", me.display());
    let upstream_url = format!("http://127.0.0.1:{up_port}");
    let (p, m) = (wd_port.to_string(), wd_metrics.to_string());
    let wd = Spawned::start(
        watchdog.to_str().unwrap(),
        &[],
        &[
            ("mode", "http"),
            ("fprocess", &fprocess),
            ("upstream_url", &upstream_url),
            ("port", &p),
            ("metrics_port", &m),
            ("bind_address", "127.0.0.1"),
            ("exec_timeout", "30s"),
            ("RUST_LOG", "warn"),
        ],
    );
    let ready = format!("http://127.0.0.1:{wd_port}/_/ready");
    wait_for("the watchdog to be ready", Duration::from_secs(10), || async {
        get(&ready).await.ok().filter(|r| r.status == 200)
    })
    .await;
    let idle_rss = rss(wd.pid());

    let direct = format!("http://127.0.0.1:{up_port}/");
    let through = format!("http://127.0.0.1:{wd_port}/");
    println!("# watchdog benchmark: {rounds} rounds x {}s per point, alternating", duration.as_secs());
    println!(
        "{:>5} {:>12} {:>12} {:>7} {:>11} {:>11} {:>10} {:>10} {:>7}",
        "conns", "direct rps", "watchdog rps", "ratio", "direct p50", "wd p50", "added p50", "wd p99", "errors"
    );
    for conns in [1, 16, 64] {
        let mut d = Vec::new();
        let mut w = Vec::new();
        for _ in 0..rounds {
            d.push(wrk::run(&direct, conns, duration));
            w.push(wrk::run(&through, conns, duration));
        }
        let (d, w) = (median(&d), median(&w));
        println!(
            "{conns:>5} {:>12.0} {:>12.0} {:>7.3} {:>9.0}us {:>9.0}us {:>8.0}us {:>8.0}us {:>7}",
            d.rps,
            w.rps,
            w.rps / d.rps,
            d.p50_us,
            w.p50_us,
            w.p50_us - d.p50_us,
            w.p99_us,
            d.errors + w.errors
        );
    }
    drop(wd);

    let ready_ms = time_to_ready(&watchdog, 20).await;
    let size = std::fs::metadata(&watchdog).unwrap().len();
    println!("idle RSS: {:.2} MiB (target <= 4 MiB)", idle_rss as f64 / 1048576.0);
    println!(
        "time to ready (streaming mode, spawn -> /_/ready 200), median of 20: {:.2} ms, max {:.2} ms (target <= 10 ms)",
        ready_ms.0, ready_ms.1
    );
    println!("release binary: {:.2} MiB stripped (target <= 6 MiB)", size as f64 / 1048576.0);
}

/// Medians of the runs, field by field.
fn median(loads: &[wrk::Load]) -> wrk::Load {
    let pick = |f: fn(&wrk::Load) -> f64| {
        let mut v: Vec<f64> = loads.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    wrk::Load {
        rps: pick(|l| l.rps),
        p50_us: pick(|l| l.p50_us),
        p99_us: pick(|l| l.p99_us),
        errors: loads.iter().map(|l| l.errors).sum(),
    }
}

/// Median and max milliseconds from spawning the watchdog to its first 200 on `/_/ready`.
async fn time_to_ready(watchdog: &std::path::Path, runs: usize) -> (f64, f64) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let (port, metrics) = (free_port(), free_port());
        let (p, m) = (port.to_string(), metrics.to_string());
        let started = std::time::Instant::now();
        let wd = Spawned::start(
            watchdog.to_str().unwrap(),
            &[],
            &[
                ("fprocess", "cat"),
                ("port", &p),
                ("metrics_port", &m),
                ("bind_address", "127.0.0.1"),
                ("RUST_LOG", "warn"),
            ],
        );
        let url = format!("http://127.0.0.1:{port}/_/ready");
        loop {
            if get(&url).await.is_ok_and(|r| r.status == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(wd);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}
