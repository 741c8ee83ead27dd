//! Basic auth for `/system/*` (and `/function/*` when asked), with credentials read from files
//! as OpenFaaS does (`basic-auth-user`, `basic-auth-password` in the secret mount path), so
//! `faas-cli login` works unchanged. Compared in constant time.

use std::path::Path;

use base64::Engine;
use hyper::{HeaderMap, header::AUTHORIZATION};
use subtle::ConstantTimeEq;

/// The challenge the gateway answers 401 with. Its realm names the gateway, so that a
/// function's own challenge is not mistaken for it (see `names_our_realm`).
pub const CHALLENGE: &str = "Basic realm=\"Flint gateway\", charset=\"UTF-8\"";
const REALM: &str = "flint gateway";

/// Whether a `WWW-Authenticate` value asks for the gateway's realm (a function pretending to be
/// the gateway, to be sent the login the browser keeps for it).
pub fn names_our_realm(value: &hyper::header::HeaderValue) -> bool {
    let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
    text.split("realm=").skip(1).any(|rest| {
        let rest = rest.trim_start();
        let quoted = rest.strip_prefix('"').map(|r| r.split('"').next().unwrap_or(""));
        let bare = || rest.split([',', ' ']).next().unwrap_or("");
        quoted.unwrap_or_else(bare).trim() == REALM
    })
}

#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    pub fn read(dir: &Path) -> Result<Self, String> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("basic auth is on but {} cannot be read: {e}", path.display()))
        };
        let (user, password) = (read("basic-auth-user")?, read("basic-auth-password")?);
        if user.is_empty() || password.is_empty() {
            return Err(format!("basic auth is on but the user or password file in {} is empty", dir.display()));
        }
        Ok(Credentials { user, password })
    }

    /// The `Authorization` header value for these credentials (the gateway calling itself).
    pub fn header_value(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password))
        )
    }

    /// Whether the request carries these credentials.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        else {
            return false;
        };
        let Some(split) = given.iter().position(|b| *b == b':') else { return false };
        let (user, password) = (&given[..split], &given[split + 1..]);
        // Both compared whatever the first gives, so timing tells nothing about which was wrong.
        let ok = user.ct_eq(self.user.as_bytes()) & password.ct_eq(self.password.as_bytes());
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn accepts_only_the_exact_pair() {
        let c = Credentials { user: "admin".into(), password: "s3cret".into() };
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(c.allows(&with(&format!("Basic {}", b64("admin:s3cret")))));
        assert!(!c.allows(&with(&format!("Basic {}", b64("admin:s3cre")))));
        assert!(!c.allows(&with(&format!("Basic {}", b64("admin:s3cret2")))));
        assert!(!c.allows(&with(&format!("Basic {}", b64("root:s3cret")))));
        assert!(!c.allows(&with(&format!("Bearer {}", b64("admin:s3cret")))));
        assert!(!c.allows(&with("Basic not-base64!")));
        assert!(!c.allows(&HeaderMap::new()));
    }

    #[test]
    fn a_challenge_for_our_realm_is_told_apart_from_a_functions_own() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(names_our_realm(&v(CHALLENGE)));
        assert!(names_our_realm(&v("basic realm=\"FLINT GATEWAY\"")));
        assert!(names_our_realm(&v("Digest nonce=\"x\", realm=\"Flint gateway\"")));
        assert!(!names_our_realm(&v("Basic realm=\"my app\"")));
        assert!(!names_our_realm(&v("Bearer")));
    }

    #[test]
    fn reading_missing_files_says_which() {
        let e = Credentials::read(Path::new("/nonexistent-flint")).err().unwrap();
        assert!(e.contains("basic-auth-user"), "{e}");
    }
}
