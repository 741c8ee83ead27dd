//! One local replica: a `watchdog` child process on loopback ports, its output sent to the log
//! hub, reported ready once its `/_/ready` answers 200, and reported again when it exits.

use std::{net::SocketAddr, path::Path, process::Stdio, sync::Arc, time::Duration};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
};

use super::{logs::LogHub, template::Template};
use crate::provider::Endpoint;

pub enum Event {
    Ready(u64, Arc<Endpoint>),
    Exited(u64, String),
}

/// A running replica. It dies with the gateway (parent-death signal) if nothing stops it first.
pub struct Replica {
    pub id: u64,
    pub addr: SocketAddr,
    pid: Option<Pid>,
    exited: tokio::sync::watch::Receiver<bool>,
}

pub fn start(
    id: u64,
    template: &Template,
    watchdog: &Path,
    logs: &LogHub,
    events: mpsc::Sender<Event>,
) -> std::io::Result<Replica> {
    use flint_http::port::{reserve, unclaimed};
    let (port, metrics_port, upstream_port) = (reserve()?, reserve()?, unclaimed()?);
    let mut command = tokio::process::Command::new(watchdog);
    command
        .envs(template.watchdog_env(port, metrics_port, upstream_port))
        .current_dir(&template.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    crate::child::dies_with_gateway(&mut command);
    let mut child = command.spawn()?;
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    let instance = format!("{}-{}-{id}", template.name, template.version.as_str());
    for reader in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (logs, ns, name, instance) =
            (logs.clone(), template.namespace.clone(), template.name.clone(), instance.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                logs.line(&ns, &name, &instance, &line);
            }
        });
    }

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    tracing::debug!(function = %template.name, replica = id, pid = ?pid, %addr, "replica started");
    let (exited_tx, exited) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let ready_events = events.clone();
        let wait_ready = async move {
            wait_ready(addr).await;
            let _ = ready_events.send(Event::Ready(id, Endpoint::new(addr))).await;
            std::future::pending::<()>().await
        };
        let status = tokio::select! {
            status = child.wait() => status,
            _ = wait_ready => unreachable!("waiting for readiness never finishes by itself"),
        };
        let _ = exited_tx.send(true);
        let how = match status {
            Ok(s) => flint_http::exit::describe(s),
            Err(e) => format!("could not be waited for: {e}"),
        };
        let _ = events.send(Event::Exited(id, how)).await;
    });
    Ok(Replica { id, addr, pid, exited })
}

impl Replica {
    /// Asks the watchdog to drain and stop; kills it if it is still there after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.exited.wait_for(|e| *e)).await.is_err()
            && let Some(pid) = self.pid
        {
            tracing::warn!(replica = self.id, "replica did not stop within {grace:?}; killing it");
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }
}

/// Polls `/_/ready` until it answers 200; quickly at first, since this is on the cold-start path.
async fn wait_ready(addr: SocketAddr) {
    let mut pause = Duration::from_millis(2);
    loop {
        if ready(addr).await {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

async fn ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"GET /_/ready HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n").await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(&head == b"HTTP/1.1 200")
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.is_ok_and(|r| r.unwrap_or(false))
}
