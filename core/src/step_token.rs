//! The step token: a credential the edge issues with each lease, bound to that one lease (its
//! cluster, work item and fencing token), so a pod can report its own outcome without ever
//! seeing its agent's token. Written `cs_<cluster>:<item>:<fencing>:<mac>`; the edge signs it
//! (HMAC-SHA256 over [`StepToken::signed_text`]) and checks the signature; both sides parse it
//! here.

/// What a step token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepToken {
    pub cluster: String,
    pub item_id: String,
    /// The lease's fencing token: calls with any other lease token are refused.
    pub fencing: u64,
}

/// Every step token starts with this, so the edge tells it from other bearer tokens.
pub const PREFIX: &str = "cs_";

impl StepToken {
    fn body(&self) -> String {
        format!("{}:{}:{}", self.cluster, self.item_id, self.fencing)
    }

    /// The text the MAC covers.
    pub fn signed_text(&self) -> String {
        format!("step:{}", self.body())
    }

    /// The token, given the MAC (hex) of [`StepToken::signed_text`].
    pub fn encode(&self, mac_hex: &str) -> String {
        format!("{PREFIX}{}:{mac_hex}", self.body())
    }

    /// Takes a token apart: what it claims, the text its MAC must cover (as written), and the
    /// MAC. `None` when it does not have a step token's shape.
    pub fn parse(token: &str) -> Option<(StepToken, String, &str)> {
        let rest = token.strip_prefix(PREFIX)?;
        let (body, mac) = rest.rsplit_once(':')?;
        let mut parts = body.splitn(3, ':');
        let (cluster, item_id, fencing) = (parts.next()?, parts.next()?, parts.next()?);
        if cluster.is_empty() || item_id.is_empty() || mac.is_empty() {
            return None;
        }
        let parsed = StepToken {
            cluster: cluster.into(),
            item_id: item_id.into(),
            fencing: fencing.parse().ok()?,
        };
        Some((parsed, format!("step:{body}"), mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_token_round_trips_and_names_its_lease() {
        let t = StepToken {
            cluster: "gpu.a".into(),
            item_id: "0123abcd.train.3.2".into(),
            fencing: 41,
        };
        let text = t.encode("beef");
        let (parsed, signed, mac) = StepToken::parse(&text).unwrap();
        assert_eq!(parsed, t);
        assert_eq!(signed, t.signed_text());
        assert_eq!(mac, "beef");
    }

    #[test]
    fn malformed_step_tokens_do_not_parse() {
        for bad in [
            "cs_",
            "cs_a:b:c",
            "cs_a:b:x:mac",
            "cs_:b:1:mac",
            "cs_a:b:1:",
            "ct_a:b:1:mac",
            "cs_a:b:-1:mac",
        ] {
            assert_eq!(StepToken::parse(bad), None, "{bad}");
        }
    }
}
