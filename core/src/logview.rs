//! A step's whole log as the run view shows it: the end of `logs/step.log` (one ranged read,
//! so a gigabyte log does not reach the browser), cut into lines as a terminal shows them
//! (a progress bar's `\r` redraws keep only their last state), and searched line by line.

use crate::logtail::Lines;

/// How much of a log's end the run view reads at once; the whole log is a download.
pub const WINDOW_BYTES: u64 = 4 << 20;
/// Longest line shown; longer ones say how much was cut (the download has all of it).
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// Most matching lines listed for a search.
pub const MAX_MATCHES: usize = 2_000;

/// The `Range` header that asks for the window at a log's end.
pub fn range_header() -> String {
    format!("bytes=-{WINDOW_BYTES}")
}

/// What a ranged read of a log returned, as lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWindow {
    pub lines: Vec<String>,
    /// The log's size in bytes.
    pub total_bytes: u64,
    /// Bytes before the window (not shown).
    pub skipped_bytes: u64,
}

/// The lines of `bytes`, which start at byte `start` of a log of `total` bytes. A window that
/// starts mid-log drops its first, partial line.
pub fn window(bytes: &[u8], start: u64, total: u64) -> LogWindow {
    let mut body = bytes;
    let mut skipped = start;
    if start > 0 {
        let cut = body
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| i + 1);
        skipped += cut as u64;
        body = &body[cut..];
    }
    let mut lines = Lines::with_max(MAX_LINE_BYTES);
    let mut out = lines.push(body);
    out.extend(lines.partial());
    LogWindow {
        lines: out,
        total_bytes: total.max(start + bytes.len() as u64),
        skipped_bytes: skipped,
    }
}

/// The first byte and the total size in a `Content-Range` header (`bytes 10-99/1234`).
pub fn content_range(header: &str) -> Option<(u64, u64)> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok()?;
    let start = match range.trim() {
        "*" => total,
        r => r.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((start, total))
}

/// Indices of the lines that contain `query`, ignoring case; at most [`MAX_MATCHES`].
pub fn matching(lines: &[String], query: &str) -> Vec<usize> {
    let q = query.to_lowercase();
    if q.is_empty() {
        return Vec::new();
    }
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.to_lowercase().contains(&q))
        .map(|(i, _)| i)
        .take(MAX_MATCHES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_whole_log_keeps_every_line_and_only_a_progress_bars_last_state() {
        let mut log = b"epoch 1\n".to_vec();
        for i in 0..=100 {
            log.extend(format!("\r{i:>3}%").as_bytes());
        }
        log.extend(b"\nepoch 2\nunfinished");
        let w = window(&log, 0, log.len() as u64);
        assert_eq!(w.lines, ["epoch 1", "100%", "epoch 2", "unfinished"]);
        assert_eq!((w.skipped_bytes, w.total_bytes), (0, log.len() as u64));
    }

    #[test]
    fn a_window_from_mid_log_drops_its_partial_first_line_and_counts_it() {
        let w = window(b"ial line\nwhole\nlast", 1000, 1019);
        assert_eq!(w.lines, ["whole", "last"]);
        assert_eq!(w.skipped_bytes, 1009);
        assert_eq!(w.total_bytes, 1019);
    }

    #[test]
    fn megabyte_lines_are_cut_with_a_count() {
        let mut log = vec![b'x'; 3 << 20];
        log.extend(b"\nok\n");
        let w = window(&log, 0, log.len() as u64);
        assert_eq!(w.lines.len(), 2);
        assert!(w.lines[0].ends_with(&format!("[{} more bytes]", (3 << 20) - MAX_LINE_BYTES)));
        assert_eq!(w.lines[1], "ok");
    }

    #[test]
    fn content_ranges_are_read() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(content_range("bytes */5"), Some((5, 5)));
        assert_eq!(content_range("items 1-2/3"), None);
        assert_eq!(content_range("bytes 1-2/many"), None);
        assert_eq!(range_header(), "bytes=-4194304");
    }

    #[test]
    fn search_ignores_case_and_an_empty_query_finds_nothing() {
        let lines: Vec<String> = ["Loss 0.5", "accuracy", "LOSS 0.1"]
            .map(String::from)
            .into();
        assert_eq!(matching(&lines, "loss"), [0, 2]);
        assert!(matching(&lines, "").is_empty());
        let many: Vec<String> = (0..5000).map(|i| format!("line {i}")).collect();
        assert_eq!(matching(&many, "line").len(), MAX_MATCHES);
    }

    proptest! {
        #[test]
        fn any_bytes_become_bounded_lines(bytes in proptest::collection::vec(any::<u8>(), 0..5000), start in 0u64..10) {
            let w = window(&bytes, start, start + bytes.len() as u64);
            prop_assert!(w.lines.iter().all(|l| l.len() <= MAX_LINE_BYTES * 3 + 40));
            prop_assert!(w.skipped_bytes >= start && w.skipped_bytes <= w.total_bytes);
        }
    }
}
