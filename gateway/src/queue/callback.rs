//! Callbacks (`X-Callback-Url`): where a caller may have an asynchronous call's result sent, and
//! the sending, apart from the function's lanes.
//!
//! A callback URL is the caller's, so it is aimed by whoever can call `/async-function/`: it
//! may not point inside the platform. Loopback, link-local (cloud metadata at 169.254.169.254),
//! private, shared, multicast and reserved addresses are refused unless `--callback-allow`
//! names them (a CIDR, or a host name). The check is made when the call is accepted (400
//! naming the rule) and again on the addresses a name resolves to when the result is sent, so a
//! name that resolves elsewhere by then (DNS rebinding) reaches nothing it may not. Redirects
//! are not followed.
//!
//! Sending runs outside the lane's parallel slot: at most `SENDING` at once, each within
//! `TIMEOUT`, the receiver's answer read no further than `ANSWER_READ`. Results waiting to be
//! sent hold at most `BUDGET` bytes; one more is dropped (counted, logged), so a black-hole
//! receiver slows nothing but its own callbacks.
//!
//! A connection whose answer was read whole is kept for the next result to the same host and
//! port: at most `KEPT` in all, whatever hosts callers name, and none reused after `KEPT_IDLE`.
//! A kept connection goes to the address that was checked when it was made, so keeping it
//! reaches nothing a new one could not.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use flint_http::{
    BoxError,
    client::{Idle, Made, give_back_after},
};
use http_body_util::Full;
use hyper::{
    HeaderMap, Method, Request, Uri,
    client::conn::http1,
    header::{HOST, HeaderValue},
    http::uri::Authority,
};
use hyper_util::client::legacy::connect::{HttpConnector, dns::Name};
use ipnet::IpNet;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::metrics::{CallbackLabels, Metrics};

const SENDING: usize = 64;
/// Idle connections to receivers kept at most, all receivers together (however many hosts
/// and ports callers name, the gateway holds no more sockets for them than this).
const KEPT: usize = SENDING;
/// A kept connection idle this long is not used again (and is closed when next seen, or when
/// the receiver closes it): below the 5 s of common servers (Node's, uvicorn's), so that a
/// receiver seldom closes one just as a result goes out on it.
const KEPT_IDLE: Duration = Duration::from_secs(2);
const BUDGET: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver's answer is read this far (its status is what counts), then the connection is
/// dropped.
const ANSWER_READ: usize = 64 << 10;

/// Where callbacks may go besides public addresses (`--callback-allow`).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    nets: Vec<IpNet>,
    /// Lower-case host names, trusted wherever they resolve.
    hosts: Vec<String>,
}

impl Policy {
    /// Each entry a CIDR (`10.0.0.0/8`), an address, or a host name (`hooks.internal`).
    pub fn parse(entries: &[String]) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if entry.contains('/') || entry.contains(':') || entry.contains('*') {
                return Err(format!(
                    "--callback-allow {entry:?}: neither a CIDR, an address, nor a host name (no port, no wildcard)"
                ));
            } else {
                policy.hosts.push(entry.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Ok(policy)
    }

    /// Whether a callback may reach `ip`; else the rule it breaks.
    pub fn address(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match internal(ip) {
            Some(range) => Err(Refusal::Address { ip, range }),
            None => Ok(()),
        }
    }

    fn trusts(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// The URL, if it is one a callback may be sent to as written (an absolute `http://` URL,
    /// not to a refused address); a host name is checked by [`Policy::resolve`].
    pub fn url(&self, text: &str) -> Result<Uri, Refusal> {
        let uri: Uri = text.parse().map_err(|_| Refusal::Url(text.to_string()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Refusal::Url(text.to_string()));
        }
        let host = uri.host().unwrap_or_default();
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.address(ip)?;
        }
        Ok(uri)
    }

    /// The addresses `host` resolves to that a callback may reach; refused when there are none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
        let all: Vec<SocketAddr> = match lookup {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => return Err(Refusal::Unresolved(host.to_string())),
        };
        if self.trusts(host) {
            return Ok(all);
        }
        let mut first_refused = None;
        let allowed: Vec<SocketAddr> = all
            .into_iter()
            .filter(|a| match self.address(a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    first_refused.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refused) {
            (false, _) => Ok(allowed),
            (true, Some(Refusal::Address { ip, range })) => {
                Err(Refusal::Resolved { host: host.to_string(), ip, range })
            }
            (true, _) => Err(Refusal::Unresolved(host.to_string())),
        }
    }

    /// The whole check of a caller's `X-Callback-Url` when the call is accepted.
    pub async fn vet(&self, text: &str) -> Result<(), Refusal> {
        let uri = self.url(text)?;
        let host = uri.host().unwrap_or_default();
        if host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_err() {
            self.resolve(host, uri.port_u16().unwrap_or(80)).await?;
        }
        Ok(())
    }
}

/// Why a callback URL is refused; said to the caller in a 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("X-Callback-Url {0:?} is not an absolute http:// URL")]
    Url(String),
    #[error(
        "X-Callback-Url may not point at {ip}: {range} addresses are refused (the gateway's --callback-allow lets them)"
    )]
    Address { ip: IpAddr, range: &'static str },
    #[error(
        "X-Callback-Url host {host} resolves to {ip}: {range} addresses are refused (the gateway's --callback-allow lets them)"
    )]
    Resolved { host: String, ip: IpAddr, range: &'static str },
    #[error("X-Callback-Url host {0} does not resolve")]
    Unresolved(String),
}

