//! The Flint Function API, shared by the operator and the gateway (which never depend on each
//! other).
//!
//! - [`function`]: the `Function` custom resource (`flint.dev/v1alpha1`), whose doc comments
//!   become the CRD's descriptions;
//! - [`limits`]: every rule a Function follows, written once for both the CRD schema and
//!   [`validate()`];
//! - [`validate`]: all problems of a Function at once, each with its field path;
//! - [`manifest`]: Functions from YAML or JSON, with type errors and unknown fields named;
//! - [`crd`]: the CustomResourceDefinition as YAML (what `crds/function.yaml` holds);
//! - [`version`]: stable and canary;
//! - [`rbac`]: what the operator and the gateway ask of the API server (the chart is checked
//!   against it);
//! - [`duration`], [`quantity`], [`cron`]: the value syntaxes those rules use.

pub mod crd;
pub mod cron;
pub mod duration;
pub mod function;
pub mod limits;
pub mod manifest;
pub mod quantity;
pub mod rbac;
pub mod validate;
pub mod version;

pub use duration::Duration;
pub use function::*;
pub use validate::{FieldError, Invalid, validate};
pub use version::Version;
