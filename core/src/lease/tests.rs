use proptest::prelude::*;

use super::*;

const TTL: u64 = 30_000;

fn leased(token: u64, agent: &str, confirmed: bool, expires_at: u64) -> Slot {
    Slot {
        state: ItemState::Leased,
        token,
        agent: Some(agent.into()),
        expires_at,
        confirmed,
        unconfirmed_by: vec![],
    }
}

#[test]
fn a_new_lease_waits_a_short_while_for_its_first_heartbeat_then_lasts_the_ttl() {
    let slot = lease(&Slot::ready(), 7, "a", 1_000, TTL);
    assert_eq!(slot.expires_at, 1_000 + CONFIRM_WINDOW_MS);
    assert!(!slot.confirmed);
    let (status, change) = heartbeat(Some(&slot), 7, 2_000, TTL);
    assert_eq!(status, LeaseStatus::Active);
    assert_eq!(change, Change::Update(leased(7, "a", true, 2_000 + TTL)));
    // A short TTL (the tests') waits a third of it.
    assert_eq!(lease(&Slot::ready(), 1, "a", 0, 6_000).expires_at, 2_000);
}

#[test]
fn heartbeats_with_another_token_are_lost_and_change_nothing() {
    let slot = leased(7, "a", true, 10);
    assert_eq!(
        heartbeat(Some(&slot), 6, 5, TTL),
        (LeaseStatus::Lost, Change::Keep)
    );
    assert_eq!(
        heartbeat(None, 7, 5, TTL),
        (LeaseStatus::Lost, Change::Keep)
    );
    let cancelled = Slot {
        state: ItemState::Cancelled,
        ..slot.clone()
    };
    assert_eq!(
        heartbeat(Some(&cancelled), 7, 5, TTL),
        (LeaseStatus::Cancelled, Change::Delete)
    );
}

#[test]
fn completions_are_taken_for_the_current_lease_only() {
    let slot = leased(7, "a", true, 10);
    assert_eq!(complete(Some(&slot), "i", 7), Ok(()));
    let (why, change) = complete(Some(&slot), "i", 6).unwrap_err();
    assert!(why.contains("token 6 of work item i is stale"), "{why}");
    assert_eq!(change, Change::Keep);
    let (why, _) = complete(None, "i", 7).unwrap_err();
    assert!(why.contains("not leased"), "{why}");
    let cancelled = Slot {
        state: ItemState::Cancelled,
        ..slot
    };
    assert_eq!(
        complete(Some(&cancelled), "i", 7).unwrap_err().1,
        Change::Delete,
        "a cancelled item's result is discarded with it"
    );
    assert!(complete(Some(&Slot::ready()), "i", 0).is_err());
}

#[test]
fn withdrawing_drops_a_waiting_item_and_flags_a_leased_one() {
    assert_eq!(withdraw(&Slot::ready()), Change::Delete);
    let slot = leased(3, "a", true, 10);
    match withdraw(&slot) {
        Change::Update(s) => assert_eq!(s.state, ItemState::Cancelled),
        other => panic!("{other:?}"),
    }
}

/// A queue running since 0, a TTL ago: its restart's grace is over.
const UP: u64 = TTL;

