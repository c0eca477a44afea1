//! Checks every response the tests receive against `edge-api/openapi.json`: an undocumented
//! route or status, or a body that does not fit its schema, fails the test.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(crate::root().join("edge-api/openapi.json"))
            .expect("edge-api/openapi.json");
        Spec {
            doc: serde_json::from_str(&text).expect("openapi.json is JSON"),
            validators: Mutex::default(),
        }
    })
}

/// The documented path template that matches `path`, preferring literal segments.
fn template_for(doc: &Value, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .filter_map(|tpl| {
            let t: Vec<&str> = tpl.split('/').collect();
            if t.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (a, b) in t.iter().zip(&segs) {
                if a.starts_with('{') {
                    if b.is_empty() {
                        return None;
                    }
                } else if a == b {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, tpl.clone()))
        })
        .max()
        .map(|(_, t)| t)
}

/// Panics unless the response is documented and fits its schema.
pub fn check(method: &str, path_and_query: &str, status: u16, body: &Value) {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let s = spec();
    let tpl = template_for(&s.doc, path)
        .unwrap_or_else(|| panic!("{method} {path} is not in openapi.json"));
    let op = &s.doc["paths"][&tpl][method.to_lowercase()];
    assert!(op.is_object(), "{method} {tpl} is not in openapi.json");
    let response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {tpl} answered {status}, which openapi.json does not document: {body}"
    );
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        assert!(
            body.is_null(),
            "{method} {tpl} {status} is documented without a body, but sent {body}"
        );
        return;
    };
    let key = format!("{method} {tpl} {status}");
    let validator = {
        let mut cache = s.validators.lock().expect("poisoned");
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "allOf": [schema], "components": s.doc["components"]});
                std::sync::Arc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema of {key}: {e}")))
            })
            .clone()
    };
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(5)
        .collect();
    assert!(
        errors.is_empty(),
        "{key}: the body does not fit openapi.json:\n{}\nbody: {body:#}",
        errors.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_response_passes() {
        check(
            "GET",
            "/api/v1/templates?x=1",
            200,
            &json!([{"name": "a", "description": "", "latestVersion": 1, "updatedAt": 5, "valid": true}]),
        );
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_body_of_the_wrong_shape_fails() {
        check("GET", "/api/v1/templates", 200, &json!([{"name": 1}]));
    }

    #[test]
    #[should_panic(expected = "does not document")]
    fn an_undocumented_status_fails() {
        check("GET", "/api/v1/templates", 418, &Value::Null);
    }

    #[test]
    #[should_panic(expected = "not in openapi.json")]
    fn an_undocumented_route_fails() {
        check("GET", "/api/v1/nowhere", 200, &Value::Null);
    }
}
