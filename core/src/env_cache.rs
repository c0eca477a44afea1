//! Which built environments an agent's cache lets go: those unused for longer than its age
//! bound, then the least recently used until the cache is back within its size bound. An
//! environment a running step uses is never chosen.

/// One built environment in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its key (the directory's name).
    pub key: String,
    /// When a step last started with it (milliseconds since the epoch).
    pub last_used: u64,
    /// Its size on disk.
    pub bytes: u64,
    /// A running step uses it.
    pub in_use: bool,
}

/// The cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Milliseconds an unused environment is kept.
    pub max_age: u64,
    /// Bytes all environments may take together.
    pub max_bytes: u64,
}

/// The keys to delete, oldest first.
///
/// # Guarantees
/// No entry in use is named; an entry used within `max_age` is named only while the cache
/// exceeds `max_bytes`, least recently used first (in-use entries count toward the total, so
/// the cache may stay above its bound while they run).
pub fn to_evict(entries: &[Entry], now: u64, bounds: Bounds) -> Vec<String> {
    let mut idle: Vec<&Entry> = entries.iter().filter(|e| !e.in_use).collect();
    idle.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut out = Vec::new();
    for e in idle {
        let expired = now.saturating_sub(e.last_used) > bounds.max_age;
        if expired || total > bounds.max_bytes {
            total -= e.bytes;
            out.push(e.key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400_000;

    fn entry(key: &str, last_used: u64, bytes: u64, in_use: bool) -> Entry {
        Entry {
            key: key.into(),
            last_used,
            bytes,
            in_use,
        }
    }

    #[test]
    fn old_environments_go_then_the_least_recently_used_until_the_cache_fits() {
        let now = 100 * DAY;
        let bounds = Bounds {
            max_age: 14 * DAY,
            max_bytes: 10,
        };
        let entries = [
            entry("ancient", now - 30 * DAY, 1, false),
            entry("old-but-running", now - 40 * DAY, 1, true),
            entry("lru", now - 3 * DAY, 4, false),
            entry("recent", now - DAY, 4, false),
            entry("newest", now, 4, false),
        ];
        // 14 bytes: "ancient" goes for its age, "lru" for the size; 9 bytes stay.
        assert_eq!(to_evict(&entries, now, bounds), vec!["ancient", "lru"]);
    }

    #[test]
    fn a_cache_within_its_bounds_keeps_everything() {
        let bounds = Bounds {
            max_age: DAY,
            max_bytes: 100,
        };
        let entries = [entry("a", 10, 50, false), entry("b", 20, 50, false)];
        assert!(to_evict(&entries, 30, bounds).is_empty());
    }

    proptest! {
        #[test]
        fn nothing_in_use_goes_and_what_stays_fits_unless_running_steps_need_it(
            raw in proptest::collection::vec((0u64..100, 0u64..50, any::<bool>()), 0..20),
            max_age in 0u64..100,
            max_bytes in 0u64..500,
        ) {
            let entries: Vec<Entry> = raw
                .iter()
                .enumerate()
                .map(|(i, (age, bytes, in_use))| entry(&format!("e{i}"), 100 - age, *bytes, *in_use))
                .collect();
            let bounds = Bounds { max_age, max_bytes };
            let gone = to_evict(&entries, 100, bounds);
            let kept: Vec<&Entry> = entries.iter().filter(|e| !gone.contains(&e.key)).collect();
            for e in &entries {
                if gone.contains(&e.key) {
                    prop_assert!(!e.in_use);
                }
            }
            for e in &kept {
                prop_assert!(e.in_use || 100 - e.last_used <= max_age, "{e:?} outlived its age");
            }
            let total: u64 = kept.iter().map(|e| e.bytes).sum();
            let in_use: u64 = entries.iter().filter(|e| e.in_use).map(|e| e.bytes).sum();
            prop_assert!(total <= max_bytes.max(in_use), "{total} bytes kept");
            // Nothing more than needed: every entry that went for size was needed to fit.
            let expired = |e: &Entry| 100 - e.last_used > max_age;
            let mut after = total;
            for key in gone.iter().rev() {
                let e = entries.iter().find(|e| &e.key == key).unwrap();
                if !expired(e) {
                    prop_assert!(after + e.bytes > max_bytes, "{key} went, yet the cache fit without it");
                    after += e.bytes;
                }
            }
        }
    }
}
