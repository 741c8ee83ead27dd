//! One installation's part of a NATS server: its streams, their subjects and (inside those
//! streams) its consumers. Two installations of Flint sharing a NATS server, each with its own
//! `--nats-prefix`, never take, capture or delete each other's. Without a prefix the names are
//! those Flint has always used (`FLINT_CALLS`, `flint.async.NAMESPACE.NAME`, ...).

/// The names of one installation's streams and subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// `""`, or a token of letters, digits, `-` and `_`.
    prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "--nats-prefix {0:?}: use up to 120 letters, digits, '-' and '_' (not \"async\" or \"dead\", whose subjects are taken)"
)]
pub struct BadPrefix(String);

impl Names {
    pub fn new(prefix: &str) -> Result<Names, BadPrefix> {
        let ok = prefix.len() <= 120
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !matches!(prefix, "async" | "dead");
        ok.then(|| Names { prefix: prefix.to_string() }).ok_or_else(|| BadPrefix(prefix.to_string()))
    }

    fn stream(&self, kind: &str) -> String {
        match self.prefix.as_str() {
            "" => format!("FLINT_{kind}"),
            p => format!("FLINT_{p}_{kind}"),
        }
    }

    fn root(&self) -> String {
        match self.prefix.as_str() {
            "" => "flint".to_string(),
            p => format!("flint.{p}"),
        }
    }

    /// Asynchronous calls (a work queue: each taken once).
    pub fn calls_stream(&self) -> String {
        self.stream("CALLS")
    }

    pub fn dead_stream(&self) -> String {
        self.stream("DEAD")
    }

    /// Queue triggers' messages, captured from the subjects the Functions listen on.
    pub fn triggers_stream(&self) -> String {
        self.stream("TRIGGERS")
    }

    /// Every subject of `calls_stream`.
    pub fn calls_subjects(&self) -> String {
        format!("{}.async.>", self.root())
    }

    pub fn dead_subjects(&self) -> String {
        format!("{}.dead.>", self.root())
    }

    pub fn calls_subject(&self, namespace: &str, name: &str) -> String {
        format!("{}.async.{namespace}.{name}", self.root())
    }

    pub fn dead_subject(&self, namespace: &str, name: &str) -> String {
        format!("{}.dead.{namespace}.{name}", self.root())
    }

    /// `(namespace, name)` of a calls subject.
    pub fn function_of<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(&self.root())?.strip_prefix(".async.")?;
        rest.split_once('.').filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_prefix_the_names_are_flints_own() {
        let n = Names::new("").unwrap();
        assert_eq!(
            (n.calls_stream(), n.dead_stream(), n.triggers_stream()),
            ("FLINT_CALLS".into(), "FLINT_DEAD".into(), "FLINT_TRIGGERS".into())
        );
        assert_eq!(n.calls_subject("default", "shout"), "flint.async.default.shout");
        assert_eq!(n.dead_subject("default", "shout"), "flint.dead.default.shout");
        assert_eq!(n.function_of("flint.async.default.shout"), Some(("default", "shout")));
        assert_eq!(n.function_of("flint.async.default"), None);
        assert_eq!(n.function_of("flint.dead.default.shout"), None);
        assert_eq!(n.function_of("flint.async.a.b.c"), None);
    }

    #[test]
    fn a_prefix_gives_an_installation_names_no_other_one_matches() {
        let a = Names::new("team-a").unwrap();
        let b = Names::new("team-b").unwrap();
        let plain = Names::new("").unwrap();
        assert_eq!(a.calls_stream(), "FLINT_team-a_CALLS");
        assert_eq!(a.calls_subjects(), "flint.team-a.async.>");
        assert_eq!(a.calls_subject("ns", "f"), "flint.team-a.async.ns.f");
        assert_eq!(a.function_of("flint.team-a.async.ns.f"), Some(("ns", "f")));
        assert_eq!(b.function_of(&a.calls_subject("ns", "f")), None);
        assert_eq!(plain.function_of(&a.calls_subject("ns", "f")), None);
        assert_eq!(a.function_of(&plain.calls_subject("ns", "f")), None);
        for bad in ["a.b", "a b", "*", ">", "async", "dead", &"x".repeat(121)] {
            assert!(Names::new(bad).is_err(), "{bad}");
        }
    }
}
