//! Who may do what: roles, the one route table of `/api/v1` with the permission of every route,
//! and the decision.
//!
//! The Worker dispatches on [`match_route`]'s answer, so a route cannot exist without a line in
//! [`ROUTES`], and that line names its permission. The auth matrix tests (here and against the
//! running edge) are generated from the same table.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// View templates, runs and schedules; MLflow's read calls.
    Reader,
    /// Reader, plus save templates and start, cancel and repair runs; MLflow's writes.
    Editor,
    /// Editor, plus tokens and schedules.
    Admin,
    /// Lease, heartbeat and complete the work of one cluster; nothing else.
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Editor, Role::Admin, Role::Agent];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    /// Whether this role may do all that `other` may (admin ⊇ editor ⊇ reader; an agent only
    /// itself).
    pub fn includes(self, other: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Reader => Some(0),
            Role::Editor => Some(1),
            Role::Admin => Some(2),
            Role::Agent => None,
        };
        self == other || matches!((rank(self), rank(other)), (Some(a), Some(b)) if a >= b)
    }
}

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// Any signed-in person (reader, editor, admin).
    Read,
    /// Editors and admins.
    Edit,
    /// Admins only.
    Admin,
    /// The agent protocol of one cluster (its agent tokens; admins too).
    Agent { cluster: String },
}

impl Permission {
    /// What the permission lets one do, for refusals ("… may not {what}").
    pub fn describe(&self) -> String {
        match self {
            Permission::Read => "read".into(),
            Permission::Edit => "edit templates and runs".into(),
            Permission::Admin => "manage tokens, schedules and triggers".into(),
            Permission::Agent { cluster } => format!("take work of cluster {cluster:?}"),
        }
    }
}

/// What a route needs, before its path parameters are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Read,
    Edit,
    Admin,
    /// The agent protocol of the cluster named by the route's `:cluster` segment.
    AgentOfCluster,
}

/// One line of the route table.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    /// Below `/api/v1`; `:name` segments are parameters.
    pub pattern: &'static str,
    pub route: Route,
    pub needs: Needs,
}

