//! HMAC-SHA256 signatures of the edge's own credentials and ids (step tokens, session cookies,
//! run ids), keyed with the deployment's secret. Pure, so the rules are tested here.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The MAC of `message` under `key`, as lowercase hex.
pub fn mac_hex(key: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `given` is the MAC of `message` (in constant time, so timing tells nothing).
pub fn verify(key: &str, message: &str, given: &str) -> bool {
    constant_time_eq(mac_hex(key, message).as_bytes(), given.as_bytes())
}

/// A webhook signature as MLflow makes it (and Concurrent's notifications): `v1,` and the
/// base64 HMAC-SHA256 of `<delivery id>.<timestamp>.<payload>` under `secret`.
pub fn webhook_signature(
    secret: &str,
    delivery_id: &str,
    timestamp: &str,
    payload: &str,
) -> String {
    use base64::Engine;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{delivery_id}.{timestamp}.{payload}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// SHA-256 of `text`, as lowercase hex (how API tokens are stored).
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a run's id is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSeed<'a> {
    /// A new run: random bytes (as hex).
    Fresh(&'a str),
    /// A start with an `Idempotency-Key`: a retried request lands on the same run.
    Idempotent { caller: &'a str, key: &'a str },
    /// A schedule's tick: the trigger firing twice starts one run.
    ScheduleTick { schedule: &'a str, at: u64 },
    /// A trigger's event (its key): the same event delivered twice starts one run.
    TriggerEvent { trigger: &'a str, event: &'a str },
}

impl RunSeed<'_> {
    fn text(&self) -> String {
        match self {
            RunSeed::Fresh(random) => random.to_string(),
            RunSeed::Idempotent { caller, key } => format!("idempotency\n{caller}\n{key}"),
            RunSeed::ScheduleTick { schedule, at } => format!("schedule\n{schedule}\n{at}"),
            RunSeed::TriggerEvent { trigger, event } => format!("trigger\n{trigger}\n{event}"),
        }
    }
}

/// A run id from its seed: 16 hex digits of the seed's hash and 16 of their MAC. The edge thus
/// tells a run id it issued from an invented one without looking anything up, and reads of
/// invented ids create no state.
pub fn run_id(key: &str, seed: RunSeed<'_>) -> String {
    let head = &sha256_hex(&seed.text())[..16];
    format!("{head}{}", &mac_hex(key, &format!("run:{head}"))[..16])
}

/// Whether `id` is a run id issued with `key`.
pub fn is_run_id(key: &str, id: &str) -> bool {
    id.len() == 32
        && id.is_char_boundary(16)
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && constant_time_eq(
            &mac_hex(key, &format!("run:{}", &id[..16])).as_bytes()[..16],
            &id.as_bytes()[16..],
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_verify_only_for_their_message_and_key() {
        let m = mac_hex("k", "hello");
        assert!(verify("k", "hello", &m));
        assert!(!verify("k", "hellO", &m));
        assert!(!verify("other", "hello", &m));
        assert!(!verify("k", "hello", &m[..10]));
    }

    #[test]
    fn run_ids_are_deterministic_and_tell_invented_ones_apart() {
        let tick = RunSeed::ScheduleTick {
            schedule: "nightly",
            at: 1_700_000_000_000,
        };
        let id = run_id("secret", tick);
        assert_eq!(id, run_id("secret", tick));
        assert_eq!(id.len(), 32);
        assert!(is_run_id("secret", &id));
        assert!(!is_run_id("another secret", &id));
        assert!(!is_run_id("secret", "0123456789abcdef0123456789abcdef"));
        assert!(!is_run_id("secret", &id.to_uppercase()));
        assert!(!is_run_id("secret", "é123456789abcdef0123456789abcde"));
        assert_ne!(id, run_id("secret", RunSeed::Fresh("another seed")));
        assert_ne!(
            run_id(
                "secret",
                RunSeed::Idempotent {
                    caller: "a",
                    key: "k"
                }
            ),
            run_id(
                "secret",
                RunSeed::Idempotent {
                    caller: "b",
                    key: "k"
                }
            ),
            "one caller's key never lands on another's run"
        );
    }
}
