//! What can go wrong in a reconcile, typed, with a fixed label for metrics.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the Function has no namespace")]
    NoNamespace,
    /// The Function's namespace is outside every namespace the operator watches.
    #[error("the operator does not watch this Function's namespace")]
    NotWatched,
    /// An object with a child's name exists and is not this Function's.
    #[error(
        "{kind} {name} already exists and is not owned by this Function ({owner}); rename the Function or remove the {kind}"
    )]
    NameConflict { kind: String, name: String, owner: String },
    /// The API server refused to create or change a child (quota, admission, RBAC, ...).
    #[error("the API server refused {kind} {name}: {message}")]
    ChildRefused { kind: String, name: String, message: String },
}

impl Error {
    /// A label from a fixed set, never the error's text.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api_status",
            Error::Kube(_) => "api_transport",
            Error::NoNamespace => "no_namespace",
            Error::NotWatched => "not_watched",
            Error::NameConflict { .. } => "name_conflict",
            Error::ChildRefused { .. } => "child_refused",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
