//! Reading an MLflow run as `runs/get` returns it (`{"info", "data": {"tags", "params",
//! "metrics"}}`).

use serde_json::Value;

fn entry<'a>(run: &'a Value, list: &str, key: &str) -> Option<&'a Value> {
    run["data"][list]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

/// The run's tag `key`.
pub fn tag<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    entry(run, "tags", key)?.as_str()
}

/// The run's parameter `key`.
pub fn param<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    entry(run, "params", key)?.as_str()
}

/// The latest value of the run's metric `key`.
pub fn metric(run: &Value, key: &str) -> Option<f64> {
    entry(run, "metrics", key)?.as_f64()
}
