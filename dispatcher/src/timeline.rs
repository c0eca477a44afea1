//! A step's timeline: how long each of its phases took.

/// Where a step's time went, phase by phase (milliseconds since the previous mark), for a log
/// line: `make bench` reads the agent's and the step runner's to explain a step's time.
pub struct Timeline {
    /// When the timeline began (for the agent: when the lease came), in milliseconds since the
    /// epoch, to line up with the edge's times.
    pub epoch_ms: u64,
    last: std::time::Instant,
    phases: Vec<(&'static str, f64)>,
}

impl Timeline {
    pub fn new(arrived: std::time::Instant) -> Timeline {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(arrived.elapsed());
        Timeline {
            epoch_ms: since.as_millis() as u64,
            last: arrived,
            phases: Vec::new(),
        }
    }

    pub fn mark(&mut self, phase: &'static str) {
        self.mark_at(phase, std::time::Instant::now());
    }

    /// A phase that ended at `at` (one that overlapped the next, say); never before the last.
    pub fn mark_at(&mut self, phase: &'static str, at: std::time::Instant) {
        let at = at.max(self.last);
        self.phases
            .push((phase, (at - self.last).as_secs_f64() * 1000.0));
        self.last = at;
    }
}

impl std::fmt::Display for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, ms)) in self.phases.iter().enumerate() {
            write!(f, "{}{phase}={ms:.1}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Timeline;

    #[test]
    fn phases_are_written_as_the_bench_reads_them() {
        let start = std::time::Instant::now();
        let mut t = Timeline::new(start);
        t.mark("confirm");
        t.mark("report");
        let text = t.to_string();
        let names: Vec<&str> = text
            .split(' ')
            .map(|p| p.split_once('=').expect("name=ms").0)
            .collect();
        assert_eq!(names, ["confirm", "report"]);
        assert!(text
            .split(' ')
            .all(|p| p.split_once('=').unwrap().1.parse::<f64>().is_ok()));
    }

    #[test]
    fn a_phase_that_overlapped_the_next_ends_where_it_ended_never_before_the_last() {
        let start = std::time::Instant::now();
        let mut t = Timeline::new(start);
        let confirmed = start + std::time::Duration::from_millis(5);
        t.mark_at("confirm", confirmed);
        // The create, made alongside, ended first: the remainder after the confirm is none.
        t.mark_at("mlflow_run", start + std::time::Duration::from_millis(3));
        assert_eq!(t.phases[0], ("confirm", 5.0));
        assert_eq!(t.phases[1], ("mlflow_run", 0.0));
    }
}
