//! `flint-gateway`: the one front door of Flint. Every invocation and every management call
//! goes through it.
//!
//! - `routes`: `/function/*` → `invoke`, `/system/*` → `rest` (behind `auth`), `/metrics`;
//! - `invoke`: the request path — version (canary split), replica (least in flight), scale
//!   from zero, the one rule for resending what a replica failed, forwarding headers, `observe`d;
//! - `endpoint`: a ready replica, its in-flight count and its keep-alive connections, retired
//!   by its provider when the replica leaves;
//! - `rest`: the OpenFaaS management API over a `provider`;
//! - `namespace`: which namespace a request means (OpenFaaS clients' `openfaas-fn` included);
//! - `origin`: the host names the gateway answers, and writes from other web sites refused;
//! - `peers`: how many gateway replicas share each function's throttle;
//! - `provider`: where functions live; `local` runs them as watchdog processes (`child`: they
//!   die with the gateway, as does local mode's nats-server);
//! - `autoscale`: the loop that scales every version between its min and max, and runs the
//!   `canary` analysis (widen a healthy canary's weight, roll back a failing one);
//! - `cron`: fires the Functions' cron triggers through the gateway itself (`client`);
//! - `queue`: asynchronous invocations (`/async-function/*`) and queue triggers on NATS
//!   JetStream, taken by a worker in the gateway or in a process of its own (`--mode queue-worker`);
//! - `memory`: the allocator (jemalloc, which gives freed memory back by itself);
//! - `metrics`: OpenFaaS's metric names plus Flint's per-version ones; `history`: each function's
//!   last ten minutes, second by second, for the `portal` (`/ui/`, over the REST API's `ui/*` JSON).

pub mod auth;
pub mod autoscale;
pub mod canary;
pub mod child;
pub mod client;
pub mod config;
pub mod cron;
pub mod endpoint;
pub mod history;
pub mod invoke;
pub mod memory;
pub mod metrics;
pub mod namespace;
pub mod origin;
pub mod peers;
pub mod portal;
pub mod provider;
pub mod queue;
pub mod reply;
pub mod rest;
pub mod routes;
