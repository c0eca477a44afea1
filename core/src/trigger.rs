//! Triggers: a template started by an event — a new version of a registered model, an alias
//! moved to a version (both from MLflow's signed webhooks, or found by polling the registry),
//! or another template's run that succeeded. Pure: what an event is, which triggers it fires,
//! the parameters it passes, and the webhook signature check.
//!
//! # Guarantees
//! - Every event has a key (`model_version:<model>:<version>`, `alias:<model>@<alias>:<version>`,
//!   `run:<id>`), and a trigger's run id is derived from the trigger and that key, so the same
//!   event delivered twice (a webhook retried, a poll that also saw it) starts one run.
//! - `{{trigger.<field>}}` in a trigger's parameters must name a field its event carries; that
//!   is checked when the trigger is saved, not when it fires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What starts the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase", deny_unknown_fields)]
pub enum On {
    /// A new version of the registered model `model`.
    #[serde(rename_all = "camelCase")]
    ModelVersionCreated { model: String },
    /// The alias `model@alias` set to a version (a new one or another).
    #[serde(rename_all = "camelCase")]
    ModelAliasSet { model: String, alias: String },
    /// A run of `template` that succeeded.
    #[serde(rename_all = "camelCase")]
    RunSucceeded { template: String },
}

impl On {
    /// The fields its events pass as `{{trigger.<field>}}`.
    pub fn fields(&self) -> &'static [&'static str] {
        match self {
            On::ModelVersionCreated { .. } => &[
                "model_name",
                "model_version",
                "model_uri",
                "source",
                "run_id",
            ],
            On::ModelAliasSet { .. } => &["model_name", "alias", "model_version", "model_uri"],
            On::RunSucceeded { .. } => &["run_id", "template"],
        }
    }

    /// Whether it watches the model registry (by webhook or polling).
    pub fn watches_registry(&self) -> bool {
        !matches!(self, On::RunSucceeded { .. })
    }
}

/// A trigger as the API accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTrigger {
    pub name: String,
    /// The template it starts.
    pub template: String,
    pub on: On,
    /// The run's parameters; values may hold `{{trigger.<field>}}`.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// For registry triggers: also look at the registry this often (for MLflow servers that
    /// cannot send webhooks). At least [`MIN_POLL_SECONDS`]; the cron checks once a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<u64>,
}

/// The shortest polling interval.
pub const MIN_POLL_SECONDS: u64 = 60;

/// A stored trigger and what it last did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(flatten)]
    pub spec: NewTrigger,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Runs it started.
    #[serde(default)]
    pub fired: u64,
    /// The key of the last event it acted on, and the run that event started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    /// Why the last event could not start a run; cleared by the next run that starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// For polling: the version the registry showed when last looked at (a version number,
    /// or the version an alias pointed at), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<u64>,
    /// How registry events reach it: MLflow's webhook, polling, or both; set by the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

impl Trigger {
    /// A new trigger, created at `now`.
    pub fn new(spec: NewTrigger, now: u64) -> Trigger {
        Trigger {
            spec,
            created_at: now,
            paused: false,
            fired: 0,
            last_event: None,
            last_run_id: None,
            last_error: None,
            seen: None,
            polled_at: None,
            delivery: None,
        }
    }

    /// Whether the registry is due to be polled for it at `now`.
    pub fn poll_due(&self, now: u64) -> bool {
        match self.spec.poll_seconds {
            Some(s) if !self.paused && self.spec.on.watches_registry() => {
                self.polled_at.is_none_or(|at| now >= at + s * 1000 - 5_000)
            }
            _ => false,
        }
    }

    /// The event a poll that found `version` stands for: none on the first look (what was
    /// there before the trigger is not news) nor when nothing changed.
    pub fn polled(&self, version: Option<&str>) -> Option<Event> {
        let version = version?;
        let before = self.seen.as_deref()?;
        if before == version {
            return None;
        }
        match &self.spec.on {
            On::ModelVersionCreated { model } => {
                let newer = version.parse::<u64>().ok()? > before.parse::<u64>().unwrap_or(0);
                newer.then(|| Event::ModelVersionCreated {
                    model: model.clone(),
                    version: version.to_string(),
                    source: String::new(),
                    run_id: None,
                })
            }
            On::ModelAliasSet { model, alias } => Some(Event::ModelAliasSet {
                model: model.clone(),
                alias: alias.clone(),
                version: version.to_string(),
            }),
            On::RunSucceeded { .. } => None,
        }
    }
}

