//! The Flint operator: a kube-runtime controller that turns every `Function` into a Deployment
//! and a Service per version (stable, and canary when asked), and reports in the Function's
//! status what it did and what is wrong.
//!
//! - `resources`: Function → desired Deployment/Service (pure, tested field by field);
//! - `status`: observed children → conditions users read (pure);
//! - `controller`: the reconciler (Context, reconcile, error_policy, run), writing only when
//!   something differs;
//! - `cache`: the children and pods the reconciler reads, kept by watches (trimmed);
//! - `telemetry`: `/metrics`, `/healthz`, `/readyz`; `metrics`: what it counts;
//! - `error`: typed errors with fixed metric labels.
//!
//! The operator never installs its own CRD (the chart does) and never sets a Deployment's
//! replica count after creating it (the gateway owns it).

pub mod cache;
pub mod controller;
pub mod error;
pub mod metrics;
pub mod resources;
pub mod status;
pub mod telemetry;
