//! Lease expiry, from the alarm: each lapsed lease by core's `lease::expire` (back to the
//! queue uncounted, the attempt failed, or dropped), its run told first.

use concurrent_core::lease::{self, Change, Expiry, ItemState};
use concurrent_core::run::Event;
use concurrent_core::wire::WorkItem;
use serde::Deserialize;

use super::items::{Row, SELECT_ROWS};
use super::QueueObject;
use crate::error::ApiError;
use crate::objects::run::api::RunClient;
use crate::platform::now_ms;

/// Wait before an expiry pass with failed rows runs again.
pub(super) const RETRY_EXPIRY_MS: i64 = 5_000;

impl QueueObject {
    /// Ends lapsed leases. One row that fails (its run cannot be told, its item does not
    /// decode) is logged and left for the next pass; the others go on.
    pub(super) async fn expire(&self) -> Result<(), ApiError> {
        let now = now_ms();
        let rows: Vec<Row> = self
            .sql
            .exec(
                &format!("{SELECT_ROWS} WHERE state IN (?, ?) AND expires_at <= ?"),
                vec![
                    ItemState::Leased.as_str().into(),
                    ItemState::Cancelled.as_str().into(),
                    (now as i64).into(),
                ],
            )?
            .to_array()?;
        let mut failed = 0;
        let mut requeued = false;
        for row in rows {
            let id = row.id.clone();
            match self.expire_one(row, now).await {
                Ok(again) => requeued |= again,
                Err(e) => {
                    failed += 1;
                    worker::console_error!(
                        "queue: expiring the lease of {id} failed: {}",
                        e.detail()
                    );
                }
            }
        }
        self.forget_shared()?;
        if requeued {
            self.wake_waiters();
        }
        if failed > 0 {
            self.state.storage().set_alarm(RETRY_EXPIRY_MS).await?;
            return Ok(());
        }
        self.arm().await
    }

    /// One lapsed lease; whether its item waits in the queue again.
    async fn expire_one(&self, row: Row, now: u64) -> Result<bool, ApiError> {
        let slot = row.slot();
        let Some((expiry, change)) = lease::expire(&slot, now, self.heard_since, self.ttl()) else {
            return Ok(false);
        };
        if expiry == Expiry::Drop {
            self.write(vec![(row.id, change)])?;
            return Ok(false);
        }
        let mut item: WorkItem = match serde_json::from_str(&row.item) {
            Ok(item) => item,
            Err(e) => {
                // Written by another version, perhaps: keep it for a person, out of the way.
                self.write(vec![(
                    row.id.clone(),
                    Change::Update(lease::Slot {
                        state: ItemState::Broken,
                        ..slot
                    }),
                )])?;
                return Err(ApiError::Internal(format!(
                    "work item {} does not decode ({e}); it is set aside as 'broken'",
                    row.id
                )));
            }
        };
        let event = match &expiry {
            Expiry::Requeue => Event::Requeued { key: item.key() },
            Expiry::Fail(error) => Event::Lapsed {
                key: item.key(),
                error: error.clone(),
            },
            Expiry::Drop => unreachable!("handled above"),
        };
        let answers = RunClient::of(&self.env, &item.run_id)?
            .events(&vec![event])
            .await?;
        if let Some(Some(why)) = answers.first() {
            worker::console_log!("queue: run of {} refused the expiry: {why}", row.id);
        }
        if expiry == Expiry::Requeue {
            // The agent that had it is gone: its pending long-polls take no more work.
            if let Some(agent) = &slot.agent {
                self.mark_gone(agent);
            }
            // It may have made the MLflow run before it went: the next agent looks first.
            if let Some(c) = item.step.child_run.as_mut() {
                c.maybe_exists = true;
            }
            self.set_item(&row.id, &item)?;
        }
        self.write(vec![(row.id, change)])?;
        Ok(expiry == Expiry::Requeue)
    }

    /// Sets the alarm to the next lease expiry (after a restart, not before every lease had a
    /// TTL to be heard).
    async fn arm(&self) -> Result<(), ApiError> {
        #[derive(Deserialize)]
        struct Next {
            next: Option<f64>,
        }
        let n: Next = self
            .sql
            .exec(
                "SELECT MIN(expires_at) AS next FROM items WHERE state IN (?, ?)",
                vec![
                    ItemState::Leased.as_str().into(),
                    ItemState::Cancelled.as_str().into(),
                ],
            )?
            .one()?;
        if let Some(next) = n.next {
            let at = lease::lapses_at(next as u64, self.heard_since, self.ttl());
            self.state
                .storage()
                .set_alarm(at.saturating_sub(now_ms()) as i64 + 1)
                .await?;
        }
        Ok(())
    }
}
