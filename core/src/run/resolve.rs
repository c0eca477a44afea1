//! Filling a node's fields in: `{{params.…}}` from the run's parameters and
//! `{{upstream.…}}` from what upstream nodes chose. Used where work is built (start, reconcile,
//! registration), so it sits below all of them.

use std::collections::BTreeMap;

use crate::params::{substitute, substitute_all};
use crate::template::NodeKind;

/// `start` checked that every reference has a value, so substitution cannot fail here; a
/// reference that somehow has none is left as written rather than guessed.
pub(super) fn sub(text: &str, params: &BTreeMap<String, String>) -> String {
    substitute(text, params).unwrap_or_else(|_| text.to_string())
}

/// A node's kind with its references filled in: parameters from `params`, upstream choices
/// from `upstream` (by `params::upstream_key`; left as written while unknown, as at start).
pub(super) fn resolve(
    kind: &NodeKind,
    params: &BTreeMap<String, String>,
    upstream: &BTreeMap<String, String>,
) -> NodeKind {
    let sub =
        |text: &str| substitute_all(text, params, upstream).unwrap_or_else(|_| text.to_string());
    let opt = |o: &Option<String>| o.as_ref().map(|s| sub(s));
    match kind {
        NodeKind::Project(p) => {
            let mut p = p.clone();
            p.uri = sub(&p.uri);
            p.version = opt(&p.version);
            p.sub_path = opt(&p.sub_path);
            p.parameters = p
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), sub(v)))
                .collect();
            NodeKind::Project(p)
        }
        NodeKind::Inference(i) => NodeKind::Inference(crate::template::InferenceSpec {
            model_uri: sub(&i.model_uri),
        }),
        NodeKind::Input(i) => NodeKind::Input(crate::template::InputSpec {
            run_id: opt(&i.run_id),
            artifact_path: opt(&i.artifact_path),
            path: opt(&i.path),
        }),
        NodeKind::Approval(a) => NodeKind::Approval(crate::template::ApprovalSpec {
            message: sub(&a.message),
            ..a.clone()
        }),
        NodeKind::Register(r) => NodeKind::Register(crate::template::RegisterSpec {
            model: sub(&r.model),
            alias: opt(&r.alias),
            ..r.clone()
        }),
    }
}
