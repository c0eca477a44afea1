//! A stand-in for Cloudflare Access's key publisher: an RSA key made with the `openssl` CLI,
//! its public half served as a JWKS at `/cdn-cgi/access/certs` (what Access serves for a team),
//! and tokens signed with it. The edge's verification of them is the real one.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

pub const AUD: &str = "concurrent-test-aud";
pub const KID: &str = "test-key-1";

pub struct AccessIssuer {
    /// The team domain (`CF_ACCESS_TEAM_DOMAIN`), also the tokens' issuer.
    pub url: String,
    key: PathBuf,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (apt-get install openssl)");
    if let Some(bytes) = input {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

/// A new 2048-bit RSA key in `dir/name.pem`.
pub fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    openssl(&["genrsa", "-out", path.to_str().unwrap(), "2048"], None);
    path
}

fn jwk(key: &Path) -> Value {
    let out = String::from_utf8(openssl(
        &["rsa", "-in", key.to_str().unwrap(), "-noout", "-modulus"],
        None,
    ))
    .unwrap();
    let hex = out.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    json!({"kid": KID, "kty": "RSA", "alg": "RS256", "use": "sig", "e": "AQAB", "n": URL_SAFE_NO_PAD.encode(n)})
}

impl AccessIssuer {
    /// Makes a key and serves its JWKS on a free port (for the life of the process).
    pub fn start(dir: &Path) -> AccessIssuer {
        let key = new_key(dir, "access");
        let jwks = json!({"keys": [jwk(&key)]});
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/cdn-cgi/access/certs",
                    axum::routing::get(move || {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move { axum::Json(jwks) }
                    }),
                );
                axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app)
                    .await
                    .unwrap();
            });
        });
        AccessIssuer { url, key, fetches }
    }

    /// How often the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A token with these claims (merged over valid defaults for `email`), signed with `key`
    /// (the published key when `None`).
    pub fn token(&self, email: &str, overrides: Value, key: Option<&Path>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = json!({"aud": [AUD], "iss": self.url, "email": email, "iat": now, "nbf": now, "exp": now + 600, "type": "app"});
        for (k, v) in overrides.as_object().cloned().unwrap_or_default() {
            claims[k] = v;
        }
        // `_kid` in the overrides names another signing key id in the header.
        let kid = claims
            .as_object_mut()
            .and_then(|c| c.remove("_kid"))
            .unwrap_or_else(|| json!(KID));
        let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = key.unwrap_or(&self.key);
        let signature = openssl(
            &["dgst", "-sha256", "-sign", key.to_str().unwrap()],
            Some(signed.as_bytes()),
        );
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}