/// Declares [`Route`] and [`ROUTES`] together, so every route has exactly one line of the table
/// (method, path, permission) and every line its variant.
macro_rules! routes {
    ($($(#[$doc:meta])* $method:literal $pattern:literal => $variant:ident, $needs:ident;)*) => {
        /// Every route of `/api/v1`. The Worker has one handler per variant (an exhaustive
        /// `match`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Route {
            $($(#[$doc])* $variant,)*
        }

        /// The API under `/api/v1`, each route with its permission.
        pub const ROUTES: &[RouteSpec] = &[
            $(RouteSpec { method: $method, pattern: $pattern, route: Route::$variant, needs: Needs::$needs },)*
        ];
    };
}

routes! {
    /// Who the caller is: the UI shows what their role may do.
    "GET" "/me" => Me, Read;
    "GET" "/templates" => TemplatesList, Read;
    /// Validation stores nothing, but it is part of editing (and costs CPU): editors.
    "POST" "/templates/validate" => TemplatesValidate, Edit;
    "GET" "/templates/:name" => TemplateGet, Read;
    "PUT" "/templates/:name" => TemplateSave, Edit;
    "DELETE" "/templates/:name" => TemplateDelete, Edit;
    "GET" "/templates/:name/versions" => TemplateVersions, Read;
    "GET" "/templates/:name/versions/:version" => TemplateVersion, Read;
    "GET" "/runs" => RunsList, Read;
    "POST" "/runs" => RunStart, Edit;
    "GET" "/runs/:id" => RunGet, Read;
    /// The run without instances, with each node's counts by state (big runs).
    "GET" "/runs/:id/overview" => RunOverview, Read;
    /// A page of one node's instances, filtered by state.
    "GET" "/runs/:id/instances" => RunInstances, Read;
    "POST" "/runs/:id/cancel" => RunCancel, Edit;
    "POST" "/runs/:id/retry" => RunRetry, Edit;
    "POST" "/runs/:id/rerun" => RunRerun, Edit;
    /// Approve or reject a paused approval node.
    "POST" "/runs/:id/decide" => RunDecide, Edit;
    /// A live agent of the cluster reads the project (entry points, parameters) for the designer.
    "POST" "/clusters/:cluster/inspect" => ProjectInspect, Edit;
    "GET" "/schedules" => SchedulesList, Read;
    "POST" "/schedules" => ScheduleCreate, Admin;
    "DELETE" "/schedules/:name" => ScheduleDelete, Admin;
    "POST" "/schedules/:name/pause" => SchedulePause, Admin;
    "POST" "/schedules/:name/resume" => ScheduleResume, Admin;
    "GET" "/triggers" => TriggersList, Read;
    "POST" "/triggers" => TriggerCreate, Admin;
    "DELETE" "/triggers/:name" => TriggerDelete, Admin;
    "POST" "/triggers/:name/pause" => TriggerPause, Admin;
    "POST" "/triggers/:name/resume" => TriggerResume, Admin;
    /// Token names, roles and clusters tell an intruder what to aim at: admins only.
    "GET" "/tokens" => TokensList, Admin;
    "POST" "/tokens" => TokenCreate, Admin;
    "DELETE" "/tokens/:name" => TokenDelete, Admin;
    "POST" "/agents/:cluster/lease" => AgentLease, AgentOfCluster;
    "POST" "/agents/:cluster/heartbeat" => AgentHeartbeat, AgentOfCluster;
    "POST" "/agents/:cluster/complete" => AgentComplete, AgentOfCluster;
    /// Several completions in one call.
    "POST" "/agents/:cluster/completions" => AgentCompletions, AgentOfCluster;
    "POST" "/agents/:cluster/pin" => AgentPin, AgentOfCluster;
    /// A step looks its cache key up (agents' and step tokens of the cluster).
    "POST" "/agents/:cluster/cache" => AgentCacheLookup, AgentOfCluster;
    "POST" "/agents/:cluster/inspections" => AgentInspections, AgentOfCluster;
    "POST" "/agents/:cluster/inspections/answer" => AgentInspectAnswer, AgentOfCluster;
}

/// The API's path prefix.
pub const API_PREFIX: &str = "/api/v1";

impl Route {
    /// The route's entry in [`ROUTES`].
    pub fn spec(self) -> &'static RouteSpec {
        ROUTES
            .iter()
            .find(|r| r.route == self)
            .expect("every route is in the table")
    }

    /// The HTTP method of the route.
    pub fn method(self) -> &'static str {
        self.spec().method
    }

    /// The path a client sends the route's requests to: `/api/v1` and the route's pattern, with
    /// `params` in the place of its `:name` segments, in order, each percent-encoded. Clients
    /// build every path here, so none is written twice.
    pub fn path(self, params: &[&str]) -> String {
        let mut params = params.iter();
        let mut out = String::from(API_PREFIX);
        for segment in self.spec().pattern.split('/').filter(|s| !s.is_empty()) {
            out.push('/');
            if segment.starts_with(':') {
                let value = params.next().copied().unwrap_or_default();
                out.push_str(&crate::names::percent_encode(value, false));
            } else {
                out.push_str(segment);
            }
        }
        debug_assert!(
            params.next().is_none(),
            "{self:?} was given more parameters than it has"
        );
        out
    }
}

/// A request matched to its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub route: Route,
    /// Path parameters by name, as written in the path (not percent-decoded).
    pub params: Vec<(&'static str, String)>,
    pub permission: Permission,
}

impl Matched {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request matches no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route has this path.
    #[error("no API route {method} {path}; see edge-api/openapi.json for the API")]
    NotFound { method: String, path: String },
    /// The path exists, with other methods.
    #[error("{method} is not allowed on {path}; use {}", allow.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: Vec<&'static str>,
    },
}

fn segments_match(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut params = Vec::new();
    let mut given = path.split('/');
    for want in pattern.split('/') {
        let got = given.next()?;
        match want.strip_prefix(':') {
            Some(name) if !got.is_empty() => params.push((name, got.to_string())),
            Some(_) => return None,
            None if want == got => {}
            None => return None,
        }
    }
    given.next().is_none().then_some(params)
}

