//! `X-Callback-Url` as a caller writes it: an accepted URL is an absolute `http://` URL whose
//! address, when written as one, is a public address (checked against the standard library's
//! own idea of loopback, private, link-local and the rest); and a NATS URL is never shown with
//! the password it holds.
#![no_main]

use std::net::IpAddr;

use flint_gateway::queue::{callback::Policy, without_credentials};
use libfuzzer_sys::fuzz_target;

fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast()
                || v4.is_broadcast() || v4.octets()[0] == 0 || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80 || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6.to_ipv4_mapped().is_some_and(|v4| internal(IpAddr::V4(v4)))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(uri) = Policy::default().url(text) {
        assert_eq!(uri.scheme_str(), Some("http"), "{text}");
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            assert!(!internal(ip), "{text} reaches {ip}");
        }
    }
    // `nats://user:password@host`: the login never shows (one URL; a comma separates URLs).
    if !text.contains(',')
        && let Some((scheme, rest)) = text.split_once("://")
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && let Some((userinfo, _)) = rest.rsplit_once('@')
    {
        assert!(!without_credentials(text).contains(&format!("{userinfo}@")), "{text}");
    }
});