/// Something that happened, which may fire triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    ModelVersionCreated {
        model: String,
        version: String,
        source: String,
        run_id: Option<String>,
    },
    ModelAliasSet {
        model: String,
        alias: String,
        version: String,
    },
    RunSucceeded {
        run_id: String,
        template: String,
    },
}

impl Event {
    /// What makes it this event and no other: the same key is never acted on twice.
    pub fn key(&self) -> String {
        match self {
            Event::ModelVersionCreated { model, version, .. } => {
                format!("model_version:{model}:{version}")
            }
            Event::ModelAliasSet {
                model,
                alias,
                version,
            } => format!("alias:{model}@{alias}:{version}"),
            Event::RunSucceeded { run_id, .. } => format!("run:{run_id}"),
        }
    }

    /// The values of `{{trigger.<field>}}`.
    pub fn values(&self) -> BTreeMap<&'static str, String> {
        let mut v = BTreeMap::new();
        match self {
            Event::ModelVersionCreated {
                model,
                version,
                source,
                run_id,
            } => {
                v.insert("model_name", model.clone());
                v.insert("model_version", version.clone());
                v.insert("model_uri", format!("models:/{model}/{version}"));
                v.insert("source", source.clone());
                v.insert("run_id", run_id.clone().unwrap_or_default());
            }
            Event::ModelAliasSet {
                model,
                alias,
                version,
            } => {
                v.insert("model_name", model.clone());
                v.insert("alias", alias.clone());
                v.insert("model_version", version.clone());
                v.insert("model_uri", format!("models:/{model}@{alias}"));
            }
            Event::RunSucceeded { run_id, template } => {
                v.insert("run_id", run_id.clone());
                v.insert("template", template.clone());
            }
        }
        v
    }

    /// The event of an MLflow webhook delivery (`{"entity", "action", "data"}`); `None` for
    /// the events no trigger watches (tags, prompts, a `test` delivery).
    pub fn from_mlflow(body: &Value) -> Option<Event> {
        let data = &body["data"];
        let s = |k: &str| data[k].as_str().map(str::to_string);
        match (body["entity"].as_str()?, body["action"].as_str()?) {
            ("model_version", "created") => Some(Event::ModelVersionCreated {
                model: s("name")?,
                version: s("version")?,
                source: s("source").unwrap_or_default(),
                run_id: s("run_id").filter(|r| !r.is_empty()),
            }),
            ("model_version_alias", "created") => Some(Event::ModelAliasSet {
                model: s("name")?,
                alias: s("alias")?,
                version: s("version")?,
            }),
            _ => None,
        }
    }

    /// Whether `on` watches this event.
    pub fn fires(&self, on: &On) -> bool {
        match (self, on) {
            (Event::ModelVersionCreated { model, .. }, On::ModelVersionCreated { model: m }) => {
                model == m
            }
            (
                Event::ModelAliasSet { model, alias, .. },
                On::ModelAliasSet { model: m, alias: a },
            ) => model == m && alias == a,
            (Event::RunSucceeded { template, .. }, On::RunSucceeded { template: t }) => {
                template == t
            }
            _ => false,
        }
    }
}