/// The route of `method path` (the full path, starting with `/api/v1`).
///
/// # Errors
/// [`RouteError`] when no route has this path, or not with this method.
pub fn match_route(method: &str, path: &str) -> Result<Matched, RouteError> {
    let rest = path
        .strip_prefix(API_PREFIX)
        .filter(|r| r.starts_with('/'))
        .unwrap_or("");
    let method = if method == "HEAD" { "GET" } else { method };
    let mut allow = Vec::new();
    for spec in ROUTES {
        let Some(params) = segments_match(spec.pattern, rest) else {
            continue;
        };
        if spec.method != method {
            allow.push(spec.method);
            continue;
        }
        let permission = match spec.needs {
            Needs::Read => Permission::Read,
            Needs::Edit => Permission::Edit,
            Needs::Admin => Permission::Admin,
            Needs::AgentOfCluster => Permission::Agent {
                cluster: params
                    .iter()
                    .find(|(k, _)| *k == "cluster")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            },
        };
        return Ok(Matched {
            route: spec.route,
            params,
            permission,
        });
    }
    if allow.is_empty() {
        Err(RouteError::NotFound {
            method: method.into(),
            path: path.into(),
        })
    } else {
        Err(RouteError::MethodNotAllowed {
            method: method.into(),
            path: path.into(),
            allow,
        })
    }
}

/// Whether a caller with `role` (bound to `cluster`, for agent tokens) has `needed`.
pub fn allows(role: Role, cluster: Option<&str>, needed: &Permission) -> bool {
    match (role, needed) {
        (Role::Agent, Permission::Agent { cluster: c }) => cluster == Some(c.as_str()),
        (Role::Agent, _) => false,
        (Role::Admin, _) => true,
        (_, Permission::Agent { .. }) => false,
        (Role::Editor, Permission::Read | Permission::Edit) => true,
        (Role::Reader, Permission::Read) => true,
        _ => false,
    }
}

/// What a request to MLflow behind the edge does, for the roles: readers may only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlflowAccess {
    Read,
    Write,
}

/// MLflow's POST calls that only read (searches and batch gets the UI uses), below
/// `/api/<version>/` or `/ajax-api/<version>/`. Every other POST, PUT, PATCH and DELETE writes.
/// Read off MLflow 3.17's routes (`mlflow.server.app.url_map`).
pub const MLFLOW_READ_POSTS: &[&str] = &[
    "2.0/mlflow/experiments/search",
    "2.0/mlflow/experiments/search-datasets",
    "2.0/mlflow/runs/search",
    "2.0/mlflow/logged-models/search",
    "2.0/mlflow/registered-models/get-latest-versions",
    "2.0/mlflow/artifacts/presigned-download-url",
    "3.0/mlflow/datasets/search",
    "3.0/mlflow/issues/search",
    "3.0/mlflow/prompt-optimization/jobs/search",
    "3.0/mlflow/traces/search",
    "3.0/mlflow/traces/batchGetInfos",
    "3.0/mlflow/traces/calculate-filter-correlation",
    "3.0/mlflow/traces/metrics",
    // The UI's own usage events: MLflow stores nothing of them in its tracking store.
    "3.0/mlflow/ui-telemetry",
];

/// Whether `method path` reads or writes MLflow. `graphql` is the GraphQL document of a
/// `/graphql` request (its `query`), which reads unless it holds a mutation or subscription.
pub fn mlflow_access(method: &str, path: &str, graphql: Option<&str>) -> MlflowAccess {
    let read_method = matches!(method, "GET" | "HEAD");
    if path == "/graphql" {
        let read_only = graphql.is_none_or(graphql_is_read_only);
        return if (read_method || method == "POST") && read_only {
            MlflowAccess::Read
        } else {
            MlflowAccess::Write
        };
    }
    if read_method {
        return MlflowAccess::Read;
    }
    let call = path
        .strip_prefix("/api/")
        .or_else(|| path.strip_prefix("/ajax-api/"))
        .map(|rest| rest.trim_end_matches('/'));
    match call {
        Some(c) if method == "POST" && MLFLOW_READ_POSTS.contains(&c) => MlflowAccess::Read,
        _ => MlflowAccess::Write,
    }
}

