//! An offline guard for the defect that once kept the CRD off every API server: the API server
//! prices each CEL rule by the largest input it could read, and takes an unbounded string, list
//! or map to be as large as a whole request (megabytes). This walks the generated schema and, for
//! every rule, finds what it reads (`self`, `self.a.b`, and the elements a macro iterates over);
//! it fails when a string read has no `maxLength` (or `enum`), a list no `maxItems`, a map no
//! `maxProperties`, or when a rule runs a string-scanning function over map keys (which no
//! schema can bound). It prints each rule's worst-case size assumptions.
//!
//! The real API server's verdict is in `tests/api_server.rs`; this is the fast, always-run check.

use serde_json::Value;

/// Functions whose cost grows with the length of the string they scan.
const SCANNING: &[&str] =
    &[".matches(", ".find(", ".findAll(", ".split(", ".replace(", ".validate(", "quantity(", "url("];

struct Rule {
    at: String,
    rule: String,
    node: Value,
}

fn rules(node: &Value, at: &str, out: &mut Vec<Rule>) {
    for r in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        out.push(Rule {
            at: at.to_string(),
            rule: r["rule"].as_str().unwrap_or_default().to_string(),
            node: node.clone(),
        });
    }
    for (name, prop) in node["properties"].as_object().into_iter().flatten() {
        rules(prop, &format!("{at}.{name}"), out);
    }
    if node["items"].is_object() {
        rules(&node["items"], &format!("{at}[]"), out);
    }
    if node["additionalProperties"].is_object() {
        rules(&node["additionalProperties"], &format!("{at}{{}}"), out);
    }
}

/// The schema node at `self.a.b` (from the rule's node), if the path resolves.
fn resolve<'a>(node: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(node, |n, field| n["properties"].get(*field))
}

/// `self` and `self.a.b` references outside `has(...)`, as field paths (empty: `self`).
fn references(rule: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = rule.as_bytes();
    let mut i = 0;
    while let Some(found) = rule[i..].find("self") {
        let start = i + found;
        i = start + 4;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !boundary || rule[..start].ends_with("has(") {
            continue;
        }
        let mut path = Vec::new();
        let mut j = i;
        while rule[j..].starts_with('.') {
            let ident: String = rule[j + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // A method call (`self.all(`, `self.x.matches(`) ends the field path.
            if ident.is_empty() || rule[j + 1 + ident.len()..].starts_with('(') {
                break;
            }
            j += 1 + ident.len();
            path.push(ident);
        }
        out.push(path);
    }
    out
}

/// Problems with one node a rule reads, and a description of its assumed size.
fn bounds(node: &Value, rule: &str, what: &str, problems: &mut Vec<String>) -> String {
    let has = |k: &str| node.get(k).is_some();
    match node["type"].as_str() {
        Some("string") if has("enum") => format!("{what}: one of {} values", node["enum"].as_array().unwrap().len()),
        Some("string") if has("maxLength") => format!("{what}: ≤ {} chars", node["maxLength"]),
        Some("string") => {
            problems.push(format!("{what} is a string without maxLength"));
            format!("{what}: unbounded string")
        }
        Some("array") => {
            if !has("maxItems") {
                problems.push(format!("{what} is a list without maxItems"));
            }
            let items = bounds(&node["items"], rule, &format!("{what}[]"), problems);
            format!("{what}: ≤ {} items; {items}", node["maxItems"])
        }
        Some("object") if node["additionalProperties"].is_object() => {
            if !has("maxProperties") {
                problems.push(format!("{what} is a map without maxProperties"));
            }
            // Map keys cannot be bounded by a schema: only functions priced by their other
            // argument (startsWith, endsWith, size, ==) may read them.
            if rule.contains(".all(") || rule.contains(".exists") {
                for f in SCANNING {
                    if rule.contains(f) {
                        problems.push(format!("{what}: the rule scans unbounded map keys (or values) with {f}"));
                    }
                }
            }
            // Values are read as `self[k]`; a rule over keys alone does not read them.
            let values = if rule.contains("self[") {
                bounds(&node["additionalProperties"], rule, &format!("{what}{{}}"), problems)
            } else {
                format!("{what}{{}}: not read")
            };
            format!("{what}: ≤ {} entries, keys unbounded; {values}", node["maxProperties"])
        }
        Some(t) => format!("{what}: {t}"),
        None => format!("{what}: untyped"),
    }
}

#[test]
fn every_string_list_and_map_a_cel_rule_reads_is_bounded() {
    let crd = flint_api::crd::definition();
    let schema =
        serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
            .unwrap();
    let mut all = Vec::new();
    rules(&schema, "", &mut all);
    assert!(all.len() >= 8, "found only {} rules: is the walk broken?", all.len());
    let mut problems = Vec::new();
    println!("CEL rules and the largest inputs the API server will assume:");
    for r in &all {
        let mut assumed = Vec::new();
        for path in references(&r.rule) {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let what = format!("{}{}", r.at, path.iter().map(|p| format!(".{p}")).collect::<String>());
            match resolve(&r.node, &refs) {
                Some(node) => {
                    let mut found = Vec::new();
                    assumed.push(bounds(node, &r.rule, &what, &mut found));
                    problems.extend(found.into_iter().map(|p| format!("{}: `{}`: {p}", r.at, r.rule)));
                }
                None => problems.push(format!("{}: `{}` reads {what}, which the schema does not have", r.at, r.rule)),
            }
        }
        println!("  {} `{}`\n      {}", r.at, r.rule, assumed.join("; "));
    }
    assert!(problems.is_empty(), "unbounded inputs of CEL rules:\n{}", problems.join("\n"));
}

#[test]
fn the_guard_catches_the_rules_that_once_kept_the_crd_off_the_api_server() {
    // The old label rules: a regex over every key and value of an unbounded map.
    let node = serde_json::json!({"type": "object", "additionalProperties": {"type": "string"}});
    let mut problems = Vec::new();
    bounds(&node, "self.all(k, k.matches('^[a-z]+$') && self[k].matches('^[a-z]*$'))", "spec.labels", &mut problems);
    assert!(problems.iter().any(|p| p.contains("without maxProperties")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("scans unbounded map keys")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("spec.labels{} is a string without maxLength")), "{problems:?}");
    // An unbounded string read by a duration rule.
    let mut problems = Vec::new();
    bounds(&serde_json::json!({"type": "string"}), "duration(self) > duration('0s')", "spec.timeout", &mut problems);
    assert_eq!(problems, ["spec.timeout is a string without maxLength"]);
    // `has()` reads nothing.
    assert_eq!(references("!(has(self.value) && has(self.valueFrom))"), Vec::<Vec<String>>::new());
    assert_eq!(references("self.min <= self.max"), [vec!["min".to_string()], vec!["max".to_string()]]);
}
