//! The lease protocol of a cluster's queue, decided apart from its storage: what a lease, a
//! heartbeat, a completion, a withdrawal and an expiry do to one work item. The queue object
//! reads an item's [`Slot`], asks here, and writes the [`Change`]; `tests` checks the rules
//! over random interleavings of many agents.
//!
//! # Guarantees
//! - An item is held by one lease at a time, and each lease has a new fencing token: a
//!   heartbeat, completion or pin with any other token changes nothing.
//! - A lease is *unconfirmed* until its agent's first heartbeat (agents send it the moment
//!   they receive work, before anything else), and lapses after its [`confirm_window`]: a lease
//!   handed to an agent that is gone goes back to the queue within seconds, uncounted.
//! - An attempt is charged (it fails, and the run decides on a retry) only for what happened
//!   while it ran: its agent stopped heartbeating a confirmed lease.
//! - A lease lapses only after the queue could have heard its agent for a whole TTL: agents
//!   cannot heartbeat a queue that is not running, so when the queue runs again (its object
//!   restarted, the edge redeployed or crashed) every lease has a TTL from then ([`lapses_at`]).

#[cfg(test)]
mod tests;

use crate::wire::LeaseStatus;

/// Times an attempt may go back to the queue unconfirmed before it fails: an agent that
/// crashes on receiving work (whatever restarts it) must not get the same item for ever.
/// Agents that are gone are not served again, so dead agents' pending polls cannot use
/// this up (see [`may_serve`]).
pub const MAX_UNCONFIRMED_REQUEUES: u32 = 10;
/// Longest wait for a new lease's first heartbeat (a third of the TTL when that is shorter):
/// agents confirm at once, so this only needs to cover one round trip under load.
pub const CONFIRM_WINDOW_MS: u64 = 5_000;

/// How long a new lease waits for its first heartbeat.
pub fn confirm_window(ttl_ms: u64) -> u64 {
    (ttl_ms / 3).min(CONFIRM_WINDOW_MS)
}

/// Where an item is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    /// Waiting for an agent.
    Ready,
    /// Held by the lease of `Slot::token`.
    Leased,
    /// Its run withdrew it while leased: the agent is told to stop at its next heartbeat.
    Cancelled,
    /// Its row could not be read (written by another version): kept aside for a person.
    Broken,
}

impl ItemState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Ready => "ready",
            ItemState::Leased => "leased",
            ItemState::Cancelled => "cancelled",
            ItemState::Broken => "broken",
        }
    }

    /// From storage; an unknown word is [`ItemState::Broken`].
    pub fn parse(s: &str) -> ItemState {
        match s {
            "ready" => ItemState::Ready,
            "leased" => ItemState::Leased,
            "cancelled" => ItemState::Cancelled,
            _ => ItemState::Broken,
        }
    }

    /// A lease exists (and expires).
    pub fn is_held(self) -> bool {
        matches!(self, ItemState::Leased | ItemState::Cancelled)
    }
}

/// What the queue keeps of an item's place and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub state: ItemState,
    /// The current lease's fencing token (0 when ready).
    pub token: u64,
    pub agent: Option<String>,
    /// When the lease lapses (milliseconds since the epoch; 0 when ready).
    pub expires_at: u64,
    /// The agent's first heartbeat came.
    pub confirmed: bool,
    /// Agents that received the item and never confirmed it, oldest first.
    pub unconfirmed_by: Vec<String>,
}

impl Slot {
    /// A new item, waiting.
    pub fn ready() -> Slot {
        Slot {
            state: ItemState::Ready,
            token: 0,
            agent: None,
            expires_at: 0,
            confirmed: false,
            unconfirmed_by: Vec::new(),
        }
    }

    /// Whether `token` names the lease that holds the item now.
    pub fn is_current(&self, token: u64) -> bool {
        self.state.is_held() && self.token == token
    }

    /// Whether `token` names the lease that holds the item now, and its run still wants it.
    pub fn is_active(&self, token: u64) -> bool {
        self.is_current(token) && self.state == ItemState::Leased
    }
}

/// What to write for an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Keep,
    Update(Slot),
    Delete,
}

/// The item leased to `agent` with the fresh fencing `token`; it waits for the agent's first
/// heartbeat for the [`confirm_window`].
///
/// # Panics
/// In debug builds, when the item is not ready.
pub fn lease(slot: &Slot, token: u64, agent: &str, now: u64, ttl_ms: u64) -> Slot {
    debug_assert_eq!(slot.state, ItemState::Ready, "only a ready item is leased");
    Slot {
        state: ItemState::Leased,
        token,
        agent: Some(agent.to_string()),
        expires_at: now + confirm_window(ttl_ms),
        confirmed: false,
        unconfirmed_by: slot.unconfirmed_by.clone(),
    }
}