/// Whether a GraphQL document only queries: no `mutation` or `subscription` operation at its
/// top level (strings and comments skipped). Conservative: a document it cannot follow is
/// treated as one that writes.
pub fn graphql_is_read_only(doc: &str) -> bool {
    let b = doc.as_bytes();
    let (mut i, mut depth) = (0usize, 0i64);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let block = b[i..].starts_with(b"\"\"\"");
                i += if block { 3 } else { 1 };
                loop {
                    if i >= b.len() {
                        return false;
                    }
                    if block && b[i..].starts_with(b"\"\"\"") {
                        i += 2;
                        break;
                    }
                    if !block && b[i] == b'\\' {
                        i += 1;
                    } else if !block && b[i] == b'"' {
                        break;
                    }
                    i += 1;
                }
            }
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &doc[start..i];
                let prefixed = start > 0 && matches!(b[start - 1], b'$' | b'@');
                if depth == 0 && !prefixed && matches!(word, "mutation" | "subscription") {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concrete path for a pattern, with sample parameters.
    fn sample(pattern: &str, cluster: &str) -> String {
        let filled: Vec<String> = pattern
            .split('/')
            .map(|s| match s {
                ":cluster" => cluster.to_string(),
                s if s.starts_with(':') => "x1".to_string(),
                s => s.to_string(),
            })
            .collect();
        format!("{API_PREFIX}{}", filled.join("/"))
    }

    #[test]
    fn roles_include_the_ones_below_them_and_agents_only_themselves() {
        use Role::*;
        let includes: Vec<(Role, Role)> = Role::ALL
            .into_iter()
            .flat_map(|a| Role::ALL.map(|b| (a, b)))
            .filter(|(a, b)| a.includes(*b))
            .collect();
        assert_eq!(
            includes,
            [
                (Reader, Reader),
                (Editor, Reader),
                (Editor, Editor),
                (Admin, Reader),
                (Admin, Editor),
                (Admin, Admin),
                (Agent, Agent)
            ]
        );
        // The same order as the route permissions.
        for (role, needs) in [
            (Reader, Permission::Read),
            (Editor, Permission::Edit),
            (Admin, Permission::Admin),
        ] {
            for r in [Reader, Editor, Admin] {
                assert_eq!(
                    r.includes(role),
                    allows(r, None, &needs),
                    "{r:?} vs {needs:?}"
                );
            }
        }
    }

    #[test]
    fn every_route_matches_itself_and_only_itself() {
        for spec in ROUTES {
            let m = match_route(spec.method, &sample(spec.pattern, "gpu")).unwrap();
            assert_eq!(m.route, spec.route, "{} {}", spec.method, spec.pattern);
        }
        let mut seen = std::collections::HashSet::new();
        for spec in ROUTES {
            assert!(
                seen.insert(spec.route),
                "{:?} is in the table twice",
                spec.route
            );
        }
    }

    #[test]
    fn the_auth_matrix_follows_the_table_for_every_role() {
        for spec in ROUTES {
            let path = sample(spec.pattern, "gpu");
            let needed = match_route(spec.method, &path).unwrap().permission;
            let expect = |role: Role, cluster: Option<&str>| match spec.needs {
                Needs::Read => role != Role::Agent,
                Needs::Edit => matches!(role, Role::Editor | Role::Admin),
                Needs::Admin => role == Role::Admin,
                Needs::AgentOfCluster => {
                    role == Role::Admin || (role == Role::Agent && cluster == Some("gpu"))
                }
            };
            for (role, cluster) in [
                (Role::Reader, None),
                (Role::Editor, None),
                (Role::Admin, None),
                (Role::Agent, Some("gpu")),
                (Role::Agent, Some("cpu")),
            ] {
                assert_eq!(
                    allows(role, cluster, &needed),
                    expect(role, cluster),
                    "{role:?}/{cluster:?} {} {path}",
                    spec.method
                );
            }
        }
    }

    #[test]
    fn tokens_are_admin_business_even_to_list() {
        let m = match_route("GET", "/api/v1/tokens").unwrap();
        assert!(!allows(Role::Reader, None, &m.permission));
        assert!(!allows(Role::Editor, None, &m.permission));
        assert!(allows(Role::Admin, None, &m.permission));
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        assert!(matches!(
            match_route("GET", "/api/v1/nope"),
            Err(RouteError::NotFound { .. })
        ));
        assert!(matches!(
            match_route("PUT", "/api/v1/"),
            Err(RouteError::NotFound { .. })
        ));
        assert!(matches!(
            match_route("GET", "/api/v1/templates/"),
            Err(RouteError::NotFound { .. })
        ));
        assert!(matches!(
            match_route("GET", "/api/v1x/templates"),
            Err(RouteError::NotFound { .. })
        ));
        match match_route("PATCH", "/api/v1/templates/a") {
            Err(RouteError::MethodNotAllowed { allow, .. }) => {
                assert_eq!(allow, vec!["GET", "PUT", "DELETE"])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            match_route("HEAD", "/api/v1/runs").unwrap().route,
            Route::RunsList
        );
    }

    #[test]
    fn readers_reach_mlflow_reads_only() {
        use MlflowAccess::*;
        let cases = [
            ("GET", "/api/2.0/mlflow/experiments/get-by-name", Read),
            (
                "GET",
                "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt",
                Read,
            ),
            ("POST", "/ajax-api/2.0/mlflow/runs/search", Read),
            ("POST", "/api/3.0/mlflow/traces/search", Read),
            ("POST", "/api/2.0/mlflow/runs/create", Write),
            ("POST", "/api/2.0/mlflow/experiments/create", Write),
            ("POST", "/api/2.0/mlflow/experiments/delete", Write),
            (
                "POST",
                "/ajax-api/2.0/mlflow/registered-models/create",
                Write,
            ),
            (
                "PUT",
                "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/outputs/x",
                Write,
            ),
            (
                "DELETE",
                "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/x",
                Write,
            ),
            (
                "POST",
                "/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts/x",
                Write,
            ),
            ("PATCH", "/api/2.0/mlflow/runs/search", Write),
            ("POST", "/api/2.0/mlflow/runs/search/../create", Write),
            ("POST", "/ajax-api/2.0/mlflow/gateway-proxy", Write),
        ];
        for (m, p, want) in cases {
            assert_eq!(mlflow_access(m, p, None), want, "{m} {p}");
        }
    }

    #[test]
    fn graphql_queries_read_and_mutations_write() {
        let q = |doc: &str| mlflow_access("POST", "/graphql", Some(doc));
        assert_eq!(
            q("query MlflowGetRun($data: MlflowGetRunInput) { mlflowGetRun(input: $data) { run { info { runId } } } }"),
            MlflowAccess::Read
        );
        assert_eq!(
            q("{ test(inputString: \"mutation\") { output } }"),
            MlflowAccess::Read
        );
        assert_eq!(q("# mutation\nquery { a }"), MlflowAccess::Read);
        assert_eq!(q("query($mutation: Int) { a }"), MlflowAccess::Read);
        assert_eq!(
            q("mutation { testMutation(inputString: \"x\") { output } }"),
            MlflowAccess::Write
        );
        assert_eq!(q("query { a } mutation M { b }"), MlflowAccess::Write);
        assert_eq!(q("subscription { a }"), MlflowAccess::Write);
        assert_eq!(q("query { a(s: \"unterminated) }"), MlflowAccess::Write);
        assert_eq!(q("query { a } }"), MlflowAccess::Write);
        assert_eq!(
            mlflow_access("PUT", "/graphql", Some("{ a }")),
            MlflowAccess::Write
        );
    }

    #[test]
    fn parameters_come_from_their_segments() {
        let m = match_route("GET", "/api/v1/templates/iris/versions/3").unwrap();
        assert_eq!(m.param("name"), Some("iris"));
        assert_eq!(m.param("version"), Some("3"));
        let m = match_route("POST", "/api/v1/agents/gpu-a/lease").unwrap();
        assert_eq!(
            m.permission,
            Permission::Agent {
                cluster: "gpu-a".into()
            }
        );
    }

    #[test]
    fn every_route_builds_a_path_that_matches_it_back() {
        for spec in ROUTES {
            let names: Vec<&str> = spec
                .pattern
                .split('/')
                .filter_map(|s| s.strip_prefix(':'))
                .collect();
            let values: Vec<String> = names.iter().map(|n| format!("a {n}/x")).collect();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let path = spec.route.path(&values);
            let matched = match_route(spec.method, &path).unwrap();
            assert_eq!(matched.route, spec.route, "{path}");
            for n in names {
                assert_eq!(
                    matched.param(n),
                    Some(format!("a%20{n}%2Fx").as_str()),
                    "{path}"
                );
            }
        }
        assert_eq!(Route::RunCancel.path(&["r1"]), "/api/v1/runs/r1/cancel");
        assert_eq!(Route::RunCancel.method(), "POST");
    }
}
