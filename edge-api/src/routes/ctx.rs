//! What a route's handler gets besides the request: the environment, the caller, the path's
//! parameters.

use worker::Env;

use crate::user::User;

pub struct Ctx {
    pub env: Env,
    /// Who is calling (authenticated and authorized for the route already).
    pub user: User,
    pub params: Vec<(&'static str, String)>,
}

impl Ctx {
    pub fn param(&self, name: &str) -> Option<&String> {
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn kv(&self, binding: &str) -> worker::Result<worker::kv::KvStore> {
        self.env.kv(binding)
    }
}
