//! How many calls to keep in flight to a server others share (MLflow): more while its answers
//! stay about as fast as the fastest seen lately, fewer as they slow down, half as many when it
//! fails. A fixed number either leaves a fast server idle or piles onto a loaded one, where the
//! agents' calls (which start steps) matter more than the run's bookkeeping.
//!
//! Calls go out in waves of [`ConcurrencyLimit::current`]; each wave's answers adjust the limit
//! (additive increase, multiplicative decrease, as TCP does, with a latency baseline as in
//! TCP Vegas and Netflix's concurrency-limits).

/// Answers slower than this many times the baseline mean the server is queueing.
const TOLERANCE: f64 = 2.0;
/// How much a slower wave lifts the baseline, so a server that stays slower (not overloaded,
/// just further away) is accepted after a few dozen waves.
const BASELINE_DRIFT: f64 = 1.05;

#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyLimit {
    limit: f64,
    min: usize,
    max: usize,
    /// The median answer time of the fastest recent wave, in milliseconds.
    baseline_ms: Option<f64>,
}

impl ConcurrencyLimit {
    pub fn new(initial: usize, min: usize, max: usize) -> ConcurrencyLimit {
        let min = min.max(1);
        let max = max.max(min);
        ConcurrencyLimit {
            limit: initial.clamp(min, max) as f64,
            min,
            max,
            baseline_ms: None,
        }
    }

    /// Calls to send in the next wave.
    pub fn current(&self) -> usize {
        (self.limit.round() as usize).clamp(self.min, self.max)
    }

    /// A wave was answered: `answered_ms` holds the time each answered call took; `overloaded`
    /// says whether any call failed the way an overloaded server fails (a timeout, a 5xx, a 429).
    pub fn on_wave(&mut self, answered_ms: &[f64], overloaded: bool) {
        let (min, max) = (self.min as f64, self.max as f64);
        if overloaded {
            self.limit = (self.limit / 2.0).max(min);
            return;
        }
        let Some(median) = median(answered_ms) else {
            return;
        };
        let baseline = match self.baseline_ms {
            Some(b) if b <= median => (b * BASELINE_DRIFT).min(median),
            _ => median,
        };
        self.baseline_ms = Some(baseline);
        // Only a full wave says whether the server keeps up with this many.
        let full = answered_ms.len() + 1 >= self.current();
        self.limit = if median > TOLERANCE * baseline {
            (self.limit * 0.75).max(min)
        } else if full {
            (self.limit + self.limit.sqrt()).min(max)
        } else {
            self.limit
        };
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A server that answers in `base` ms up to `capacity` calls in flight and queues beyond.
    fn server(base: f64, capacity: usize) -> impl Fn(usize) -> f64 {
        move |in_flight| base * (in_flight as f64 / capacity as f64).max(1.0)
    }

    fn run(limit: &mut ConcurrencyLimit, answer: &dyn Fn(usize) -> f64, waves: usize) {
        for _ in 0..waves {
            let n = limit.current();
            limit.on_wave(&vec![answer(n); n], false);
        }
    }

    #[test]
    fn grows_to_a_fast_servers_capacity_and_stays_near_it() {
        let mut l = ConcurrencyLimit::new(8, 2, 64);
        let answer = server(20.0, 40);
        run(&mut l, &answer, 50);
        let settled: Vec<usize> = (0..20)
            .map(|_| {
                run(&mut l, &answer, 1);
                l.current()
            })
            .collect();
        assert!(
            settled.iter().all(|&c| (30..=64).contains(&c)),
            "{settled:?}"
        );
        assert!(
            settled.iter().any(|&c| c > 8),
            "never grew past the start: {settled:?}"
        );
    }

    #[test]
    fn backs_off_when_the_server_slows_under_others_load() {
        let mut l = ConcurrencyLimit::new(8, 2, 64);
        run(&mut l, &server(20.0, 40), 30);
        let before = l.current();
        // Others now keep the server busy: every answer takes five times as long.
        run(&mut l, &|_| 100.0, 3);
        assert!(l.current() < before / 2, "{before} → {}", l.current());
    }

    #[test]
    fn halves_on_overload_and_never_goes_below_the_minimum() {
        let mut l = ConcurrencyLimit::new(16, 2, 64);
        l.on_wave(&[], true);
        assert_eq!(l.current(), 8);
        for _ in 0..10 {
            l.on_wave(&[], true);
        }
        assert_eq!(l.current(), 2);
    }

    #[test]
    fn a_short_wave_does_not_raise_the_limit() {
        let mut l = ConcurrencyLimit::new(8, 2, 64);
        for _ in 0..10 {
            l.on_wave(&[10.0, 10.0], false);
        }
        assert_eq!(l.current(), 8);
    }

    #[test]
    fn a_server_that_stays_slower_is_accepted_again() {
        let mut l = ConcurrencyLimit::new(8, 2, 64);
        run(&mut l, &|_| 10.0, 5);
        run(&mut l, &|_| 50.0, 100);
        assert!(l.current() > 8, "{}", l.current());
    }

    proptest! {
        #[test]
        fn the_limit_stays_within_its_bounds(
            waves in proptest::collection::vec((proptest::collection::vec(0.0f64..10_000.0, 0..80), any::<bool>()), 0..60),
            initial in 0usize..100,
        ) {
            let mut l = ConcurrencyLimit::new(initial, 2, 64);
            for (answered, overloaded) in waves {
                l.on_wave(&answered, overloaded);
                prop_assert!((2..=64).contains(&l.current()));
            }
        }
    }
}
