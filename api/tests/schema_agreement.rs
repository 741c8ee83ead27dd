//! The three validators agree, offline (the fast inner loop; `tests/api_server.rs` asks the real
//! API server the same questions): every manifest under `manifests/bad` is refused both by the
//! path the API server takes (the CRD's OpenAPI schema, list uniqueness, then its CEL rules) and
//! by `validate()`, each with a message naming the field in the file's `# field:` line — except
//! those marked `# judged-by: validate`, which only `validate()` can judge (the API server
//! accepts them; the operator reports them as `Ready=False, InvalidSpec`). Every manifest under
//! `manifests/good` and every example's `function.yaml` is accepted by both.

use std::{fs, path::PathBuf};

use flint_api::manifest;
use kube::core::cel::Validator;
use serde_json::Value;

fn open_api_schema() -> Value {
    let crd = flint_api::crd::definition();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
    serde_json::to_value(schema).unwrap()
}

/// What the API server would say: schema violations, then CEL rule failures.
fn api_server_errors(doc: &Value) -> Vec<String> {
    let schema = open_api_schema();
    let mut out = Vec::new();
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    for e in validator.iter_errors(doc) {
        let mut path: Vec<String> = e.instance_path().into_iter().map(|c| c.to_string()).collect();
        if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
            path.push(property.as_str().unwrap_or_default().to_string());
        }
        out.push(format!("{}: {e}", path.join(".")));
    }
    unique_list_items(&schema, doc, "", &mut out);
    if let Err(errors) = Validator::new().validate(&schema, doc, None) {
        for e in errors.into_vec() {
            out.push(format!("{}: {} ({:?})", e.field_path, e.message, e.kind));
        }
    }
    out
}

/// What `x-kubernetes-list-type: map|set` makes the API server refuse: duplicate keys or items.
fn unique_list_items(schema: &Value, doc: &Value, path: &str, out: &mut Vec<String>) {
    match (doc, schema) {
        (Value::Array(items), _) => {
            let keys: Option<Vec<&str>> =
                schema["x-kubernetes-list-map-keys"].as_array().map(|k| k.iter().filter_map(Value::as_str).collect());
            let key_of = |item: &Value| match &keys {
                Some(keys) => keys.iter().map(|k| item[*k].clone()).collect::<Vec<_>>(),
                None => vec![item.clone()],
            };
            if matches!(schema["x-kubernetes-list-type"].as_str(), Some("map" | "set")) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].iter().any(|o| key_of(o) == key_of(item)) {
                        out.push(format!("{path}[{i}]: Duplicate value"));
                    }
                }
            }
            for (i, item) in items.iter().enumerate() {
                unique_list_items(&schema["items"], item, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Object(fields), _) => {
            for (k, v) in fields {
                let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                unique_list_items(&schema["properties"][k], v, &at, out);
            }
        }
        _ => {}
    }
}

fn read(path: &PathBuf) -> (String, Value) {
    let text = fs::read_to_string(path).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, doc)
}

