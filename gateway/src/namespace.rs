//! Which namespace a request means. OpenFaaS clients (faas-cli and its Go SDK) name
//! `openfaas-fn`, OpenFaaS's default function namespace, whenever their user names none:
//! `faas-cli invoke shout` calls `/function/shout.openfaas-fn`. The gateway reads that name
//! (`--openfaas-namespace`) as its own default namespace, unless functions really live in a
//! namespace of that name.

use crate::provider::Provider;

#[derive(Clone, Debug)]
pub struct Namespaces {
    /// The name OpenFaaS clients use for "the default"; `None`: no such alias.
    openfaas: Option<String>,
}

impl Namespaces {
    /// `openfaas`: the alias of the default namespace; empty for none.
    pub fn new(openfaas: &str) -> Namespaces {
        Namespaces { openfaas: (!openfaas.is_empty()).then(|| openfaas.to_string()) }
    }

    /// The namespace meant by `given` (a path's `.NAMESPACE`, a `namespace` query parameter or
    /// JSON field); none or empty means the default.
    pub fn resolve<'a>(&self, provider: &'a dyn Provider, given: Option<&'a str>) -> &'a str {
        match given.filter(|g| !g.is_empty()) {
            None => provider.default_namespace(),
            Some(g) if self.openfaas.as_deref() == Some(g) && !provider.holds_namespace(g) => {
                provider.default_namespace()
            }
            Some(g) => g,
        }
    }
}
