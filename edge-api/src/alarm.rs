//! A Durable Object's alarm, set no later than when it is needed.

use worker::Storage;

use crate::error::ApiError;
use crate::platform::now_ms;

/// Makes sure the alarm rings by `at` (milliseconds since the epoch): an alarm already set that
/// soon stays (reading it is cheap, setting it is a storage write), a later one is brought
/// forward.
pub async fn ring_by(storage: &Storage, at: u64) -> Result<(), ApiError> {
    match storage.get_alarm().await? {
        Some(set) if set <= at as i64 => {}
        _ => {
            storage
                .set_alarm(at.saturating_sub(now_ms()) as i64 + 1)
                .await?
        }
    }
    Ok(())
}
