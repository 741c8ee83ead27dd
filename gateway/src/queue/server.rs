//! Local mode's own NATS: `nats-server -js` as a child of the gateway, on a loopback port it
//! picks itself, its JetStream data in a folder (so queued calls survive a gateway restart),
//! killed with the gateway (parent-death signal) and stopped with it.
//!
//! Its Go garbage collector runs at `GOGC=400` unless the gateway's environment sets `GOGC`:
//! at Go's default (100), its collections under load added a quarter to the asynchronous path's
//! p99 (`scripts/bench async`, 64 callers: 11.9 ms against 8.9 ms, same run) and cost a tenth
//! of its CPU, where 400 costs about twice the server's resident memory (56 → 105–123 MB under
//! that load).

use std::{path::Path, process::Stdio, time::Duration};

use nix::sys::signal::Signal;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub struct NatsServer {
    child: Child,
    pub url: String,
    /// The user and password it asks of clients: made up at each start, known to this gateway
    /// only (not on a command line other users of the machine can read).
    pub login: (String, String),
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot start {program}: {why} (install Debian's nats-server, or pass --nats-url; --nats-url off runs without asynchronous invocations)"
    )]
    Spawn { program: String, why: String },
    #[error("{program} did not come up within {timeout:?}; its last words:\n{log}")]
    NotReady { program: String, timeout: Duration, log: String },
}

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// `GOGC` for nats-server when the gateway's environment has none.
const GOGC: &str = "400";

/// The `GOGC` the child gets from the gateway, or else local mode's own.
fn go_gc(inherited: Option<std::ffi::OsString>) -> std::ffi::OsString {
    inherited.unwrap_or_else(|| GOGC.into())
}

impl NatsServer {
    /// Starts `program` with JetStream storing under `store`, and waits until it listens.
    pub async fn start(program: &str, store: &Path) -> Result<NatsServer, ServerError> {
        let spawn_error = |why: String| ServerError::Spawn { program: program.to_string(), why };
        std::fs::create_dir_all(store).map_err(|e| spawn_error(format!("{}: {e}", store.display())))?;
        let login = ("flint".to_string(), secret().map_err(|e| spawn_error(format!("/dev/urandom: {e}")))?);
        let config = store.join("flint-login.conf");
        write_private(&config, &login_config(&login.0, &login.1))
            .map_err(|e| spawn_error(format!("{}: {e}", config.display())))?;
        let mut command = Command::new(program);
        // -p -1: a free port of its choosing, read back from its log (no race for a port).
        command
            .arg("-c")
            .arg(&config)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store)
            .env("GOGC", go_gc(std::env::var_os("GOGC")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::child::dies_with_gateway(&mut command);
        let mut child = command.spawn().map_err(|e| spawn_error(e.to_string()))?;
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let mut log = Vec::new();
        let listening = async {
            let mut url = None;
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "nats_server", "{line}");
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    url = Some(format!("nats://{}", addr.trim()));
                }
                let ready = line.contains("Server is ready");
                log.push(line);
                if ready {
                    return url;
                }
            }
            None
        };
        let url = match tokio::time::timeout(READY_TIMEOUT, listening).await {
            Ok(Some(url)) => url,
            _ => {
                let _ = child.start_kill();
                return Err(ServerError::NotReady {
                    program: program.to_string(),
                    timeout: READY_TIMEOUT,
                    log: log.join("\n"),
                });
            }
        };
        // Keep reading, or it would block on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "nats_server", "{line}");
            }
        });
        tracing::info!(%url, store = %store.display(), "started nats-server with JetStream");
        Ok(NatsServer { child, url, login })
    }

    /// Asks it to stop (it flushes its store), and kills it after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// nats-server's configuration asking clients for this login. Quoted: unquoted, a password
/// of hex digits such as `1e50…` or `9k00…` reads as a number and the server refuses the file
/// (local mode's NATS failed to start in about one run in ten, from its random password).
fn login_config(user: &str, password: &str) -> String {
    format!("authorization {{\n  user: \"{user}\"\n  password: \"{password}\"\n}}\n")
}

/// Writes `text` to a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// 128 random bits from the kernel, in hex.
fn secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_setting_is_the_users_when_given_and_else_local_modes() {
        assert_eq!(go_gc(None), "400");
        assert_eq!(go_gc(Some("50".into())), "50");
        assert_eq!(go_gc(Some("off".into())), "off");
    }

    /// The child really runs with it: read from its own environment.
    #[tokio::test]
    async fn local_modes_nats_server_runs_with_the_collector_setting() {
        let dir = std::env::temp_dir().join(format!("flint-nats-gogc-{}", std::process::id()));
        let server = NatsServer::start("nats-server", &dir).await.unwrap();
        let pid = server.child.id().expect("running");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let wanted = format!("GOGC={}", go_gc(std::env::var_os("GOGC")).to_string_lossy());
        assert!(
            environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()),
            "{wanted} not in nats-server's environment"
        );
        server.stop(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// nats-server reads the login of every shape a random hex password takes.
    #[tokio::test]
    async fn every_password_reads_as_the_string_it_is() {
        let dir = std::env::temp_dir().join(format!("flint-nats-login-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for password in [
            "1e50aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "9k000000000000000000000000000000",
            "12345678901234567890123456789012",
            "a1b2c3",
        ] {
            let config = dir.join("login.conf");
            write_private(&config, &login_config("flint", password)).unwrap();
            let out = Command::new("nats-server").arg("-c").arg(&config).arg("-t").output().await.unwrap();
            let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && !said.contains("error"), "{password}: {said}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
