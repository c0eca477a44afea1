//! The deployment's secret and what is signed with it: the bootstrap token (checked for
//! strength), token hashes, and the step token of a lease.

use concurrent_core::sign;
use concurrent_core::step_token::StepToken;
use worker::Env;

use crate::error::ApiError;

/// Shortest bootstrap token the edge accepts: it signs every session and step token.
pub const MIN_BOOTSTRAP_LEN: usize = 32;

/// The bootstrap token, refusing one too short to sign with.
///
/// # Errors
/// A 503 naming the setting to fix: the edge serves nothing until it is set.
pub fn bootstrap_token(env: &Env) -> Result<String, ApiError> {
    let token = env
        .secret("CONCURRENT_API_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("CONCURRENT_API_TOKEN").map(|s| s.to_string()))
        .unwrap_or_default();
    if token.trim().len() < MIN_BOOTSTRAP_LEN {
        return Err(ApiError::Misconfigured(format!(
            "CONCURRENT_API_TOKEN is {}; set a random secret of at least {MIN_BOOTSTRAP_LEN} characters with `wrangler secret put CONCURRENT_API_TOKEN` (e.g. from `openssl rand -hex 32`)",
            if token.is_empty() { "not set".to_string() } else { format!("only {} characters long", token.trim().len()) }
        )));
    }
    Ok(token)
}

/// SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    sign::sha256_hex(token)
}

/// The step token of one lease.
pub fn step_token(secret: &str, cluster: &str, item_id: &str, fencing: u64) -> String {
    let t = StepToken {
        cluster: cluster.into(),
        item_id: item_id.into(),
        fencing,
    };
    t.encode(&sign::mac_hex(secret, &t.signed_text()))
}
