//! The versions a Function runs as: the stable one, and the canary beside it when
//! `spec.canary` is set. Their objects are named `NAME` and `NAME-canary` and labelled
//! `flint.dev/version=stable|canary`.

/// A version of a Function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Stable,
    Canary,
}

impl Version {
    /// The label value, and the metrics' `version` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
        }
    }
}
