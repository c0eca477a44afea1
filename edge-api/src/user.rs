//! The authenticated caller, as every layer above authentication sees it.

use concurrent_core::access::Role;
use concurrent_core::wire::LeaseRef;

use crate::error::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct User {
    /// Recorded as `started_by` / `updated_by`.
    pub name: String,
    pub role: Role,
    /// The one cluster of an agent or step token.
    pub cluster: Option<String>,
    /// The one lease of a step token.
    pub lease: Option<LeaseRef>,
}

impl User {
    pub fn new(name: impl Into<String>, role: Role, cluster: Option<String>) -> User {
        User {
            name: name.into(),
            role,
            cluster,
            lease: None,
        }
    }

    /// Checks that a step token acts on its own lease only (item and fencing token).
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] when a step token names another item or another lease.
    pub fn check_lease(&self, item_id: &str, token: u64) -> Result<(), ApiError> {
        match &self.lease {
            Some(own) if own.item_id != item_id || own.token != token => {
                Err(ApiError::Forbidden(format!(
                    "this step token is bound to lease {} of work item {}, not lease {token} of {item_id}",
                    own.token, own.item_id
                )))
            }
            _ => Ok(()),
        }
    }
}
