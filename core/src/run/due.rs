//! What each instance still asks of the run (a retry's time, work to queue or withdraw, an
//! MLflow run to close), and the sum over a run's instances. [`next_wake`](super::next_wake)
//! needs only the sum, so the run object keeps it up to date as it writes each changed
//! instance, instead of walking 100,000 instances after every event.

use std::collections::BTreeMap;

use super::state::{AttemptState, Instance, RunState};

/// What one instance asks of the run; a function of the instance alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceDue {
    /// A retry or an approval's timeout is due then.
    pub retry_at: Option<u64>,
    /// An attempt waits to be queued, or a cancelled one to be withdrawn.
    pub queue_work: bool,
    /// An ended attempt's MLflow run is still open.
    pub to_close: bool,
}

impl InstanceDue {
    pub fn of(inst: &Instance) -> InstanceDue {
        let queue_work = inst.current().is_some_and(|a| {
            matches!(a.state, AttemptState::Creating | AttemptState::Queued) && !a.enqueued
        }) || inst
            .attempts
            .iter()
            .any(|a| a.state == AttemptState::Cancelled && a.enqueued && !a.withdrawn);
        let to_close = inst.attempts.iter().any(|a| {
            a.state.is_terminal() && !a.mlflow_closed && (a.mlflow_run_id.is_some() || a.leased)
        });
        InstanceDue {
            retry_at: inst.retry_at,
            queue_work,
            to_close,
        }
    }
}

/// The instances' dues summed: counts, and the retry times as a multiset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dues {
    queue_work: usize,
    to_close: usize,
    retry_at: BTreeMap<u64, usize>,
}

impl Dues {
    /// The sum over every instance of the run.
    pub fn of(run: &RunState) -> Dues {
        let mut dues = Dues::default();
        for inst in run.nodes.iter().flat_map(|n| &n.instances) {
            dues.add(InstanceDue::of(inst));
        }
        dues
    }

    pub fn add(&mut self, d: InstanceDue) {
        self.queue_work += usize::from(d.queue_work);
        self.to_close += usize::from(d.to_close);
        if let Some(t) = d.retry_at {
            *self.retry_at.entry(t).or_default() += 1;
        }
    }

    /// Takes out what [`Dues::add`] put in for the same due.
    pub fn remove(&mut self, d: InstanceDue) {
        self.queue_work -= usize::from(d.queue_work);
        self.to_close -= usize::from(d.to_close);
        if let Some(t) = d.retry_at {
            if let Some(n) = self.retry_at.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    self.retry_at.remove(&t);
                }
            }
        }
    }

    pub fn any_queue_work(&self) -> bool {
        self.queue_work > 0
    }

    pub fn any_to_close(&self) -> bool {
        self.to_close > 0
    }

    /// The earliest retry or timeout of any instance.
    pub fn first_retry_at(&self) -> Option<u64> {
        self.retry_at.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_due() -> impl Strategy<Value = InstanceDue> {
        (proptest::option::of(0u64..5), any::<bool>(), any::<bool>()).prop_map(
            |(retry_at, queue_work, to_close)| InstanceDue {
                retry_at,
                queue_work,
                to_close,
            },
        )
    }

    proptest! {
        /// Replacing rows one at a time, as the run object does when it writes a changed
        /// instance, ends with the sum of the rows as they are.
        #[test]
        fn replacing_rows_keeps_the_sum_of_what_they_are(
            changes in proptest::collection::vec((0usize..6, arb_due()), 0..60)
        ) {
            let mut rows: BTreeMap<usize, InstanceDue> = BTreeMap::new();
            let mut dues = Dues::default();
            for (row, due) in changes {
                if let Some(old) = rows.insert(row, due) {
                    dues.remove(old);
                }
                dues.add(due);
            }
            let mut sum = Dues::default();
            rows.values().for_each(|d| sum.add(*d));
            prop_assert_eq!(dues, sum);
        }
    }
}
