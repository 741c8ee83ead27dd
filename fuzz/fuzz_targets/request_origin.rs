//! The `Host` and `Origin` a browser (or a page pretending to be one) sends: with the default
//! allowed hosts only IP addresses and `localhost` names are answered, and a write whose Origin
//! is not the gateway's own host is refused.
#![no_main]

use flint_gateway::origin::{Hosts, cross_site};
use hyper::{HeaderMap, Method, header::HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, origin) = text.split_once('\n').unwrap_or((text, ""));
    if Hosts::new(&[]).allows(Some(host)) {
        let name = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(n, _)| n);
        let name = name.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        assert!(
            name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost"),
            "{host:?} answered"
        );
    }
    let Ok(value) = HeaderValue::from_str(origin) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(hyper::header::ORIGIN, value);
    // A value that is not text (obs-text bytes) is nobody's origin.
    let own = origin.is_ascii() && origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
    assert_eq!(cross_site(&Method::POST, &headers, Some(host)).is_none(), own, "{host:?} {origin:?}");
    assert!(cross_site(&Method::GET, &headers, Some(host)).is_none());
});
