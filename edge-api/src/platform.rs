//! What the platform gives every module: the clock and randomness.

pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// A random hex id (128 bits).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("Web Crypto is available in workerd");
    hex::encode(bytes)
}
