//! Processes the gateway starts (local mode's replicas, its nats-server) end with it.

use nix::sys::signal::Signal;

/// `command`'s process gets SIGTERM when the gateway dies, however it dies (SIGKILL
/// included), so that none outlives it.
pub fn dies_with_gateway(command: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from));
    }
}
