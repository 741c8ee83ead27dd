//! `streaming` mode (fork per request): `fprocess` starts for every invocation, the request body
//! goes to its stdin and its stdout streams back as the response. Request metadata reaches it as
//! CGI-style variables with OpenFaaS's names (`Http_Method`, `Http_Path`, `Http_Query`,
//! `Http_<Header>`).
//!
//! The status is sent when the process writes its first byte or exits: a process that fails
//! before writing anything gets 500; one that fails after it started streaming has its
//! response cut off (the 200 is already on the wire) and the failure logged.

use std::{process::Stdio, sync::Arc};

use flint_http::{BoxError, empty};
use futures::{StreamExt, TryStreamExt, future, stream};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::{Response, header};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::{
    error::InvokeError,
    logs::Output,
    process::{self, Group, Tail},
    stack::{Req, ResFuture},
};

#[derive(Clone)]
pub struct Fork(Arc<Settings>);

struct Settings {
    argv: Vec<String>,
    content_type: Option<header::HeaderValue>,
    stderr_in_body: bool,
    out: Output,
}

impl Fork {
    pub fn new(argv: Vec<String>, content_type: Option<&str>, stderr_in_body: bool, out: Output) -> Self {
        let content_type = content_type.and_then(|c| header::HeaderValue::from_str(c).ok());
        Fork(Arc::new(Settings { argv, content_type, stderr_in_body, out }))
    }

    pub fn call(&self, req: Req) -> ResFuture {
        let settings = self.0.clone();
        Box::pin(async move { settings.invoke(req).await })
    }
}

impl Settings {
    async fn invoke(&self, req: Req) -> Result<hyper::Response<flint_http::body::Body>, InvokeError> {
        let (parts, body) = req.into_parts();
        let mut cmd = process::command(&self.argv);
        cmd.envs(cgi_env(&parts)).stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(InvokeError::Spawn)?;
        let group = Group::of(&child);
        let tail = Tail::default();
        let stderr = process::forward(child.stderr.take().unwrap(), "stderr", self.out.clone(), Some(tail.clone()));

        // The body goes to stdin as it arrives; a process that stops reading ends the copy.
        let mut stdin = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let frames = BodyStream::new(body)
                .try_filter_map(|frame| future::ready(Ok(frame.into_data().ok())))
                .map_err(std::io::Error::other);
            let _ = tokio::io::copy(&mut StreamReader::new(frames), &mut stdin).await;
        });

        let mut stdout = ReaderStream::new(child.stdout.take().unwrap());
        let first = stdout.next().await;
        let body = match first {
            None => {
                let status = child.wait().await.map_err(InvokeError::Spawn)?;
                // The group is killed first, so that its members' ends of the stderr pipe close;
                // only something that left the group could hold it open, hence the bound.
                drop(group);
                if !status.success() {
                    if self.stderr_in_body {
                        let _ = tokio::time::timeout(STDERR_DRAIN, stderr).await;
                    }
                    return Err(InvokeError::Failed {
                        status: flint_http::exit::describe(status),
                        stderr: self.stderr_in_body.then(|| tail.take()),
                    });
                }
                empty()
            }
            Some(first) => {
                // Streaming from here on: the process (and its group, held by this stream) lives
                // as long as the body; dropping the body early kills them.
                let end = stream::once(async move {
                    let status = child.wait().await;
                    drop(group);
                    match status {
                        Ok(s) if s.success() => None,
                        Ok(s) => {
                            tracing::warn!(
                                "function {} after its response started; response cut off",
                                flint_http::exit::describe(s)
                            );
                            Some(Err(std::io::Error::other(format!("function {}", flint_http::exit::describe(s)))))
                        }
                        Err(e) => Some(Err(e)),
                    }
                })
                .filter_map(future::ready);
                let chunks = stream::once(future::ready(first)).chain(stdout).chain(end);
                StreamBody::new(chunks.map_ok(hyper::body::Frame::data).map_err(BoxError::from)).boxed_unsync()
            }
        };
        let mut response = Response::new(body);
        if let Some(ct) = &self.content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        Ok(response)
    }
}

/// Longest a failure reply waits for the rest of the process's stderr after it exited.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// CGI-style variables, named as OpenFaaS's watchdogs name them.
pub fn cgi_env(parts: &hyper::http::request::Parts) -> Vec<(String, String)> {
    let mut env = vec![
        ("Http_Method".to_string(), parts.method.to_string()),
        ("Http_Path".to_string(), parts.uri.path().to_string()),
        ("Http_Query".to_string(), parts.uri.query().unwrap_or_default().to_string()),
    ];
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        env.push(("Http_ContentLength".to_string(), len.to_string()));
    }
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            env.push((format!("Http_{}", canonical(name.as_str())), value.to_string()));
        }
    }
    env
}

/// `x-call-id` → `X_Call_Id`: Go's canonical header form with `-` as `_`, as OpenFaaS does.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_become_openfaas_variable_names() {
        assert_eq!(canonical("content-type"), "Content_Type");
        assert_eq!(canonical("x-call-id"), "X_Call_Id");
        assert_eq!(canonical("accept"), "Accept");
    }

    #[test]
    fn request_metadata_becomes_cgi_variables() {
        let (parts, _) = hyper::Request::post("/resize/big?w=10&h=5")
            .header("content-type", "image/png")
            .header("content-length", "42")
            .header("x-call-id", "abc")
            .body(())
            .unwrap()
            .into_parts();
        let env: std::collections::HashMap<_, _> = cgi_env(&parts).into_iter().collect();
        assert_eq!(env["Http_Method"], "POST");
        assert_eq!(env["Http_Path"], "/resize/big");
        assert_eq!(env["Http_Query"], "w=10&h=5");
        assert_eq!(env["Http_Content_Type"], "image/png");
        assert_eq!(env["Http_ContentLength"], "42");
        assert_eq!(env["Http_X_Call_Id"], "abc");
    }
}