#[test]
fn an_unconfirmed_lease_goes_back_uncounted_and_names_its_agents_when_it_never_starts() {
    let mut slot = Slot::ready();
    for n in 0..MAX_UNCONFIRMED_REQUEUES {
        let held = lease(&slot, u64::from(n) + 1, &format!("agent-{n}"), UP, TTL);
        assert_eq!(expire(&held, UP + 1, 0, TTL), None, "not yet");
        match expire(&held, UP + CONFIRM_WINDOW_MS, 0, TTL) {
            Some((Expiry::Requeue, Change::Update(next))) => {
                assert_eq!(next.state, ItemState::Ready);
                assert_eq!(next.unconfirmed_by.len() as u32, n + 1);
                slot = next;
            }
            other => panic!("{other:?}"),
        }
    }
    let held = lease(&slot, 99, "last", UP, TTL);
    match expire(&held, UP + CONFIRM_WINDOW_MS, 0, TTL) {
        Some((Expiry::Fail(why), Change::Delete)) => {
            assert!(why.contains("never started"), "{why}");
            assert!(why.contains("agent-0") && why.contains("last"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_confirmed_lease_that_lapses_fails_its_attempt_and_a_cancelled_one_is_dropped() {
    match expire(&leased(1, "a", true, UP), UP, 0, 6_000) {
        Some((Expiry::Fail(why), Change::Delete)) => {
            assert!(
                why.contains("lease expired") && why.contains("6 s"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    let cancelled = Slot {
        state: ItemState::Cancelled,
        ..leased(1, "a", false, UP)
    };
    assert_eq!(
        expire(&cancelled, UP, 0, TTL),
        Some((Expiry::Drop, Change::Delete))
    );
    assert_eq!(expire(&Slot::ready(), u64::MAX, 0, TTL), None);
}

#[test]
fn a_queue_that_runs_again_gives_every_lease_a_ttl_to_be_heard() {
    // Heard last at 1,000; the queue was away from 2,000 to 100,000.
    let slot = leased(1, "a", true, 1_000 + TTL);
    assert_eq!(
        expire(&slot, 100_000, 100_000, TTL),
        None,
        "its agent could not be heard while the queue was away"
    );
    assert_eq!(lapses_at(slot.expires_at, 100_000, TTL), 100_000 + TTL);
    assert!(
        matches!(
            expire(&slot, 100_000 + TTL, 100_000, TTL),
            Some((Expiry::Fail(_), _))
        ),
        "a TTL after, unheard: its agent is gone"
    );
    // A lease heard since the restart keeps its own expiry.
    assert_eq!(lapses_at(200_000, 100_000, TTL), 200_000);
}

#[test]
fn a_dead_agents_pending_poll_is_not_served_but_its_next_one_is() {
    assert!(may_serve(None, 5));
    assert!(!may_serve(Some(10), 5), "asked before it was found gone");
    assert!(may_serve(Some(10), 11), "asked again since: alive");
}

#[test]
fn states_are_stored_as_words() {
    for s in [
        ItemState::Ready,
        ItemState::Leased,
        ItemState::Cancelled,
        ItemState::Broken,
    ] {
        assert_eq!(ItemState::parse(s.as_str()), s);
    }
    assert_eq!(ItemState::parse("nonsense"), ItemState::Broken);
}

/// One step of the queue's world: agents lease, heartbeat, complete (some with stale tokens),
/// runs withdraw, time passes, the alarm expires leases.
#[derive(Debug, Clone)]
enum Op {
    Lease(usize),
    Heartbeat(usize, usize),
    Complete(usize, usize),
    StaleComplete(usize),
    Withdraw(usize),
    Wait(u64),
    Expire,
    /// The queue is away this long (no heartbeat reaches it), then runs again.
    Restart(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4).prop_map(Op::Lease),
        4 => (0usize..4, 0usize..3).prop_map(|(a, i)| Op::Heartbeat(a, i)),
        2 => (0usize..4, 0usize..3).prop_map(|(a, i)| Op::Complete(a, i)),
        1 => (0usize..3).prop_map(Op::StaleComplete),
        1 => (0usize..3).prop_map(Op::Withdraw),
        3 => (0u64..40_000).prop_map(Op::Wait),
        2 => Just(Op::Expire),
        1 => (0u64..100_000).prop_map(Op::Restart),
    ]
}

/// The queue as its object keeps it, driven by the rules above.
struct World {
    slots: Vec<Option<Slot>>,
    next_token: u64,
    now: u64,
    /// When the queue last started running.
    heard_since: u64,
    /// What each agent believes it holds: item → token.
    held: Vec<std::collections::BTreeMap<usize, u64>>,
    /// The lease each item was last confirmed under, until when (no two may overlap).
    active_until: Vec<Option<(u64, u64)>>,
}

proptest! {
    #[test]
    fn no_item_is_held_by_two_leases_at_once_and_stale_tokens_change_nothing(
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut w = World {
            slots: vec![Some(Slot::ready()); 3],
            next_token: 1,
            now: 0,
            heard_since: 0,
            held: vec![Default::default(); 4],
            active_until: vec![None; 3],
        };
        for op in ops {
            match op {
                Op::Lease(a) => {
                    if let Some(i) = (0..3).find(|i| w.slots[*i].as_ref().is_some_and(|s| s.state == ItemState::Ready)) {
                        // Whoever held it before has lost it for good: their lease lapsed.
                        if let Some((token, until)) = w.active_until[i] {
                            prop_assert!(until <= w.now, "item {i} leased again while lease {token} lives until {until}");
                        }
                        let token = w.next_token;
                        w.next_token += 1;
                        w.slots[i] = Some(lease(w.slots[i].as_ref().unwrap(), token, &format!("a{a}"), w.now, TTL));
                        w.held[a].insert(i, token);
                    }
                }
                Op::Heartbeat(a, i) => {
                    let Some(&token) = w.held[a].get(&i) else { continue };
                    let (status, change) = heartbeat(w.slots[i].as_ref(), token, w.now, TTL);
                    if status == LeaseStatus::Active {
                        if let Some((other, until)) = w.active_until[i] {
                            prop_assert!(other == token || until <= w.now, "two live leases of item {i}");
                        }
                        w.active_until[i] = Some((token, w.now + TTL));
                    } else {
                        w.held[a].remove(&i);
                    }
                    apply(&mut w.slots[i], change);
                }
                Op::Complete(a, i) => {
                    let Some(token) = w.held[a].remove(&i) else { continue };
                    let before = w.slots[i].clone();
                    match complete(w.slots[i].as_ref(), &format!("i{i}"), token) {
                        Ok(()) => {
                            prop_assert!(before.as_ref().is_some_and(|s| s.token == token));
                            w.slots[i] = None;
                            w.active_until[i] = None;
                        }
                        Err((_, change)) => {
                            if before.as_ref().is_some_and(|s| s.token != token) {
                                prop_assert_eq!(&change, &Change::Keep, "a stale completion changed the item");
                            }
                            apply(&mut w.slots[i], change);
                        }
                    }
                }
                Op::StaleComplete(i) => {
                    let before = w.slots[i].clone();
                    let stale = before.as_ref().map_or(0, |s| s.token.saturating_sub(1));
                    if before.as_ref().is_some_and(|s| s.token != stale) {
                        let answer = complete(before.as_ref(), "i", stale);
                        prop_assert!(matches!(answer, Err((_, Change::Keep))), "{answer:?}");
                        let (status, change) = heartbeat(before.as_ref(), stale, w.now, TTL);
                        prop_assert_eq!(status, LeaseStatus::Lost);
                        prop_assert_eq!(change, Change::Keep);
                    }
                }
                Op::Withdraw(i) => {
                    if let Some(s) = w.slots[i].clone() {
                        apply(&mut w.slots[i], withdraw(&s));
                    }
                }
                Op::Wait(ms) => w.now += ms,
                Op::Restart(ms) => {
                    w.now += ms;
                    w.heard_since = w.now;
                }
                Op::Expire => {
                    for i in 0..3 {
                        let Some(s) = w.slots[i].clone() else { continue };
                        if let Some((expiry, change)) = expire(&s, w.now, w.heard_since, TTL) {
                            if expiry == Expiry::Requeue {
                                prop_assert!(!s.confirmed, "a confirmed lease went back uncounted");
                            }
                            if s.confirmed && s.state == ItemState::Leased {
                                prop_assert!(matches!(expiry, Expiry::Fail(_)));
                            }
                            apply(&mut w.slots[i], change);
                        }
                    }
                }
            }
            // Tokens only grow: the slot's token is the newest handed out for it.
            for s in w.slots.iter().flatten() {
                prop_assert!(s.token < w.next_token);
            }
        }
    }
}

/// A stretch of a lease's life: the queue runs this long (its agent heartbeats at the end),
/// or is away this long (nothing reaches it) and then runs again.
#[derive(Debug, Clone)]
enum Stretch {
    Runs(u64),
    Away(u64),
}

proptest! {
    #[test]
    fn a_lease_heartbeated_whenever_the_queue_runs_lapses_only_once_its_agent_stops(
        life in proptest::collection::vec(prop_oneof![
            3 => (0..=TTL / 3).prop_map(Stretch::Runs),
            1 => (0..4 * TTL).prop_map(Stretch::Away),
        ], 1..60),
    ) {
        let (mut now, mut heard_since) = (0, 0);
        let mut slot = Some(lease(&Slot::ready(), 1, "a", now, TTL));
        let (_, change) = heartbeat(slot.as_ref(), 1, now, TTL);
        apply(&mut slot, change);
        for stretch in life {
            match stretch {
                Stretch::Runs(ms) => now += ms,
                Stretch::Away(ms) => {
                    now += ms;
                    heard_since = now;
                }
            }
            // The alarm may ring at any moment: before the agent is heard again, too.
            let s = slot.clone().unwrap();
            prop_assert_eq!(expire(&s, now, heard_since, TTL), None, "lapsed at {}", now);
            if matches!(stretch, Stretch::Runs(_)) {
                let (status, change) = heartbeat(Some(&s), 1, now, TTL);
                prop_assert_eq!(status, LeaseStatus::Active);
                apply(&mut slot, change);
            }
        }
        // Its agent stops: the lease lapses a TTL after it was last heard, or after the queue
        // came back, whichever is later.
        let s = slot.unwrap();
        let at = lapses_at(s.expires_at, heard_since, TTL);
        prop_assert!(at <= now.max(heard_since) + TTL);
        prop_assert_eq!(expire(&s, at - 1, heard_since, TTL), None);
        prop_assert!(matches!(expire(&s, at, heard_since, TTL), Some((Expiry::Fail(_), Change::Delete))));
    }
}

fn apply(slot: &mut Option<Slot>, change: Change) {
    match change {
        Change::Keep => {}
        Change::Update(s) => *slot = Some(s),
        Change::Delete => *slot = None,
    }
}
