//! Where a request comes from, as a browser tells it. A gateway on a developer's machine runs
//! beside their browser, and any web page can make that browser send requests to it:
//!
//! - **Host names**: the gateway answers only the names it knows — IP addresses, `localhost`
//!   and `*.localhost`, and `--allowed-hosts` — so a page whose own name was made to resolve to
//!   this machine (DNS rebinding) is refused, and cannot read what the gateway answers.
//! - **Cross-site writes**: a request to the REST API that may change something (any method but
//!   GET, HEAD and OPTIONS) is refused when the browser says it comes from another site
//!   (`Sec-Fetch-Site: cross-site` or `same-site`) or from another origin (`Origin`); a form
//!   posted from another page cannot deploy a function. Clients that are not browsers (curl,
//!   faas-cli) send neither header and are not affected.
//!
//! The choices are those of the careful development servers (Vite's `allowedHosts`, Jupyter's
//! host and origin checks) and of the browser's own Fetch Metadata guidance.

use hyper::{HeaderMap, Method, Uri, header::HOST};

/// The host names a gateway answers (`--allowed-hosts`).
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    any: bool,
    names: Vec<String>,
    /// `.example.com` for `*.example.com`.
    domains: Vec<String>,
}

impl Hosts {
    pub fn new(allowed: &[String]) -> Hosts {
        let mut hosts = Hosts::default();
        for entry in allowed.iter().map(|h| normal(h.trim())).filter(|h| !h.is_empty()) {
            if entry == "*" {
                hosts.any = true;
            } else if let Some(domain) = entry.strip_prefix('*') {
                hosts.domains.push(domain.to_string());
            } else {
                hosts.names.push(entry);
            }
        }
        hosts
    }

    /// Whether a request for `host` (a `Host` header's value, port included) is answered.
    /// A request naming no host at all comes from no browser, and is.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let Some(name) = strip_port(host) else { return false };
        let name = name.strip_suffix('.').unwrap_or(name);
        // On every request: no allocation.
        self.any
            || name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || ends_with(name, ".localhost")
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || self.domains.iter().any(|d| ends_with(name, d))
    }
}

/// The host a request names: its `Host` header, or (HTTP/2) its URI's authority.
pub fn host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers.get(HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()))
}

/// Why a request that may change something is refused as cross-site, if it is.
pub fn cross_site(method: &Method, headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("");
    if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
        return Some(format!(
            "a {method} to the gateway's API from another site (Sec-Fetch-Site: {site}) is refused: \
             the API changes what runs on this machine, so only the gateway's own pages and clients \
             that are not browsers (curl, faas-cli) may write to it"
        ));
    }
    let origin = headers.get(hyper::header::ORIGIN)?;
    let own = |origin: &str| {
        let authority = origin.split_once("://").map(|(_, a)| a);
        authority.zip(host).is_some_and(|(a, h)| a.eq_ignore_ascii_case(h))
    };
    match origin.to_str() {
        Ok(o) if own(o) => None,
        _ => Some(format!(
            "a {method} to the gateway's API from the web page at {} is refused (its Origin is not the \
             gateway's own): the API changes what runs on this machine, so only the gateway's own pages \
             and clients that are not browsers (curl, faas-cli) may write to it",
            String::from_utf8_lossy(origin.as_bytes())
        )),
    }
}

/// The name in `host[:port]`; `None` for what is neither.
fn strip_port(host: &str) -> Option<&str> {
    let digits = |port: &str| port.bytes().all(|b| b.is_ascii_digit());
    if let Some(v6) = host.strip_prefix('[') {
        let (address, after) = v6.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(digits)).then_some(address);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if digits(port) => Some(name),
        _ => Some(host),
    }
}

/// `name` ends with `suffix` (ASCII case ignored) and has more before it.
fn ends_with(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len()
        && name.is_char_boundary(name.len() - suffix.len())
        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(allowed: &[&str]) -> Hosts {
        Hosts::new(&allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn addresses_and_localhost_are_answered_other_names_only_when_allowed() {
        let h = hosts(&[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:3000",
            "[::1]:8080",
            "10.1.2.3",
            "localhost.",
        ] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        for refused in
            ["rebind.evil.example", "rebind.evil.example:8080", "localhost.evil.example", "evillocalhost", "[::1]:80>0"]
        {
            assert!(!h.allows(Some(refused)), "{refused}");
        }
        assert!(h.allows(None), "no Host: not a browser");
        let h = hosts(&["flint-gateway.flint.svc", "*.fn.example.com"]);
        assert!(h.allows(Some("flint-gateway.flint.svc:8080")));
        assert!(h.allows(Some("hello.fn.example.com")));
        assert!(!h.allows(Some("fn.example.com")));
        assert!(!h.allows(Some("evil-fn.example.com")));
        assert!(hosts(&["*"]).allows(Some("anything.example")));
    }

    #[test]
    fn writes_from_other_sites_are_refused_and_everything_else_is_not() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        let host = Some("127.0.0.1:8080");
        // curl, faas-cli: no browser headers.
        assert_eq!(cross_site(&Method::POST, &with(&[]), host), None);
        // The portal itself.
        let own = with(&[("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(cross_site(&Method::POST, &own, host), None);
        assert_eq!(cross_site(&Method::DELETE, &own, host), None);
        let form = with(&[("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")]);
        let why = cross_site(&Method::POST, &form, host).unwrap();
        assert!(why.contains("Sec-Fetch-Site: cross-site"), "{why}");
        let older_browser = with(&[("origin", "http://evil.example")]);
        let why = cross_site(&Method::PUT, &older_browser, host).unwrap();
        assert!(why.contains("http://evil.example") && why.contains("Origin"), "{why}");
        assert!(cross_site(&Method::POST, &with(&[("origin", "null")]), host).is_some());
        // An Origin that is no URL is nobody's own (found by fuzzing: "" matched an empty Host).
        assert!(cross_site(&Method::POST, &with(&[("origin", "")]), Some("")).is_some());
        assert!(cross_site(&Method::POST, &with(&[("sec-fetch-site", "same-site")]), host).is_some());
        assert!(cross_site(&Method::POST, &with(&[("origin", "http://127.0.0.1:9090")]), host).is_some());
        // Reading is not refused here (the host check and the browser's same-origin rule cover it).
        assert_eq!(cross_site(&Method::GET, &form, host), None);
    }
}
