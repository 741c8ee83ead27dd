//! The OCI distribution API, both ways: push an image of a layout (blobs the registry lacks,
//! then the manifest), and pull one by tag or digest into a layout (an index or manifest list
//! is resolved to its linux/amd64 image; every blob is checked against its digest). Plain HTTP
//! to a registry on loopback, HTTPS elsewhere; a registry's Basic or Bearer-token challenge is
//! answered with the login given. What a registry refuses comes back in its own words
//! (`manifest unknown`, `unauthorized`), as a kubelet says them in `ErrImagePull`.

use std::sync::Mutex;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

use crate::oci::{self, Descriptor, Index, Layout, Manifest};

/// `host[:port]/repository[:tag|@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub repository: String,
    /// A tag, or `sha256:…`.
    pub reference: String,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        let bad = || format!("{text:?} is not an image reference (HOST[:PORT]/REPOSITORY[:TAG|@DIGEST])");
        let (host, rest) = text.split_once('/').ok_or_else(bad)?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(format!("{text:?}: name the registry (HOST[:PORT]/...); there is no default registry"));
        }
        let (repository, reference) = match rest.split_once('@') {
            Some((r, digest)) if digest.starts_with("sha256:") && digest.len() == 71 => (r, digest.to_string()),
            Some(_) => return Err(bad()),
            None => match rest.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => (r, tag.to_string()),
                _ => (rest, "latest".to_string()),
            },
        };
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repository.is_empty() || !repository.chars().all(ok) {
            return Err(bad());
        }
        Ok(Reference { host: host.to_string(), repository: repository.to_string(), reference })
    }

    /// Plain HTTP only to a registry on this machine.
    fn base(&self) -> String {
        let loopback =
            self.host.starts_with("127.") || self.host.starts_with("localhost") || self.host.starts_with("[::1]");
        format!("{}://{}/v2/{}", if loopback { "http" } else { "https" }, self.host, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.host, self.repository, self.reference)
    }
}

/// Why a pull or push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: {reason}")]
    Refused { reference: String, status: u16, reason: String },
    #[error("{reference}: cannot reach the registry: {why}")]
    Unreachable { reference: String, why: String },
    #[error("{reference}: {why}")]
    Invalid { reference: String, why: String },
}

pub struct Registry {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// User and password for the registry's challenge.
    login: Option<(String, String)>,
    /// The last token a Bearer challenge gave.
    token: Mutex<Option<String>>,
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

impl Registry {
    pub fn new(login: Option<(String, String)>) -> Registry {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The machine's certificate authorities; none (no TLS registry reachable) where it has none.
        let roots = hyper_rustls::HttpsConnectorBuilder::new().with_native_roots().unwrap_or_else(|_| {
            let none = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(none)
        });
        let https = roots.https_or_http().enable_http1().build();
        Registry {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            login,
            token: Mutex::new(None),
        }
    }