/// A heartbeat for lease `token`: active leases are confirmed and extended by the TTL; a
/// cancelled one is answered and leaves the queue (its agent stops the step, nothing more
/// comes of it); any other lease is lost.
pub fn heartbeat(slot: Option<&Slot>, token: u64, now: u64, ttl_ms: u64) -> (LeaseStatus, Change) {
    match slot {
        Some(s) if s.is_active(token) => (
            LeaseStatus::Active,
            Change::Update(Slot {
                expires_at: now + ttl_ms,
                confirmed: true,
                ..s.clone()
            }),
        ),
        Some(s) if s.is_current(token) => (LeaseStatus::Cancelled, Change::Delete),
        _ => (LeaseStatus::Lost, Change::Keep),
    }
}

/// Whether an outcome reported for lease `token` of `item_id` is taken; when refused, why and
/// what becomes of the item (a cancelled item's result is discarded, and the item with it).
/// A taken outcome goes to the run first; the item leaves the queue once the run has it.
pub fn complete(slot: Option<&Slot>, item_id: &str, token: u64) -> Result<(), (String, Change)> {
    match slot {
        None => Err((
            format!("work item {item_id} is not leased (it completed, expired or was cancelled)"),
            Change::Keep,
        )),
        Some(s) if s.token != token => Err((
            format!(
                "lease token {token} of work item {item_id} is stale; the current lease has token {}",
                s.token
            ),
            Change::Keep,
        )),
        Some(s) if s.state == ItemState::Cancelled => Err((
            format!("work item {item_id} was cancelled; its result is discarded"),
            Change::Delete,
        )),
        Some(s) if s.state != ItemState::Leased => Err((
            format!("work item {item_id} is not leased"),
            Change::Keep,
        )),
        Some(_) => Ok(()),
    }
}

/// The run withdrew the item (its attempt was cancelled): a waiting item leaves the queue, a
/// leased one is flagged so its agent stops it at the next heartbeat.
pub fn withdraw(slot: &Slot) -> Change {
    match slot.state {
        ItemState::Ready => Change::Delete,
        ItemState::Leased => Change::Update(Slot {
            state: ItemState::Cancelled,
            ..slot.clone()
        }),
        ItemState::Cancelled | ItemState::Broken => Change::Keep,
    }
}

/// What became of an expired lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Never confirmed: no live agent had it, nothing ran. The item waits in the queue again
    /// and the attempt is not counted.
    Requeue,
    /// The attempt fails with this error; the run decides on a retry.
    Fail(String),
    /// A cancelled item whose agent never came back: it just leaves the queue.
    Drop,
}

/// When a held lease lapses, for a queue that has been running since `heard_since`: at its
/// `expires_at`, but never before a TTL of running has let its agent be heard.
pub fn lapses_at(expires_at: u64, heard_since: u64, ttl_ms: u64) -> u64 {
    expires_at.max(heard_since.saturating_add(ttl_ms))
}

/// Decides a lease that lapsed at `now` (`None` when it has not), with the change to write; the
/// queue has been running since `heard_since`.
pub fn expire(slot: &Slot, now: u64, heard_since: u64, ttl_ms: u64) -> Option<(Expiry, Change)> {
    if !slot.state.is_held() || lapses_at(slot.expires_at, heard_since, ttl_ms) > now {
        return None;
    }
    let agent = slot.agent.clone().unwrap_or_default();
    if slot.state == ItemState::Cancelled {
        return Some((Expiry::Drop, Change::Delete));
    }
    if slot.confirmed {
        return Some((
            Expiry::Fail(format!(
                "lease expired: agent {agent:?} stopped sending heartbeats while it ran this attempt (none for {} s: it crashed, lost the network, or was stopped); the attempt is counted as failed",
                ttl_ms / 1000
            )),
            Change::Delete,
        ));
    }
    let mut unconfirmed_by = slot.unconfirmed_by.clone();
    unconfirmed_by.push(agent);
    if (unconfirmed_by.len() as u32) <= MAX_UNCONFIRMED_REQUEUES {
        return Some((
            Expiry::Requeue,
            Change::Update(Slot {
                unconfirmed_by,
                ..Slot::ready()
            }),
        ));
    }
    Some((
        Expiry::Fail(format!(
            "the attempt never started: it was handed to {} agents and none of them confirmed it (each stopped or crashed on receiving it: {}); it is counted as failed. Look at those agents' logs for what stops them",
            unconfirmed_by.len(),
            unconfirmed_by.join(", ")
        )),
        Change::Delete,
    ))
}

/// Whether a lease request that `agent` made at `asked_at` may still be served work: not when
/// the agent was found gone after it asked (`gone_at`, when a lease it was handed lapsed
/// unconfirmed). A dead agent's pending long-poll takes no more work; its next request, if it
/// lives after all, is served.
pub fn may_serve(gone_at: Option<u64>, asked_at: u64) -> bool {
    gone_at.is_none_or(|gone| gone < asked_at)
}
