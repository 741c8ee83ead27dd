//! `watchdog`: the entrypoint of every Flint function container. It starts the function's
//! process, turns each HTTP request on `port` into an invocation of it, and stops cleanly.
//!
//! - `config`: settings from the environment (of-watchdog's names), refused loudly when wrong;
//! - `stack`: the layers an invocation passes: `metrics` (observe) → `limit` → `timeout` → `mode`;
//! - `mode`: `http` (proxy to the function's own server) or `streaming` (fork per request),
//!   both built on `process` (process groups, output forwarding);
//! - `health`: liveness and readiness; `server`: the accept loop with graceful stop;
//! - `logs`: one non-blocking writer for our log lines and the function's output.
//!
//! Shutdown on SIGTERM or SIGINT: readiness fails at once; connections are still served for
//! `healthcheck_interval` while the endpoint is removed; then no new connection is accepted,
//! accepted requests get up to `write_timeout` to finish, the function's process is stopped
//! (SIGTERM, then SIGKILL), and the watchdog exits 0.

pub mod config;
pub mod error;
pub mod health;
pub mod limit;
pub mod logs;
pub mod metrics;
pub mod mode;
pub mod process;
pub mod stack;
pub mod timeout;