    /// One request, answering an auth challenge once; the status, headers and body.
    async fn send(
        &self,
        what: &Reference,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), RegistryError> {
        let mut challenged = false;
        loop {
            let mut req = Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(token) = self.token.lock().unwrap().clone() {
                req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
            } else if let Some(basic) = self.basic() {
                req = req.header(header::AUTHORIZATION, basic);
            }
            let req = req.body(Full::new(body.clone())).map_err(|e| invalid(what, e))?;
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| RegistryError::Unreachable { reference: what.to_string(), why: error_chain(&e) })?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map_err(|e| unreachable(what, e))?.to_bytes();
            if parts.status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                if let Some(challenge) = parts.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok())
                    && challenge.to_ascii_lowercase().starts_with("bearer ")
                {
                    let token = self.token_for(what, challenge).await?;
                    *self.token.lock().unwrap() = Some(token);
                    continue;
                }
                if self.login.is_some() {
                    continue;
                }
            }
            return Ok((parts.status, parts.headers, bytes));
        }
    }

    fn basic(&self) -> Option<String> {
        let (user, password) = self.login.as_ref()?;
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))))
    }

    /// A token from the realm a Bearer challenge names.
    async fn token_for(&self, what: &Reference, challenge: &str) -> Result<String, RegistryError> {
        let field = |name: &str| {
            challenge
                .split([',', ' '])
                .find_map(|p| p.trim().strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let realm = field("realm").ok_or_else(|| invalid(what, "a Bearer challenge without a realm"))?;
        let mut url = realm;
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for name in ["service", "scope"] {
            if let Some(v) = field(name) {
                url.push(sep);
                url.push_str(&format!("{name}={v}"));
                sep = '&';
            }
        }
        let mut req = Request::get(&url);
        if let Some(basic) = self.basic() {
            req = req.header(header::AUTHORIZATION, basic);
        }
        let response = self
            .client
            .request(req.body(Full::new(Bytes::new())).map_err(|e| invalid(what, e))?)
            .await
            .map_err(|e| unreachable(what, e))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| unreachable(what, e))?.to_bytes();
        if !status.is_success() {
            return Err(refused(what, status, &body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| invalid(what, e))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| invalid(what, "no token in the realm's answer"))
    }

    /// Pushes the image `name` of `layout` to `target`; its manifest's digest.
    pub async fn push(&self, layout: &Layout, name: &str, target: &Reference) -> Result<String, RegistryError> {
        let (descriptor, manifest) = layout.find(name).map_err(|e| invalid(target, e))?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let url = format!("{}/blobs/{}", target.base(), blob.digest);
            let (status, _, _) = self.send(target, Method::HEAD, &url, &[], Bytes::new()).await?;
            if status == StatusCode::OK {
                continue;
            }
            let bytes = Bytes::from(layout.blob(&blob.digest).map_err(|e| invalid(target, e))?);
            let (status, headers, body) = self
                .send(target, Method::POST, &format!("{}/blobs/uploads/", target.base()), &[], Bytes::new())
                .await?;
            if status != StatusCode::ACCEPTED {
                return Err(refused(target, status, &body));
            }
            let location = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or_default();
            let location = if location.starts_with("http") {
                location.to_string()
            } else {
                let origin = target.base().split("/v2/").next().unwrap_or_default().to_string();
                format!("{origin}{location}")
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            let put = format!("{location}{sep}digest={}", blob.digest);
            let length = bytes.len().to_string();
            let headers = [("content-type", "application/octet-stream"), ("content-length", length.as_str())];
            let (status, _, body) = self.send(target, Method::PUT, &put, &headers, bytes).await?;
            if status != StatusCode::CREATED {
                return Err(refused(target, status, &body));
            }
        }
        let bytes = Bytes::from(layout.blob(&descriptor.digest).map_err(|e| invalid(target, e))?);
        let url = format!("{}/manifests/{}", target.base(), target.reference);
        let (status, _, body) = self.send(target, Method::PUT, &url, &[("content-type", oci::MANIFEST)], bytes).await?;
        if status != StatusCode::CREATED {
            return Err(refused(target, status, &body));
        }
        Ok(descriptor.digest)
    }

    /// A manifest (by tag or digest) with its digest, an index resolved to linux/amd64.
    pub async fn manifest(&self, image: &Reference) -> Result<(String, Manifest, Bytes), RegistryError> {
        let mut reference = image.reference.clone();
        for _ in 0..2 {
            let url = format!("{}/manifests/{reference}", image.base());
            let (status, headers, body) =
                self.send(image, Method::GET, &url, &[("accept", ACCEPT)], Bytes::new()).await?;
            if !status.is_success() {
                return Err(refused(image, status, &body));
            }
            let digest = oci::digest(&body);
            if reference.starts_with("sha256:") && digest != reference {
                return Err(invalid(image, format!("the registry sent a manifest whose digest is {digest}")));
            }
            let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| invalid(image, e))?;
            let kind = value["mediaType"].as_str().map(str::to_string).unwrap_or(kind);
            if kind.starts_with(oci::INDEX) || kind.starts_with(oci::DOCKER_LIST) {
                let index: Index = serde_json::from_value(value).map_err(|e| invalid(image, e))?;
                let amd64 = index
                    .manifests
                    .iter()
                    .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
                    .ok_or_else(|| invalid(image, "the image has no linux/amd64 variant"))?;
                reference = amd64.digest.clone();
                continue;
            }
            let manifest: Manifest = serde_json::from_value(value).map_err(|e| invalid(image, e))?;
            return Ok((digest, manifest, body));
        }
        Err(invalid(image, "an index that names another index"))
    }

    /// Pulls `image` into `layout` (blobs it already holds are not fetched again) and names it
    /// `name` there; its manifest's digest and the manifest.
    pub async fn pull(
        &self,
        image: &Reference,
        layout: &Layout,
        name: &str,
    ) -> Result<(String, Manifest), RegistryError> {
        let (digest, manifest, body) = self.manifest(image).await?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if layout.blob(&blob.digest).is_ok() {
                continue;
            }
            let url = format!("{}/blobs/{}", image.base(), blob.digest);
            let (status, _, bytes) = self.send(image, Method::GET, &url, &[], Bytes::new()).await?;
            if !status.is_success() {
                return Err(refused(image, status, &bytes));
            }
            if oci::digest(&bytes) != blob.digest {
                return Err(invalid(image, format!("blob {} does not match its digest", blob.digest)));
            }
            layout.put(&bytes).map_err(|e| invalid(image, e))?;
        }
        layout.put(&body).map_err(|e| invalid(image, e))?;
        let descriptor = Descriptor {
            media_type: oci::MANIFEST.into(),
            digest: digest.clone(),
            size: body.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        layout.name(descriptor, name).map_err(|e| invalid(image, e))?;
        Ok((digest, manifest))
    }
}

