//! An even pace for calls that a shared server must not receive in bursts (pod creation: a
//! 10,000-wide node must not flood the Kubernetes API server).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// At most `per_second` calls a second, spread evenly: each caller waits for its own slot.
pub struct Pace {
    gap: Duration,
    next: Mutex<Instant>,
}

impl Pace {
    pub fn per_second(per_second: f64) -> Pace {
        Pace {
            gap: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits until this caller's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spread_at_the_pace() {
        let pace = std::sync::Arc::new(Pace::per_second(10.0));
        let start = Instant::now();
        let waits: Vec<_> = (0..5)
            .map(|_| {
                let pace = pace.clone();
                tokio::spawn(async move {
                    pace.wait().await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut took = Vec::new();
        for w in waits {
            took.push(w.await.unwrap());
        }
        took.sort();
        assert_eq!(
            took.last().copied(),
            Some(Duration::from_millis(400)),
            "{took:?}"
        );
        assert_eq!(took[0], Duration::ZERO);
    }
}