fn yaml_files(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn here(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn every_bad_manifest_is_refused_by_both_naming_the_field() {
    let files = yaml_files(here("tests/manifests/bad"));
    assert!(files.len() >= 15, "at least 15 bad manifests, found {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let (text, doc) = read(path);
        let field = text
            .lines()
            .find_map(|l| l.strip_prefix("# field: "))
            .unwrap_or_else(|| panic!("{} has no '# field:' line", path.display()))
            .trim()
            .to_string();
        let name = path.file_name().unwrap().to_string_lossy();

        let server = api_server_errors(&doc);
        if text.contains("# judged-by: validate") {
            if !server.is_empty() {
                failures
                    .push(format!("{name}: marked judged-by validate, but the API server path refused it: {server:?}"));
            }
        } else if !server.iter().any(|e| e.contains(&field)) {
            failures.push(format!("{name}: API server path did not name {field}: {server:?}"));
        }
        match manifest::from_value(doc) {
            Ok(_) => failures.push(format!("{name}: validate() accepted it")),
            Err(invalid) => {
                if !invalid.0.iter().any(|e| e.field.starts_with(&field) || e.to_string().contains(&field)) {
                    failures.push(format!("{name}: validate() did not name {field}: {invalid}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_good_manifest_and_example_is_accepted_by_both() {
    let mut files = yaml_files(here("tests/manifests/good"));
    let examples = here("../examples");
    for entry in fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path().join("function.yaml");
        if path.exists() {
            files.push(path);
        }
    }
    assert!(files.iter().any(|p| p.starts_with(&examples)), "no example function.yaml found");
    let mut failures = Vec::new();
    for path in &files {
        let (text, _) = read(path);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs {
            let server = api_server_errors(&doc);
            if !server.is_empty() {
                failures.push(format!("{}: API server path refused it: {server:?}", path.display()));
            }
            if let Err(e) = manifest::from_value(doc) {
                failures.push(format!("{}: validate() refused it: {e}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn validate_reports_every_problem_at_once() {
    let doc: Value = serde_saphyr::from_str(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: Bad_Name}\n\
         spec: {image: x, concurrency: -3, scale: {min: 5, max: 2}, timeout: 0s}\n",
    )
    .unwrap();
    let invalid = manifest::from_value(doc).unwrap_err();
    let fields: Vec<&str> = invalid.0.iter().map(|e| e.field.as_str()).collect();
    for want in ["metadata.name", "spec.concurrency", "spec.scale.min", "spec.timeout"] {
        assert!(fields.contains(&want), "{want} missing from {invalid}");
    }
    assert!(invalid.to_string().contains("spec.scale.min: must be <= spec.scale.max (5 > 2)"), "{invalid}");
}

/// A well-shaped name passes the CRD's pattern; only Flint knows the zone database.
#[test]
fn a_time_zone_that_does_not_exist_is_refused_naming_it_and_real_ones_pass() {
    let doc = |zone: &str| -> Value {
        serde_saphyr::from_str(&format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: demo}}\n\
             spec: {{image: x, scale: {{schedule: [{{cron: '0 9 * * *', min: 1, for: 8h, timeZone: {zone}}}]}}}}\n"
        ))
        .unwrap()
    };
    let invalid = manifest::from_value(doc("Mars/Olympus_Mons")).unwrap_err();
    assert!(
        invalid.to_string().contains("spec.scale.schedule[0].timeZone: \"Mars/Olympus_Mons\" is not an IANA time zone"),
        "{invalid}"
    );
    for zone in ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+2"] {
        assert!(api_server_errors(&doc(zone)).is_empty(), "{zone}: the CRD refused it");
        manifest::from_value(doc(zone)).unwrap_or_else(|e| panic!("{zone}: {e}"));
    }
}

#[test]
fn the_committed_crd_is_current() {
    let committed = fs::read_to_string(here("../crds/function.yaml")).unwrap_or_default();
    assert!(
        committed == flint_api::crd::yaml(),
        "crds/function.yaml is stale: run `cargo run -p flint-operator -- crd > crds/function.yaml`"
    );
}

#[test]
fn the_crd_describes_every_spec_field() {
    let schema = open_api_schema();
    let spec = &schema["properties"]["spec"]["properties"];
    let mut undocumented = Vec::new();
    fn walk(path: &str, props: &Value, out: &mut Vec<String>) {
        for (name, prop) in props.as_object().unwrap() {
            let at = format!("{path}.{name}");
            if prop.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                out.push(at.clone());
            }
            if let Some(inner) = prop.get("properties") {
                walk(&at, inner, out);
            }
            if let Some(inner) = prop.get("items").and_then(|i| i.get("properties")) {
                walk(&at, inner, out);
            }
        }
    }
    walk("spec", spec, &mut undocumented);
    assert!(undocumented.is_empty(), "fields without a description: {undocumented:?}");
}