/// The range of `ip` a callback may not reach unless allowed, by name.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "this-network (0.0.0.0/8)",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (100.64.0.0/10)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol (192.0.0.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let s = ip.segments();
    match s {
        [0, 0, 0, 0, 0, 0, 0, 1] => return Some("loopback"),
        [0, 0, 0, 0, 0, 0, 0, 0] => return Some("unspecified"),
        // NAT64 and IPv4-compatible forms reach the IPv4 address they carry.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => {
            return internal_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        // 6to4 carries its IPv4 address after the prefix.
        [0x2002, hi, lo, ..] => return internal_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        _ => {}
    }
    match s[0] {
        0xfe80..=0xfebf => Some("link-local"),
        0xfc00..=0xfdff => Some("unique-local (fc00::/7)"),
        0xff00..=0xffff => Some("multicast"),
        _ => None,
    }
}

/// A result to POST to a callback URL.
pub struct Delivery {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// For the log line.
    pub function: String,
}

pub struct Callbacks {
    policy: Arc<Policy>,
    sender: Arc<Sender>,
    sending: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// Connections to receivers: made through the policy's resolver, kept while idle by the URL's
/// host and port.
struct Sender {
    connector: HttpConnector<Resolver>,
    idle: Idle<Authority, Full<Bytes>>,
}

/// Resolves a callback's host name to the addresses the policy lets it reach.
#[derive(Clone)]
pub struct Resolver(Arc<Policy>);

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Refusal;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Refusal>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Refusal>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0.clone();
        // The connector sets the URL's port on each address.
        Box::pin(async move { policy.resolve(name.as_str(), 0).await.map(|a| a.into_iter()) })
    }
}

impl Callbacks {
    pub fn new(policy: Policy, metrics: Arc<Metrics>) -> Self {
        let policy = Arc::new(policy);
        let mut connector = HttpConnector::new_with_resolver(Resolver(policy.clone()));
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Callbacks {
            policy,
            sender: Arc::new(Sender { connector, idle: Idle::new(KEPT, KEPT_IDLE) }),
            sending: Arc::new(Semaphore::new(SENDING)),
            budget: Arc::new(Semaphore::new(BUDGET >> 10)),
            metrics,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Sends `result` in the background; returns at once.
    pub fn post(&self, result: Delivery) {
        let kib = (result.body.len() >> 10).clamp(1, BUDGET >> 10) as u32;
        let Ok(held) = self.budget.clone().try_acquire_many_owned(kib) else {
            tracing::warn!(function = %result.function, "too many results waiting for their callbacks: this one is dropped");
            self.count("dropped");
            return;
        };
        let (sender, policy, sending, metrics) =
            (self.sender.clone(), self.policy.clone(), self.sending.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let _held = held;
            let Ok(_turn) = sending.acquire_owned().await else { return };
            let outcome = sender.send(&policy, result).await;
            metrics.queue.callbacks.get_or_create(&CallbackLabels { outcome }).inc();
        });
    }

    fn count(&self, outcome: &'static str) {
        self.metrics.queue.callbacks.get_or_create(&CallbackLabels { outcome }).inc();
    }
}

impl Sender {
    /// One POST; the outcome for the metric (never the target: a caller who can read /metrics
    /// learns nothing about the address it aimed at beyond whether its result went out).
    async fn send(self: &Arc<Self>, policy: &Policy, result: Delivery) -> &'static str {
        let Delivery { url, headers, body, function } = result;
        let uri = match policy.url(&url) {
            Ok(uri) => uri,
            Err(e) => {
                tracing::warn!(%function, error = %e, "callback refused");
                return "refused";
            }
        };
        let answered = tokio::time::timeout(TIMEOUT, async {
            let req = || post(&uri, &headers, &body);
            let response = match self.post(&uri, req()).await {
                // A kept connection the receiver closed just as the result went out: sent once
                // more (the receiver may get it twice; its X-Call-Id tells).
                Err((Made::Kept, _)) => self.post(&uri, req()).await.map_err(|e| e.1)?,
                other => other.map_err(|e| e.1)?,
            };
            let status = response.status();
            // Its body is read a little (a receiver that streams without end gets nowhere),
            // then dropped: the connection is kept only when the answer was read whole.
            let _ = flint_http::body::read_at_most(response.into_body(), ANSWER_READ).await;
            Ok::<_, BoxError>(status)
        })
        .await;
        match answered {
            Ok(Ok(status)) if status.is_success() => "delivered",
            Ok(Ok(status)) => {
                tracing::warn!(%function, %url, status = status.as_u16(), "the callback URL refused the result (redirects are not followed)");
                "failed"
            }
            Ok(Err(e)) => {
                tracing::warn!(%function, %url, error = %flint_http::error_chain(&*e), "cannot deliver the result to the callback URL");
                if refused_by_policy(&*e) { "refused" } else { "failed" }
            }
            Err(_) => {
                tracing::warn!(%function, %url, ?TIMEOUT, "the callback URL did not answer in time");
                "failed"
            }
        }
    }

