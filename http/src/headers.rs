//! Headers that describe one connection, not the message: a proxy never forwards them.

/// Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded.
pub fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    use hyper::header::*;
    const HOP_BY_HOP: [HeaderName; 7] =
        [CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE];
    let hop_by_hop = |name: &HeaderName| {
        HOP_BY_HOP.contains(name) || name.as_str() == "keep-alive" || name.as_str() == "proxy-connection"
    };
    // Most messages have none: one look at each name, rather than a removal (a hash) for each
    // kind. Headers named in Connection need a Connection header, itself hop-by-hop.
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use hyper::{HeaderMap, header::HeaderValue};

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers_only() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        super::strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
        // Each kind alone is found.
        for kind in ["connection", "te", "trailer", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection"] {
            let mut h = HeaderMap::new();
            h.insert("x-kept", HeaderValue::from_static("yes"));
            h.insert(kind, HeaderValue::from_static("x"));
            super::strip_hop_by_hop(&mut h);
            assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"], "{kind}");
        }
    }
}
