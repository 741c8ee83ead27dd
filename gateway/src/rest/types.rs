//! The OpenFaaS REST API's JSON shapes (faas-provider's `FunctionDeployment`,
//! `FunctionStatus`, ...) and how they map to and from a Flint `Function`. Fields Flint has no
//! use for (`constraints`, `registryAuth`) are accepted and ignored, so existing stack files deploy.
//!
//! A deployment's `envProcess` is the function's process (Flint's `spec.command`); the
//! OpenFaaS scaling labels `com.openfaas.scale.min`, `.max` and `.target` set `spec.scale`.

use std::collections::BTreeMap;

use flint_api::{
    EnvVar, Function, FunctionSpec, Invalid, ResourceList, Resources, function::SecretName, validate::FieldError,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::provider::Deployed;

/// `POST`/`PUT /system/functions`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeployment {
    pub service: String,
    pub image: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub env_process: Option<String>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub limits: Option<FunctionResources>,
    #[serde(default)]
    pub requests: Option<FunctionResources>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
pub struct FunctionResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// `GET /system/functions` and `/system/function/NAME`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    pub name: String,
    pub image: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_process: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<FunctionResources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<FunctionResources>,
    pub read_only_root_filesystem: bool,
    pub invocation_count: f64,
    pub replicas: u64,
    pub available_replicas: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Flint's own: `spec.paused`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Flint's own: `spec.throttle` and what it holds now in this gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleStatus>,
}

#[derive(Serialize, Debug)]
pub struct ThrottleStatus {
    #[serde(flatten)]
    pub spec: flint_api::Throttle,
    #[serde(flatten)]
    pub usage: crate::invoke::throttle::Usage,
}

/// `POST /system/scale-function/NAME`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRequest {
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub namespace: String,
    pub replicas: u64,
}

/// `DELETE /system/functions`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRequest {
    pub function_name: String,
    #[serde(default)]
    pub namespace: String,
}

pub const SCALE_MIN: &str = "com.openfaas.scale.min";
pub const SCALE_MAX: &str = "com.openfaas.scale.max";
pub const SCALE_TARGET: &str = "com.openfaas.scale.target";

impl FunctionDeployment {
    /// The Function this deployment asks for; `validate()` runs after.
    pub fn into_function(self, default_namespace: &str) -> Result<Function, Invalid> {
        let mut problems = Vec::new();
        let mut spec = FunctionSpec::with_image(self.image);
        if let Some(process) = self.env_process.filter(|p| !p.trim().is_empty()) {
            match shlex::split(&process) {
                Some(argv) if !argv.is_empty() => spec.command = Some(argv),
                _ => problems
                    .push(field("envProcess", format!("{process:?} is not a command line (unbalanced quotes?)"))),
            }
        }
        spec.env = self
            .env_vars
            .into_iter()
            .map(|(name, value)| EnvVar { name, value: Some(value), value_from: None })
            .collect();
        spec.secrets = self.secrets.into_iter().map(SecretName).collect();
        let mut labels = self.labels.unwrap_or_default();
        for (label, target) in
            [(SCALE_MIN, &mut spec.scale.min), (SCALE_MAX, &mut spec.scale.max), (SCALE_TARGET, &mut spec.scale.target)]
        {
            if let Some(v) = labels.remove(label) {
                match v.parse() {
                    Ok(n) => *target = n,
                    Err(_) => problems.push(field(&format!("labels.{label}"), format!("{v:?} is not a whole number"))),
                }
            }
        }
        spec.labels = labels;
        spec.annotations = self.annotations.unwrap_or_default();
        let list = |r: Option<FunctionResources>| r.map(|r| ResourceList { cpu: r.cpu, memory: r.memory });
        let (requests, limits) = (list(self.requests), list(self.limits));
        if requests.is_some() || limits.is_some() {
            spec.resources = Some(Resources { requests, limits });
        }
        spec.read_only_root_filesystem = self.read_only_root_filesystem;
        let namespace = if self.namespace.is_empty() { default_namespace.to_string() } else { self.namespace };
        let mut f = Function::new(&self.service, spec);
        f.metadata = ObjectMeta { name: Some(self.service), namespace: Some(namespace), ..Default::default() };
        if let Err(Invalid(more)) = f.validate() {
            problems.extend(more);
        }
        if problems.is_empty() { Ok(f) } else { Err(Invalid(problems)) }
    }
}

