//! The app's routes, kept in the URL hash so deep links work and MLflow's router stays put.

/// Where the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Templates and runs lists.
    Home,
    /// The designer on a template not saved yet.
    New,
    /// The designer on a saved template.
    Template(String),
    /// One run.
    Run(String),
    Schedules,
    Triggers,
    Tokens,
    NotFound(String),
}

impl Route {
    /// Parses `#/dags...` (MLflow's `?workflowType=` suffix is ignored).
    pub fn parse(hash: &str) -> Route {
        let path = hash
            .trim_start_matches('#')
            .split('?')
            .next()
            .unwrap_or_default();
        let parts: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                js_sys::decode_uri_component(s)
                    .ok()
                    .and_then(|d| d.as_string())
                    .unwrap_or_else(|| s.to_string())
            })
            .collect();
        match parts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["dags"] => Route::Home,
            ["dags", "new"] => Route::New,
            ["dags", "templates", name] => Route::Template(name.to_string()),
            ["dags", "runs", id] => Route::Run(id.to_string()),
            ["dags", "schedules"] => Route::Schedules,
            ["dags", "triggers"] => Route::Triggers,
            ["dags", "tokens"] => Route::Tokens,
            _ => Route::NotFound(path.to_string()),
        }
    }

    pub fn href(&self) -> String {
        let enc = |s: &str| String::from(js_sys::encode_uri_component(s));
        match self {
            Route::Home | Route::NotFound(_) => "#/dags".into(),
            Route::New => "#/dags/new".into(),
            Route::Template(name) => format!("#/dags/templates/{}", enc(name)),
            Route::Run(id) => format!("#/dags/runs/{}", enc(id)),
            Route::Schedules => "#/dags/schedules".into(),
            Route::Triggers => "#/dags/triggers".into(),
            Route::Tokens => "#/dags/tokens".into(),
        }
    }
}

/// Goes to `route` (a history entry, so Back works).
pub fn go(route: &Route) {
    let _ = leptos::prelude::window().location().set_hash(&route.href());
}

/// The current route.
pub fn current() -> Route {
    Route::parse(
        &leptos::prelude::window()
            .location()
            .hash()
            .unwrap_or_default(),
    )
}

/// Link to a run (or experiment) page of the MLflow UI served by the same edge.
pub fn mlflow_run(experiment_id: &str, run_id: &str) -> String {
    format!("/#/experiments/{experiment_id}/runs/{run_id}")
}