fn refused(what: &Reference, status: StatusCode, body: &[u8]) -> RegistryError {
    // {"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown",...}]}
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let reason = v["errors"]
        .as_array()
        .and_then(|e| e.first())
        .and_then(|e| e["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("the registry answered {status}"));
    RegistryError::Refused { reference: what.to_string(), status: status.as_u16(), reason }
}

fn invalid(what: &Reference, why: impl std::fmt::Display) -> RegistryError {
    RegistryError::Invalid { reference: what.to_string(), why: why.to_string() }
}

fn unreachable(what: &Reference, e: impl std::error::Error + 'static) -> RegistryError {
    RegistryError::Unreachable { reference: what.to_string(), why: error_chain(&e) }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_a_repository_and_a_tag_or_digest() {
        let r = Reference::parse("127.0.0.1:5000/flint-dev/flint-gateway:0.1.0").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "flint-dev/flint-gateway", "0.1.0")
        );
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2/flint-dev/flint-gateway");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/flint-dev/watchdog@{d}")).unwrap();
        assert_eq!(r.reference, d);
        assert_eq!(r.base(), "https://ghcr.io/v2/flint-dev/watchdog");
        assert_eq!(r.to_string(), format!("ghcr.io/flint-dev/watchdog@{d}"));
        assert_eq!(Reference::parse("localhost:5000/x").unwrap().reference, "latest");
        assert!(Reference::parse("flint-gateway:0.1.0").is_err(), "no default registry");
        assert!(Reference::parse("ghcr.io/Flint/x:1").is_err());
        assert!(Reference::parse("ghcr.io/x@sha256:short").is_err());
    }

    #[test]
    fn a_refusal_is_said_in_the_registrys_words() {
        let r = Reference::parse("127.0.0.1:5000/x:1").unwrap();
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(refused(&r, StatusCode::NOT_FOUND, body).to_string(), "127.0.0.1:5000/x:1: manifest unknown");
        assert!(refused(&r, StatusCode::BAD_GATEWAY, b"").to_string().contains("502"));
    }
}