fn field(field: &str, message: String) -> FieldError {
    FieldError { field: field.to_string(), message }
}

impl FunctionStatus {
    pub fn of(d: &Deployed, invocation_count: f64, usage: crate::invoke::throttle::Usage) -> Self {
        let f = &d.function;
        let spec = &f.spec;
        let env_process = spec.command.as_ref().map(|c| {
            let argv: Vec<&str> = c.iter().chain(spec.args.iter().flatten()).map(String::as_str).collect();
            shlex::try_join(argv).unwrap_or_default()
        });
        let mut labels = spec.labels.clone();
        labels.insert(SCALE_MIN.into(), spec.scale.min.to_string());
        labels.insert(SCALE_MAX.into(), spec.scale.max.to_string());
        labels.insert(SCALE_TARGET.into(), spec.scale.target.to_string());
        let list = |l: &Option<ResourceList>| {
            l.as_ref().map(|l| FunctionResources { cpu: l.cpu.clone(), memory: l.memory.clone() })
        };
        FunctionStatus {
            name: f.metadata.name.clone().unwrap_or_default(),
            image: spec.image.clone(),
            namespace: f.metadata.namespace.clone().unwrap_or_default(),
            env_process,
            env_vars: spec.env.iter().filter_map(|e| Some((e.name.clone(), e.value.clone()?))).collect(),
            secrets: spec.secrets.iter().map(|s| s.0.clone()).collect(),
            labels: Some(labels),
            annotations: (!spec.annotations.is_empty()).then(|| spec.annotations.clone()),
            limits: spec.resources.as_ref().and_then(|r| list(&r.limits)),
            requests: spec.resources.as_ref().and_then(|r| list(&r.requests)),
            read_only_root_filesystem: spec.read_only_root_filesystem,
            invocation_count,
            replicas: d.replicas as u64,
            available_replicas: d.available as u64,
            created_at: d.created_at.map(|t| t.to_string()),
            paused: spec.paused,
            throttle: spec.throttle.clone().map(|spec| ThrottleStatus { spec, usage }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(json: &str) -> FunctionDeployment {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_deployment_becomes_a_function() {
        let f = deployment(
            r#"{"service":"resize","image":"acme/resize:1","envProcess":"python3 index.py --fast","envVars":{"A":"1"},
                "labels":{"team":"img","com.openfaas.scale.min":"2","com.openfaas.scale.max":"7"},
                "secrets":["s3"],"limits":{"memory":"128Mi"},"requests":{"cpu":"100m"},"readOnlyRootFilesystem":true}"#,
        )
        .into_function("default")
        .unwrap();
        assert_eq!(f.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(f.spec.command.as_deref(), Some(&["python3".to_string(), "index.py".into(), "--fast".into()][..]));
        assert_eq!((f.spec.scale.min, f.spec.scale.max), (2, 7));
        assert_eq!(f.spec.labels.get("team").map(String::as_str), Some("img"));
        assert!(!f.spec.labels.contains_key(SCALE_MIN));
        assert_eq!(f.spec.env[0].value.as_deref(), Some("1"));
        assert!(f.spec.read_only_root_filesystem);

        let d = Deployed { function: std::sync::Arc::new(f), replicas: 2, available: 1, created_at: None };
        let s = serde_json::to_value(FunctionStatus::of(&d, 5.0, Default::default())).unwrap();
        assert_eq!(s["envProcess"], "python3 index.py --fast");
        assert!(s.get("paused").is_none() && s.get("throttle").is_none(), "{s}");
        assert_eq!(s["labels"][SCALE_MAX], "7");
        assert_eq!(s["limits"]["memory"], "128Mi");
        assert_eq!((s["replicas"].as_u64(), s["availableReplicas"].as_u64()), (Some(2), Some(1)));
    }

    #[test]
    fn bad_deployments_name_every_problem() {
        let e = deployment(r#"{"service":"Bad_Name","image":"","labels":{"com.openfaas.scale.min":"many"}}"#)
            .into_function("default")
            .unwrap_err();
        assert_eq!(e.0[0].field, "labels.com.openfaas.scale.min");
        let e = deployment(
            r#"{"service":"Bad_Name","image":"","labels":{"com.openfaas.scale.min":"3","com.openfaas.scale.max":"1"}}"#,
        )
        .into_function("default")
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
        for want in ["metadata.name", "spec.image", "spec.scale.min"] {
            assert!(fields.contains(&want), "{want} missing in {e}");
        }
    }
}
