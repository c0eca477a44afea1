//! Cloudflare Access JWTs: splitting a token and checking its claims. The RS256 signature is
//! verified by the caller (WebCrypto in the Worker); everything else is decided here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// A token taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// `kid` of the key that signed it.
    pub kid: String,
    /// `header.payload`, the bytes the signature covers.
    pub signed: String,
    pub signature: Vec<u8>,
    pub claims: Claims,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub aud: Audience,
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    /// The signed-in user; service tokens have none (they carry `common_name`).
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub common_name: Option<String>,
}

/// `aud` is a string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
}

fn part<'a>(it: &mut impl Iterator<Item = &'a str>, what: &str) -> Result<Vec<u8>, String> {
    let text = it
        .next()
        .ok_or_else(|| format!("the token has no {what}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("the token's {what} is not base64url: {e}"))
}

/// Splits `header.payload.signature`; only RS256 is accepted (what Access signs with).
///
/// # Errors
/// Why the token is malformed.
pub fn parse(token: &str) -> Result<Parts, String> {
    let mut it = token.split('.');
    let header = part(&mut it, "header")?;
    let payload = part(&mut it, "payload")?;
    let signature = part(&mut it, "signature")?;
    if it.next().is_some() {
        return Err("the token has more than three parts".into());
    }
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| format!("the token's header does not decode: {e}"))?;
    if header.alg != "RS256" {
        return Err(format!(
            "the token is signed with {:?}; only RS256 is accepted",
            header.alg
        ));
    }
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|e| format!("the token's claims do not decode: {e}"))?;
    let signed = token
        .rsplit_once('.')
        .map(|(s, _)| s.to_string())
        .unwrap_or_default();
    Ok(Parts {
        kid: header.kid,
        signed,
        signature,
        claims,
    })
}

/// Checks audience, issuer and validity time (with a minute of clock skew); returns who it is.
///
/// # Errors
/// Which claim failed and why.
pub fn check(claims: &Claims, aud: &str, issuer: &str, now_ms: u64) -> Result<String, String> {
    const SKEW: u64 = 60;
    let now = now_ms / 1000;
    if !claims.aud.contains(aud) {
        return Err(format!(
            "the token is for another application (aud {:?}, expected {aud:?})",
            claims.aud
        ));
    }
    if claims.iss.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "the token was issued by {:?}, not {issuer:?}",
            claims.iss
        ));
    }
    if claims.exp + SKEW < now {
        return Err(
            "the token expired; reload the page to sign in with Cloudflare Access again".into(),
        );
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + SKEW) {
        return Err("the token is not valid yet (check the clocks)".into());
    }
    claims
        .email
        .clone()
        .or_else(|| claims.common_name.clone())
        .ok_or_else(|| "the token names no user (no email or common_name)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    const NOW: u64 = 1_800_000_000_000;

    fn claims(extra: &str) -> String {
        format!(
            r#"{{"aud": ["app"], "iss": "https://team.cloudflareaccess.com", "exp": 1800000600, "email": "ana@example.com"{extra}}}"#
        )
    }

    #[test]
    fn a_good_token_names_its_user() {
        let p = parse(&token(r#"{"alg": "RS256", "kid": "k1"}"#, &claims(""))).unwrap();
        assert_eq!(p.kid, "k1");
        assert_eq!(p.signature, b"sig");
        assert_eq!(p.signed.matches('.').count(), 1);
        assert_eq!(
            check(&p.claims, "app", "https://team.cloudflareaccess.com/", NOW),
            Ok("ana@example.com".into())
        );
    }

    #[test]
    fn wrong_audience_issuer_time_or_algorithm_is_refused_with_the_reason() {
        let p = parse(&token(r#"{"alg": "RS256"}"#, &claims(""))).unwrap();
        assert!(
            check(&p.claims, "other", "https://team.cloudflareaccess.com", NOW)
                .unwrap_err()
                .contains("another application")
        );
        assert!(check(&p.claims, "app", "https://evil.example", NOW)
            .unwrap_err()
            .contains("issued by"));
        assert!(check(
            &p.claims,
            "app",
            "https://team.cloudflareaccess.com",
            NOW + 3_600_000
        )
        .unwrap_err()
        .contains("expired"));
        let early = parse(&token(
            r#"{"alg": "RS256"}"#,
            &claims(r#", "nbf": 1800000500"#),
        ))
        .unwrap();
        assert!(check(
            &early.claims,
            "app",
            "https://team.cloudflareaccess.com",
            NOW
        )
        .unwrap_err()
        .contains("not valid yet"));
        assert!(parse(&token(r#"{"alg": "none"}"#, &claims("")))
            .unwrap_err()
            .contains("only RS256"));
        assert!(parse(&token(r#"{"alg": "HS256"}"#, &claims("")))
            .unwrap_err()
            .contains("only RS256"));
        let unsigned = token(r#"{"alg": "RS256"}"#, &claims(""));
        let unsigned = unsigned.rsplit_once('.').unwrap().0;
        assert!(parse(unsigned).unwrap_err().contains("no signature"));
        assert!(parse("!!.b.c").unwrap_err().contains("base64url"));
    }
}
