//! Who may do what: roles, the permission each API route needs, and the decision.
//!
//! One table for the whole API, so the auth matrix is tested here without a server.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// View templates and runs.
    Reader,
    /// Reader, plus save templates and start, cancel and repair runs.
    Editor,
    /// Editor, plus tokens and schedules.
    Admin,
    /// Lease, heartbeat and complete the work of one cluster; nothing else.
    Agent,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Read,
    Edit,
    Admin,
    /// The agent protocol of one cluster.
    Agent {
        cluster: String,
    },
}

/// The permission a request needs, from its method and path.
pub fn permission_for(method: &str, path: &str) -> Permission {
    let rest = path.strip_prefix("/api/v1/").unwrap_or("");
    let mut parts = rest.split('/');
    match (parts.next(), method) {
        (Some("agents"), _) => Permission::Agent {
            cluster: parts.next().unwrap_or_default().to_string(),
        },
        (Some("tokens" | "schedules"), "GET") => Permission::Read,
        (Some("tokens" | "schedules"), _) => Permission::Admin,
        (_, "GET" | "HEAD") => Permission::Read,
        _ => Permission::Edit,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_matrix_holds_for_every_role_and_route_family() {
        let routes = [
            ("GET", "/api/v1/templates"),
            ("PUT", "/api/v1/templates/x"),
            ("POST", "/api/v1/runs"),
            ("POST", "/api/v1/runs/abc/cancel"),
            ("GET", "/api/v1/schedules"),
            ("POST", "/api/v1/schedules"),
            ("POST", "/api/v1/tokens"),
            ("POST", "/api/v1/agents/gpu/lease"),
            ("POST", "/api/v1/agents/cpu/lease"),
        ];
        let expect = |role: Role, cluster: Option<&str>| -> Vec<bool> {
            routes
                .iter()
                .map(|(m, p)| allows(role, cluster, &permission_for(m, p)))
                .collect()
        };
        assert_eq!(
            expect(Role::Reader, None),
            [true, false, false, false, true, false, false, false, false]
        );
        assert_eq!(
            expect(Role::Editor, None),
            [true, true, true, true, true, false, false, false, false]
        );
        assert_eq!(expect(Role::Admin, None), [true; 9]);
        assert_eq!(
            expect(Role::Agent, Some("gpu")),
            [false, false, false, false, false, false, false, true, false]
        );
    }
}