/// Every problem of a new trigger (empty when it can be saved).
pub fn problems(t: &NewTrigger) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = crate::names::label_value_problem(&t.name) {
        out.push(format!("name {:?} {why}", t.name));
    }
    let blank = |s: &str| s.trim().is_empty();
    match &t.on {
        On::ModelVersionCreated { model } if blank(model) => {
            out.push("on.model: name the registered model".into())
        }
        On::ModelAliasSet { model, alias } if blank(model) || blank(alias) => {
            out.push("on.model and on.alias: name the registered model and its alias".into())
        }
        On::RunSucceeded { template } if blank(template) => {
            out.push("on.template: name the template whose runs start this one".into())
        }
        On::RunSucceeded { template } if *template == t.template => out.push(format!(
            "on.template: a run of {template:?} would start itself for ever; name another template"
        )),
        _ => {}
    }
    match (t.poll_seconds, t.on.watches_registry()) {
        (Some(_), false) => out.push("pollSeconds: only registry triggers poll; a run's end is seen at once".into()),
        (Some(s), true) if s < MIN_POLL_SECONDS => {
            out.push(format!("pollSeconds: at least {MIN_POLL_SECONDS} (the registry is read once a minute at most), not {s}"))
        }
        _ => {}
    }
    let fields = t.on.fields();
    for (name, value) in &t.parameters {
        for field in references(value) {
            if !fields.contains(&field.as_str()) {
                out.push(format!(
                    "parameters.{name}: {{{{trigger.{field}}}}} is not a field of this event; it has {}",
                    fields.iter().map(|f| format!("trigger.{f}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    out
}

/// The `<field>`s of the `{{trigger.<field>}}` in `value`.
fn references(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("{{") {
        let Some(j) = rest[i..].find("}}") else { break };
        let inner = rest[i + 2..i + j].trim();
        if let Some(field) = inner.strip_prefix("trigger.") {
            out.push(field.to_string());
        }
        rest = &rest[i + j + 2..];
    }
    out
}

/// The run's parameters for `event`: each `{{trigger.<field>}}` replaced by the event's value
/// (other `{{…}}` are left for the run to resolve).
pub fn parameters(t: &NewTrigger, event: &Event) -> BTreeMap<String, String> {
    let values = event.values();
    t.parameters
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            for (field, value) in &values {
                for form in [
                    format!("{{{{trigger.{field}}}}}"),
                    format!("{{{{ trigger.{field} }}}}"),
                ] {
                    v = v.replace(&form, value);
                }
            }
            (k.clone(), v)
        })
        .collect()
}

/// How old a webhook delivery may be (its `X-MLflow-Timestamp`) before it is refused as a
/// replay.
pub const MAX_DELIVERY_AGE_SECS: u64 = 300;

/// Checks an MLflow webhook delivery: `signature` (`X-MLflow-Signature`, `v1,<base64>`) must be
/// the HMAC-SHA256 of `<delivery_id>.<timestamp>.<payload>` under `secret`, and `timestamp`
/// within [`MAX_DELIVERY_AGE_SECS`] of `now_secs`.
///
/// # Errors
/// Why the delivery is refused, for the edge's 401.
pub fn verify_delivery(
    secret: &str,
    delivery_id: &str,
    timestamp: &str,
    payload: &str,
    signature: &str,
    now_secs: u64,
) -> Result<(), String> {
    let at: u64 = timestamp
        .parse()
        .map_err(|_| format!("X-MLflow-Timestamp {timestamp:?} is not a Unix time"))?;
    if at.abs_diff(now_secs) > MAX_DELIVERY_AGE_SECS {
        return Err(format!(
            "the delivery is from {at}, more than {MAX_DELIVERY_AGE_SECS} s from now ({now_secs}); a replay is refused"
        ));
    }
    if !signature.starts_with("v1,") {
        return Err("X-MLflow-Signature is not a v1 signature".into());
    }
    let expected = crate::sign::webhook_signature(secret, delivery_id, timestamp, payload);
    if crate::sign::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        Ok(())
    } else {
        Err("X-MLflow-Signature does not match the payload under the trigger secret".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use serde_json::json;
    use sha2::Sha256;

    /// MLflow's own signing (`mlflow/webhooks/delivery.py`), written out independently.
    fn sign(secret: &str, id: &str, ts: &str, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{id}.{ts}.{payload}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    fn alias_trigger() -> NewTrigger {
        NewTrigger {
            name: "score".into(),
            template: "batch-score".into(),
            on: On::ModelAliasSet {
                model: "iris".into(),
                alias: "champion".into(),
            },
            parameters: [
                ("model".to_string(), "{{trigger.model_uri}}".to_string()),
                ("v".into(), "v{{ trigger.model_version }}".into()),
            ]
            .into(),
            cluster: None,
            poll_seconds: None,
        }
    }

    #[test]
    fn mlflow_deliveries_become_events_with_keys_and_values() {
        let alias = Event::from_mlflow(&json!({"entity": "model_version_alias", "action": "created", "data": {"name": "iris", "alias": "champion", "version": "3"}})).unwrap();
        assert_eq!(alias.key(), "alias:iris@champion:3");
        let t = alias_trigger();
        assert!(alias.fires(&t.on));
        let p = parameters(&t, &alias);
        assert_eq!(p["model"], "models:/iris@champion");
        assert_eq!(p["v"], "v3");
        let version = Event::from_mlflow(&json!({"entity": "model_version", "action": "created", "data": {"name": "iris", "version": "4", "source": "models:/m-1", "run_id": "r1"}})).unwrap();
        assert_eq!(version.key(), "model_version:iris:4");
        assert!(
            !version.fires(&t.on),
            "a new version does not move the alias"
        );
        assert_eq!(
            Event::from_mlflow(
                &json!({"entity": "registered_model", "action": "created", "data": {"name": "iris"}})
            ),
            None
        );
        assert_eq!(
            Event::from_mlflow(
                &json!({"entity": "model_version_alias", "action": "created", "data": {"name": "iris"}})
            ),
            None,
            "no alias: not an event"
        );
    }

    #[test]
    fn problems_name_the_field() {
        assert!(problems(&alias_trigger()).is_empty());
        let mut t = alias_trigger();
        t.parameters
            .insert("bad".into(), "{{trigger.run_id}}".into());
        t.poll_seconds = Some(5);
        let p = problems(&t);
        assert!(
            p.iter().any(
                |m| m.starts_with("parameters.bad: {{trigger.run_id}} is not a field")
                    && m.contains("trigger.model_uri")
            ),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("pollSeconds: at least 60")),
            "{p:?}"
        );
        let own = NewTrigger {
            on: On::RunSucceeded {
                template: "batch-score".into(),
            },
            parameters: BTreeMap::new(),
            ..alias_trigger()
        };
        assert!(problems(&own).iter().any(|m| m.contains("start itself")));
    }

    #[test]
    fn deliveries_are_checked_for_signature_and_age() {
        let payload = r#"{"entity": "model_version", "action": "created", "data": {}}"#;
        let sig = sign("s3cret", "d1", "1000", payload);
        assert_eq!(
            verify_delivery("s3cret", "d1", "1000", payload, &sig, 1100),
            Ok(())
        );
        assert!(verify_delivery("other", "d1", "1000", payload, &sig, 1100)
            .unwrap_err()
            .contains("does not match"));
        assert!(
            verify_delivery("s3cret", "d2", "1000", payload, &sig, 1100).is_err(),
            "another delivery id"
        );
        assert!(verify_delivery("s3cret", "d1", "1000", payload, &sig, 2000)
            .unwrap_err()
            .contains("replay"));
        assert!(verify_delivery("s3cret", "d1", "soon", payload, &sig, 1000).is_err());
    }

    #[test]
    fn a_poll_fires_only_for_what_changed_after_the_first_look() {
        let mut t = Trigger::new(
            NewTrigger {
                poll_seconds: Some(60),
                ..alias_trigger()
            },
            0,
        );
        assert!(t.poll_due(0));
        assert_eq!(t.polled(Some("1")), None, "the first look is the baseline");
        t.seen = Some("1".into());
        t.polled_at = Some(0);
        assert!(!t.poll_due(30_000));
        assert!(t.poll_due(60_000));
        assert_eq!(t.polled(Some("1")), None);
        assert_eq!(t.polled(Some("3")).unwrap().key(), "alias:iris@champion:3");
        assert_eq!(t.polled(None), None, "an alias removed is not an event");
        let mut v = Trigger::new(
            NewTrigger {
                on: On::ModelVersionCreated {
                    model: "iris".into(),
                },
                ..t.spec.clone()
            },
            0,
        );
        v.seen = Some("4".into());
        assert_eq!(v.polled(Some("5")).unwrap().key(), "model_version:iris:5");
        assert_eq!(
            v.polled(Some("3")),
            None,
            "an older version (the newest deleted) is not new"
        );
    }

    proptest! {
        #[test]
        fn any_change_to_a_signed_delivery_is_refused(payload in ".{0,200}", flip in 0usize..200, secret in "[a-z]{1,20}") {
            let sig = sign(&secret, "id", "50", &payload);
            prop_assert!(verify_delivery(&secret, "id", "50", &payload, &sig, 50).is_ok());
            let mut bytes = payload.clone().into_bytes();
            if !bytes.is_empty() {
                let i = flip % bytes.len();
                bytes[i] ^= 1;
                if let Ok(changed) = String::from_utf8(bytes) {
                    prop_assert!(verify_delivery(&secret, "id", "50", &changed, &sig, 50).is_err());
                }
            }
        }
    }
}