    /// `req` on a kept connection to `uri`'s host and port, or a new one; the response, whose
    /// body gives its connection back once read whole. On failure, which connection it was.
    async fn post(
        self: &Arc<Self>,
        uri: &Uri,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<flint_http::Body>, (Made, BoxError)> {
        let key = uri.authority().expect("checked by the policy").clone();
        let connect = || async {
            let io = self.connector.clone().oneshot(uri.clone()).await?;
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "callback connection ended");
                }
            });
            Ok::<_, BoxError>(sender)
        };
        let (response, sender, _) = self.idle.send(&key, req, connect).await?;
        let this = self.clone();
        Ok(response.map(|body| give_back_after(body, sender, move |s| this.idle.checkin(key, s))))
    }
}

/// The POST of a result to `uri`, as a client sends it on its own connection: the path and
/// query in the request line, the host and port in `Host`.
fn post(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Request<Full<Bytes>> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder().method(Method::POST).uri(path);
    let all = req.headers_mut().expect("a request under construction");
    *all = headers.clone();
    if let Ok(host) = HeaderValue::from_str(uri.authority().expect("checked by the policy").as_str()) {
        all.insert(HOST, host);
    }
    req.body(Full::new(body.clone())).expect("a path from a valid URI")
}

/// Whether the connection was not made because the policy refused every address.
fn refused_by_policy(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if e.is::<Refusal>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> Policy {
        Policy::parse(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_are_not() {
        let p = policy(&[]);
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.20.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (100.64.0.0/10)"),
            ("0.0.0.0", "this-network (0.0.0.0/8)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local (fc00::/7)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("2002:a00:1::", "private"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(p.address(ip), Err(Refusal::Address { ip, range }), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "100.128.0.1"] {
            assert_eq!(p.address(ip.parse().unwrap()), Ok(()), "{ip}");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_and_names() {
        let p = policy(&["10.20.0.0/16", "127.0.0.1", "Hooks.Internal."]);
        assert_eq!(p.address("10.20.3.4".parse().unwrap()), Ok(()));
        assert!(p.address("10.21.3.4".parse().unwrap()).is_err());
        assert_eq!(p.address("127.0.0.1".parse().unwrap()), Ok(()));
        assert!(p.address("127.0.0.2".parse().unwrap()).is_err());
        assert!(p.trusts("hooks.internal"));
        assert!(!p.trusts("other.internal"));
        for bad in ["10.0.0.0/33", "host:80", "*.example.com"] {
            assert!(Policy::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_url_is_checked_as_written() {
        let p = policy(&[]);
        assert!(matches!(p.url("/done"), Err(Refusal::Url(_))));
        assert!(matches!(p.url("ftp://example.com/x"), Err(Refusal::Url(_))));
        assert!(matches!(p.url("https://example.com/x"), Err(Refusal::Url(_))));
        assert!(matches!(p.url("http://127.0.0.1:9000/done"), Err(Refusal::Address { .. })));
        assert!(matches!(p.url("http://[::1]:9000/done"), Err(Refusal::Address { .. })));
        assert!(matches!(p.url("http://169.254.169.254/latest/meta-data"), Err(Refusal::Address { .. })));
        assert!(p.url("http://93.184.216.34/done?x=1").is_ok());
        assert!(p.url("http://hooks.example.com/done").is_ok(), "names are checked when resolved");
        let e = p.url("http://10.0.0.1/").unwrap_err().to_string();
        assert!(e.contains("10.0.0.1") && e.contains("private") && e.contains("--callback-allow"), "{e}");
    }

    #[tokio::test]
    async fn a_name_is_checked_on_what_it_resolves_to() {
        let p = policy(&[]);
        let e = p.vet("http://localhost:9/done").await.unwrap_err();
        assert!(matches!(e, Refusal::Resolved { range: "loopback", .. }), "{e}");
        assert!(e.to_string().contains("localhost resolves to"), "{e}");
        let trusted = policy(&["localhost"]);
        assert!(trusted.vet("http://localhost:9/done").await.is_ok());
        let opened = policy(&["127.0.0.0/8", "::1"]);
        assert!(opened.vet("http://localhost:9/done").await.is_ok());
    }
}
