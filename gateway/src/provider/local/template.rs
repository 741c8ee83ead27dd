//! How a Function's version becomes a local replica: the watchdog's environment, derived the
//! same way the operator derives a pod's (timeout → `exec_timeout`/`write_timeout`, concurrency
//! → `max_inflight`), plus what only local mode needs: a loopback port per replica, and for
//! http-mode functions a port for the function's own server (`PORT`, `upstream_url`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use flint_api::{EnvVar, Function, Invalid, validate::FieldError};

use crate::provider::Version;

/// Everything needed to start replicas of one version; equal templates need no restart.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub namespace: String,
    pub name: String,
    pub version: Version,
    /// The function's environment (after the canary's overrides and secrets).
    pub env: BTreeMap<String, String>,
    pub fprocess: String,
    /// The function is an HTTP server (`mode=http`): give each replica its own upstream port.
    pub http_mode: bool,
    pub timeout: Duration,
    pub concurrency: i32,
    pub workdir: PathBuf,
}

impl Template {
    pub fn new(f: &Function, version: Version, workdir: &Path, secrets_dir: &Path) -> Result<Self, Invalid> {
        let spec = &f.spec;
        let mut problems = Vec::new();
        let mut env = BTreeMap::new();
        let mut apply = |vars: &[EnvVar], field: &str, problems: &mut Vec<FieldError>| {
            for (i, var) in vars.iter().enumerate() {
                let value = match (&var.value, &var.value_from) {
                    (Some(v), _) => Some(v.clone()),
                    (None, None) => Some(String::new()),
                    (None, Some(from)) => {
                        let r = &from.secret_key_ref;
                        let path = secrets_dir.join(&r.name.0).join(&r.key);
                        match std::fs::read_to_string(&path) {
                            Ok(v) => Some(v.trim_end_matches('\n').to_string()),
                            Err(_) if r.optional => None,
                            Err(e) => {
                                problems.push(FieldError {
                                    field: format!("{field}[{i}].valueFrom.secretKeyRef"),
                                    message: format!("local mode reads secrets from {}: {e}", path.display()),
                                });
                                None
                            }
                        }
                    }
                };
                if let Some(value) = value {
                    env.insert(var.name.clone(), value);
                }
            }
        };
        apply(&spec.env, "spec.env", &mut problems);
        if version == Version::Canary
            && let Some(canary) = &spec.canary
        {
            apply(&canary.env, "spec.canary.env", &mut problems);
        }
        for (i, from) in spec.env_from.iter().enumerate() {
            let dir = secrets_dir.join(&from.secret_ref.name.0);
            match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    for entry in entries.flatten() {
                        if let Ok(value) = std::fs::read_to_string(entry.path()) {
                            env.insert(
                                entry.file_name().to_string_lossy().into_owned(),
                                value.trim_end_matches('\n').into(),
                            );
                        }
                    }
                }
                Err(e) => problems.push(FieldError {
                    field: format!("spec.envFrom[{i}].secretRef"),
                    message: format!("local mode reads secrets from {}: {e}", dir.display()),
                }),
            }
        }
        let fprocess = match &spec.command {
            Some(command) => {
                let argv: Vec<&str> = command.iter().chain(spec.args.iter().flatten()).map(String::as_str).collect();
                shlex::try_join(argv).ok()
            }
            None => env.get("fprocess").map(|f| {
                let args: Vec<&str> = spec.args.iter().flatten().map(String::as_str).collect();
                if args.is_empty() { f.clone() } else { format!("{f} {}", shlex::try_join(args).unwrap_or_default()) }
            }),
        };
        let Some(fprocess) = fprocess.filter(|f| !f.is_empty()) else {
            problems.push(FieldError {
                field: "spec.command".into(),
                message: "local mode runs the function's process itself: set spec.command (or an fprocess env var)"
                    .into(),
            });
            return Err(Invalid(problems));
        };
        if !problems.is_empty() {
            return Err(Invalid(problems));
        }
        let http_mode = env.get("mode").is_some_and(|m| m == "http");
        Ok(Template {
            namespace: f.metadata.namespace.clone().unwrap_or_default(),
            name: f.metadata.name.clone().unwrap_or_default(),
            version,
            env,
            fprocess,
            http_mode,
            timeout: spec.timeout.get(),
            concurrency: spec.concurrency,
            workdir: workdir.to_path_buf(),
        })
    }

    /// The watchdog's environment for one replica on `port` (and `upstream_port` in http mode).
    pub fn watchdog_env(&self, port: u16, metrics_port: u16, upstream_port: u16) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        let timeout = flint_api::duration::format(self.timeout);
        let mut set = |k: &str, v: String| env.insert(k.to_string(), v);
        set("fprocess", self.fprocess.clone());
        set("port", port.to_string());
        set("metrics_port", metrics_port.to_string());
        set("bind_address", "127.0.0.1".into());
        set("exec_timeout", timeout.clone());
        set("write_timeout", timeout);
        set("max_inflight", self.concurrency.to_string());
        // The gateway stops routing to a replica before stopping it; a short grace covers a
        // request routed in the same instant.
        set("healthcheck_interval", "200ms".into());
        set("prefix_logs", "false".into());
        if self.http_mode {
            set("PORT", upstream_port.to_string());
            set("upstream_url", format!("http://127.0.0.1:{upstream_port}"));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(yaml: &str) -> Function {
        flint_api::manifest::from_yaml(yaml).unwrap().remove(0)
    }

    const BASE: &str = "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: f, namespace: ns}\n";

    #[test]
    fn derives_the_watchdog_settings_from_the_spec() {
        let f = function(&format!(
            "{BASE}spec:\n  image: x\n  command: [python3, handler.py, 'two words']\n  timeout: 1m30s\n  concurrency: 4\n  env: [{{name: A, value: '1'}}]\n"
        ));
        let t = Template::new(&f, Version::Stable, Path::new("/w"), Path::new("/s")).unwrap();
        assert_eq!(t.fprocess, "python3 handler.py 'two words'");
        let env = t.watchdog_env(1000, 1001, 1002);
        assert_eq!(env["exec_timeout"], "1m30s");
        assert_eq!(env["write_timeout"], "1m30s");
        assert_eq!(env["max_inflight"], "4");
        assert_eq!(env["port"], "1000");
        assert_eq!(env["A"], "1");
        assert!(!env.contains_key("upstream_url"));
    }

    #[test]
    fn http_mode_gets_its_own_upstream_port() {
        let f = function(&format!(
            "{BASE}spec:\n  image: x\n  command: [server]\n  env: [{{name: mode, value: http}}, {{name: upstream_url, value: 'http://127.0.0.1:5000'}}]\n"
        ));
        let t = Template::new(&f, Version::Stable, Path::new("/w"), Path::new("/s")).unwrap();
        let env = t.watchdog_env(1000, 1001, 1002);
        assert_eq!(env["PORT"], "1002");
        assert_eq!(env["upstream_url"], "http://127.0.0.1:1002");
    }

    #[test]
    fn the_canary_overrides_env_by_name() {
        let f = function(&format!(
            "{BASE}spec:\n  image: x\n  command: [run]\n  env: [{{name: V, value: '1'}}, {{name: K, value: keep}}]\n  canary: {{image: x2, weight: 10, env: [{{name: V, value: '2'}}]}}\n"
        ));
        let stable = Template::new(&f, Version::Stable, Path::new("/w"), Path::new("/s")).unwrap();
        let canary = Template::new(&f, Version::Canary, Path::new("/w"), Path::new("/s")).unwrap();
        assert_eq!((stable.env["V"].as_str(), canary.env["V"].as_str()), ("1", "2"));
        assert_eq!(canary.env["K"], "keep");
        assert_ne!(stable, canary);
    }

    #[test]
    fn a_function_without_a_process_is_refused_naming_the_field() {
        let f = function(&format!("{BASE}spec: {{image: x}}\n"));
        let e = Template::new(&f, Version::Stable, Path::new("/w"), Path::new("/s")).unwrap_err();
        assert_eq!(e.0[0].field, "spec.command");
    }

    #[test]
    fn secrets_are_read_from_the_secrets_folder() {
        let dir = std::env::temp_dir().join(format!("flint-secrets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        std::fs::write(dir.join("tokens/api"), "s3cr3t\n").unwrap();
        let f = function(&format!(
            "{BASE}spec:\n  image: x\n  command: [run]\n  env:\n  - name: TOKEN\n    valueFrom: {{secretKeyRef: {{name: tokens, key: api}}}}\n  - name: MISSING\n    valueFrom: {{secretKeyRef: {{name: tokens, key: nope}}}}\n"
        ));
        let e = Template::new(&f, Version::Stable, Path::new("/w"), &dir).unwrap_err();
        assert_eq!(e.0[0].field, "spec.env[1].valueFrom.secretKeyRef");
        let f = function(&format!(
            "{BASE}spec:\n  image: x\n  command: [run]\n  env:\n  - name: TOKEN\n    valueFrom: {{secretKeyRef: {{name: tokens, key: api}}}}\n"
        ));
        let t = Template::new(&f, Version::Stable, Path::new("/w"), &dir).unwrap();
        assert_eq!(t.env["TOKEN"], "s3cr3t");
        let _ = std::fs::remove_dir_all(dir);
    }
}
