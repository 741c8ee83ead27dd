//! Reading Functions from what users write: YAML manifests (local mode reads the same files users
//! `kubectl apply`) and JSON values (the REST API). Type errors and unknown fields are reported
//! with their field path, as `kubectl apply` with strict field validation would, then the
//! Function goes through `validate()`.

use kube::Resource;
use serde_json::Value;

use crate::{
    function::Function,
    validate::{FieldError, Invalid},
};

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("document {index}: {error}")]
    Document { index: usize, error: Invalid },
}

/// Every Function in a YAML text (one or more `---`-separated documents).
pub fn from_yaml(text: &str) -> Result<Vec<Function>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(index, doc)| from_value(doc).map_err(|error| ManifestError::Document { index: index + 1, error }))
        .collect()
}

/// A Function from its JSON form, checked for kind, types, unknown fields and `validate()`.
pub fn from_value(mut doc: Value) -> Result<Function, Invalid> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(Invalid::one("(document)", "must be a mapping with apiVersion, kind, metadata and spec"));
    };
    let expect = |field: &str, got: Option<Value>, want: &str| -> Result<(), Invalid> {
        match got {
            Some(Value::String(s)) if s == want => Ok(()),
            other => Err(Invalid::one(field, format!("must be {want:?} (got {})", other.unwrap_or(Value::Null)))),
        }
    };
    expect("apiVersion", obj.remove("apiVersion"), &Function::api_version(&()))?;
    expect("kind", obj.remove("kind"), &Function::kind(&()))?;

    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(doc, &mut record);
    let function: Function = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde puts a missing field's error on its parent; users look for the field itself.
        let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "(document)".to_string(),
            (_, Some(name)) => format!("{path}.{name}"),
            (_, None) => path,
        };
        Invalid::one(field, message)
    })?;

    let mut problems: Vec<FieldError> =
        unknown.into_iter().map(|field| FieldError { field, message: "unknown field".into() }).collect();
    if let Err(Invalid(more)) = function.validate() {
        problems.extend(more);
    }
    if problems.is_empty() { Ok(function) } else { Err(Invalid(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_minimal_function_with_defaults() {
        let f = from_yaml(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: hello}\nspec: {image: hello:1}\n",
        )
        .unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].spec.timeout.to_string(), "30s");
        assert_eq!(f[0].spec.scale.max, 20);
        assert_eq!(f[0].spec.scale.zero_after.to_string(), "5m");
    }

    #[test]
    fn reads_several_documents() {
        let doc = |n: &str| {
            format!("apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: {n}}}\nspec: {{image: x}}\n")
        };
        let f = from_yaml(&format!("{}---\n{}", doc("a"), doc("b"))).unwrap();
        assert_eq!(f.iter().map(|f| f.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = from_yaml("apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: a}\nspec: {image: x, scale: {min: lots}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.scale.min"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let e = from_yaml("apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: a}\nspec: {image: x, scale: {minimum: 1}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.scale.minimum: unknown field"), "{e}");
    }

    #[test]
    fn wrong_kind_is_refused() {
        let e = from_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion") && e.contains("flint.dev/v1alpha1"), "{e}");
    }

    #[test]
    fn yaml_syntax_errors_are_reported() {
        assert!(matches!(from_yaml("spec: [unclosed"), Err(ManifestError::Yaml(_))));
    }
}
