//! Settings, read from the environment under the names OpenFaaS's of-watchdog uses, into a
//! struct tests can build. A bad value stops the watchdog at once with a message naming the
//! variable and what it accepts (of-watchdog silently turns it into 0).

use std::{collections::HashMap, net::IpAddr, time::Duration};

/// How the watchdog turns a request into an invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `fprocess` is a long-running HTTP server at `upstream_url`; requests are proxied to it.
    Http,
    /// `fprocess` is started for every request: body on stdin, response from stdout.
    Streaming,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The function's process, split like a shell would (`fprocess`).
    pub fprocess: Vec<String>,
    pub mode: Mode,
    /// Where the function's own server listens in http mode (`upstream_url`).
    pub upstream: Option<hyper::Uri>,
    pub bind: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    /// Longest invocation; 0 = none (`exec_timeout`).
    pub exec_timeout: Option<Duration>,
    /// Longest wait for a request's headers (`read_timeout`).
    pub read_timeout: Duration,
    /// Longest wait for accepted requests to finish on shutdown (`write_timeout`).
    pub write_timeout: Duration,
    /// Invocations in flight at once; 0 = unlimited (`max_inflight`).
    pub max_inflight: usize,
    /// After SIGTERM, how long new connections are still served while endpoints are removed
    /// (`healthcheck_interval`).
    pub healthcheck_interval: Duration,
    /// Prefix forwarded output lines with `stdout:`/`stderr:` (`prefix_logs`).
    pub prefix_logs: bool,
    /// Content-Type of every streaming response (`content_type`).
    pub content_type: Option<String>,
    /// Put a failed process's stderr in the 500 body (`stderr_in_body`); off: log only.
    pub stderr_in_body: bool,
    /// `json` or `text` (`log_format`).
    pub log_json: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { var, message: message.into() }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|s| s.trim()).filter(|s| !s.is_empty());
        let mode = match get("mode") {
            None | Some("streaming") => Mode::Streaming,
            Some("http") => Mode::Http,
            Some(other) => return Err(err("mode", format!("unknown mode {other:?}; accepted: http, streaming"))),
        };
        let fprocess = match get("fprocess") {
            None => {
                return Err(err(
                    "fprocess",
                    "is required: the command that runs the function, e.g. fprocess=\"python3 handler.py\"",
                ));
            }
            Some(f) => shlex::split(f)
                .filter(|argv| !argv.is_empty())
                .ok_or_else(|| err("fprocess", format!("{f:?} is not a command line (unbalanced quotes?)")))?,
        };
        let upstream = match (mode, get("upstream_url")) {
            (Mode::Http, None) => {
                return Err(err(
                    "upstream_url",
                    "is required in http mode: where the function's server listens, e.g. http://127.0.0.1:5000",
                ));
            }
            (_, None) => None,
            (_, Some(u)) => {
                let uri: hyper::Uri = u.parse().map_err(|e| err("upstream_url", format!("{u:?} is not a URL: {e}")))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(err("upstream_url", format!("{u:?} must be an http:// URL with a host and port")));
                }
                Some(uri)
            }
        };
        let duration = |var: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => parse_duration(v).map_err(|m| err(var, m)),
            }
        };
        let number = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| err(var, format!("{v:?} is not a whole number >= 0"))),
            }
        };
        let port = |var: &'static str, default: u16| -> Result<u16, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| err(var, format!("{v:?} is not a port (0-65535)"))),
            }
        };
        let flag = |var: &'static str, default: bool| -> Result<bool, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(v) => Err(err(var, format!("{v:?} is not a boolean; accepted: true, false"))),
            }
        };
        let exec_timeout = duration("exec_timeout", Duration::from_secs(10))?;
        let write_timeout = duration("write_timeout", Duration::from_secs(10))?;
        Ok(Config {
            fprocess,
            mode,
            upstream,
            bind: match get("bind_address") {
                None => IpAddr::from([0, 0, 0, 0]),
                Some(v) => v.parse().map_err(|_| err("bind_address", format!("{v:?} is not an IP address")))?,
            },
            port: port("port", 8080)?,
            metrics_port: port("metrics_port", 8081)?,
            exec_timeout: (!exec_timeout.is_zero()).then_some(exec_timeout),
            read_timeout: duration("read_timeout", Duration::from_secs(10))?,
            write_timeout,
            max_inflight: number("max_inflight", 0)? as usize,
            healthcheck_interval: duration("healthcheck_interval", Duration::from_secs(5))?,
            prefix_logs: flag("prefix_logs", true)?,
            content_type: get("content_type").map(str::to_string),
            stderr_in_body: flag("stderr_in_body", false)?,
            log_json: match get("log_format") {
                None | Some("text") => false,
                Some("json") => true,
                Some(v) => return Err(err("log_format", format!("unknown format {v:?}; accepted: text, json"))),
            },
        })
    }
}

/// `10s`, `500ms`, `1m30s`, or a bare number of seconds as of-watchdog accepts.
fn parse_duration(v: &str) -> Result<Duration, String> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    flint_api::duration::parse(v).map_err(|e| format!("{e}, or a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_follow_of_watchdog() {
        let c = Config::from_vars(&vars(&[("fprocess", "cat")])).unwrap();
        assert_eq!(c.mode, Mode::Streaming);
        assert_eq!((c.port, c.metrics_port), (8080, 8081));
        assert_eq!(c.exec_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.max_inflight, 0);
        assert!(c.prefix_logs);
    }

    #[test]
    fn fprocess_is_split_like_a_shell() {
        let c = Config::from_vars(&vars(&[("fprocess", "sh -c 'echo hi; cat'")])).unwrap();
        assert_eq!(c.fprocess, ["sh", "-c", "echo hi; cat"]);
    }

    #[test]
    fn durations_take_units_or_seconds() {
        let c =
            Config::from_vars(&vars(&[("fprocess", "cat"), ("exec_timeout", "1m30s"), ("read_timeout", "7")])).unwrap();
        assert_eq!(c.exec_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.read_timeout, Duration::from_secs(7));
        let c = Config::from_vars(&vars(&[("fprocess", "cat"), ("exec_timeout", "0")])).unwrap();
        assert_eq!(c.exec_timeout, None);
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_accepts() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[], "fprocess", "required"),
            (&[("fprocess", "cat"), ("mode", "afterburner")], "mode", "http, streaming"),
            (&[("fprocess", "cat"), ("exec_timeout", "soon")], "exec_timeout", "number of seconds"),
            (&[("fprocess", "cat"), ("mode", "http")], "upstream_url", "required in http mode"),
            (&[("fprocess", "cat"), ("max_inflight", "-1")], "max_inflight", "whole number"),
            (&[("fprocess", "cat"), ("port", "http")], "port", "0-65535"),
            (&[("fprocess", "cat"), ("prefix_logs", "maybe")], "prefix_logs", "true, false"),
            (&[("fprocess", "'unclosed")], "fprocess", "unbalanced"),
        ];
        for (pairs, var, hint) in cases {
            let e = Config::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{e}");
            assert!(e.to_string().contains(hint), "{e} should mention {hint}");
        }
    }
}
