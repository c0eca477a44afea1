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

fn part<'a>(it: &mut impl Iterator<Item = &'a str>, what: &str) -> Result<Vec<u8>, JwtError> {
    let text = it
        .next()
        .ok_or_else(|| JwtError::Malformed(format!("the token has no {what}")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| JwtError::Malformed(format!("the token's {what} is not base64url: {e}")))
}

/// Splits `header.payload.signature`; only RS256 is accepted (what Access signs with).
///
/// # Errors
/// [`JwtError::Malformed`], saying why.
pub fn parse(token: &str) -> Result<Parts, JwtError> {
    let bad = JwtError::Malformed;
    let mut it = token.split('.');
    let header = part(&mut it, "header")?;
    let payload = part(&mut it, "payload")?;
    let signature = part(&mut it, "signature")?;
    if it.next().is_some() {
        return Err(bad("the token has more than three parts".into()));
    }
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("the token's header does not decode: {e}")))?;
    if header.alg != "RS256" {
        return Err(bad(format!(
            "the token is signed with {:?}; only RS256 is accepted",
            header.alg
        )));
    }
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|e| bad(format!("the token's claims do not decode: {e}")))?;
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

/// Why an Access token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token cannot be taken apart (shape, base64, JSON, algorithm).
    #[error("{0}")]
    Malformed(String),
    #[error("the token is for another application (aud {got}, expected {expected:?})")]
    Audience { got: String, expected: String },
    #[error("the token was issued by {got:?}, not {expected:?}")]
    Issuer { got: String, expected: String },
    #[error("the token expired; reload the page to sign in with Cloudflare Access again")]
    Expired,
    #[error("the token is not valid yet (check the clocks)")]
    NotYet,
    #[error("the token names no user (no email or common_name)")]
    NoUser,
}

/// Checks audience, issuer and validity time (with a minute of clock skew); returns who it is.
///
/// # Errors
/// [`JwtError`]: which claim failed and why.
pub fn check(claims: &Claims, aud: &str, issuer: &str, now_ms: u64) -> Result<String, JwtError> {
    const SKEW: u64 = 60;
    let now = now_ms / 1000;
    if !claims.aud.contains(aud) {
        return Err(JwtError::Audience {
            got: format!("{:?}", claims.aud),
            expected: aud.into(),
        });
    }
    if claims.iss.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(JwtError::Issuer {
            got: claims.iss.clone(),
            expected: issuer.into(),
        });
    }
    if claims.exp + SKEW < now {
        return Err(JwtError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + SKEW) {
        return Err(JwtError::NotYet);
    }
    claims
        .email
        .clone()
        .or_else(|| claims.common_name.clone())
        .ok_or(JwtError::NoUser)
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
                .to_string()
                .contains("another application")
        );
        assert!(check(&p.claims, "app", "https://evil.example", NOW)
            .unwrap_err()
            .to_string()
            .contains("issued by"));
        assert!(check(
            &p.claims,
            "app",
            "https://team.cloudflareaccess.com",
            NOW + 3_600_000
        )
        .unwrap_err()
        .to_string()
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
        .to_string()
        .contains("not valid yet"));
        assert!(parse(&token(r#"{"alg": "none"}"#, &claims("")))
            .unwrap_err()
            .to_string()
            .contains("only RS256"));
        assert!(parse(&token(r#"{"alg": "HS256"}"#, &claims("")))
            .unwrap_err()
            .to_string()
            .contains("only RS256"));
        let unsigned = token(r#"{"alg": "RS256"}"#, &claims(""));
        let unsigned = unsigned.rsplit_once('.').unwrap().0;
        assert!(parse(unsigned)
            .unwrap_err()
            .to_string()
            .contains("no signature"));
        assert!(parse("!!.b.c")
            .unwrap_err()
            .to_string()
            .contains("base64url"));
    }
}
