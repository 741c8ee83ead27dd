//! Where one hop's time goes: `perf record` (Debian's `linux-perf`) on the watchdog or the
//! gateway while `wrk` loads it at 64 connections, then the functions that took the most CPU
//! samples in that process. Symbols need a build that keeps them:
//! `cargo build --profile profiling --bins` and `target/profiling/flint-bench profile …`.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{local_function, release_bin, start_watchdog, wrk};

pub async fn run(what: &str, duration: Duration) {
    // What serves the load, kept until the end.
    let (pid, url, _serving): (_, _, Box<dyn std::any::Any>) = match what {
        "watchdog" => {
            let behind = start_watchdog(&release_bin("watchdog")).await;
            (behind.watchdog.pid(), format!("http://127.0.0.1:{}/", behind.port), Box::new(behind))
        }
        "gateway" => {
            // The gateway on its own: its replica is the fast upstream itself.
            let bare = crate::BareReplica::write();
            let local =
                local_function("  scale: {min: 1, max: 1}\n", &["--watchdog", bare.path.to_str().unwrap()]).await;
            (local.gateway.pid(), local.url.clone(), Box::new((local, bare)))
        }
        other => panic!("profile watchdog|gateway, not {other}"),
    };
    let data = std::env::temp_dir().join(format!("flint-bench-perf-{}.data", std::process::id()));
    let mut perf = Command::new("perf")
        .args(["record", "-F", "1999", "-o", data.to_str().unwrap(), "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf is installed (Debian: linux-perf)");
    std::thread::sleep(Duration::from_millis(500));
    let load = wrk::run(&url, 64, duration);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(perf.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    perf.wait().unwrap();
    println!("# {what} at 64 connections: {:.0} rps, p50 {:.0}us, p99 {:.0}us", load.rps, load.p50_us, load.p99_us);
    for (title, sort, lines) in [("by binary", "dso", 6), ("by function", "dso,symbol", 30)] {
        println!("# samples {title}");
        let report = Command::new("perf")
            .args(["report", "-i", data.to_str().unwrap(), "--stdio", "--no-children", "--sort", sort])
            .args(["--percent-limit", "0.5"])
            .output()
            .expect("perf report");
        let text = String::from_utf8_lossy(&report.stdout);
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).take(lines) {
            // Columns are set apart by runs of spaces; perf pads the line with more after them.
            let columns: Vec<&str> = line.split("  ").map(str::trim).filter(|c| !c.is_empty() && *c != "-").collect();
            println!("  {}", columns.join("  "));
        }
    }
    let _ = std::fs::remove_file(data);
}
