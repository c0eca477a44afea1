//! What a cluster queue does with a lease that expired: the decision, apart from the queue's
//! storage.

/// Leases an attempt may lose before its agent's first heartbeat and still go back to the queue
/// uncounted. Beyond it the attempt fails: a step that kills its agent at once would otherwise
/// be retried for ever without spending its retry budget.
pub const MAX_UNCONFIRMED_REQUEUES: u32 = 3;

/// What became of an expired lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Never confirmed: the agent most likely died while its long-poll was answered. Nothing
    /// ran, so the item waits in the queue again and the attempt is not counted.
    Requeue,
    /// The attempt fails with this error; the run decides on a retry.
    Fail(String),
    /// A cancelled item whose agent never came back: it just leaves the queue.
    Drop,
}

/// Decides an expired lease: `cancelled` when the run withdrew it, `confirmed` when a heartbeat
/// extended it, `requeues` how often it already went back unconfirmed.
pub fn on_expiry(
    cancelled: bool,
    confirmed: bool,
    requeues: u32,
    agent: &str,
    ttl_ms: u64,
) -> Expiry {
    if cancelled {
        return Expiry::Drop;
    }
    if confirmed {
        return Expiry::Fail(format!(
            "lease expired: agent {agent:?} sent no heartbeat for {} s (it crashed, lost the network, or was stopped); the attempt is counted as failed",
            ttl_ms / 1000
        ));
    }
    if requeues < MAX_UNCONFIRMED_REQUEUES {
        return Expiry::Requeue;
    }
    Expiry::Fail(format!(
        "the attempt was leased {} times and no agent ever confirmed it (each one stopped before its first heartbeat, the last was {agent:?}); it is counted as failed. If the step kills its agent (memory, signals), look at the agent's log",
        requeues + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfirmed_leases_go_back_a_bounded_number_of_times() {
        for n in 0..MAX_UNCONFIRMED_REQUEUES {
            assert_eq!(on_expiry(false, false, n, "a", 6000), Expiry::Requeue);
        }
        match on_expiry(false, false, MAX_UNCONFIRMED_REQUEUES, "a", 6000) {
            Expiry::Fail(why) => assert!(why.contains("leased 4 times"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn confirmed_leases_fail_and_cancelled_ones_are_dropped() {
        assert!(
            matches!(on_expiry(false, true, 0, "a", 6000), Expiry::Fail(w) if w.contains("6 s"))
        );
        assert_eq!(on_expiry(true, true, 0, "a", 6000), Expiry::Drop);
        assert_eq!(on_expiry(true, false, 9, "a", 6000), Expiry::Drop);
    }
}
