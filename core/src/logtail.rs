//! The tail of a step's output, as a person wants to see it live: the last lines, each capped in
//! bytes, with a progress bar's latest state (a `\r` returns to the start of the line, as in a
//! terminal), and bytes that are not UTF-8 shown as `�`. Whatever a step prints, the tail stays
//! small, so heartbeats stay small.

use std::collections::VecDeque;

/// Lines of a running step's log shown live.
pub const TAIL_LINES: usize = 20;
/// Longest line kept in a tail; the rest of it is counted, not kept.
pub const MAX_LINE_BYTES: usize = 1024;

/// One output stream cut into lines.
#[derive(Debug, Clone)]
pub struct Lines {
    current: Vec<u8>,
    /// Longest line kept; the rest of it is counted.
    max: usize,
    /// Bytes of the current line beyond `max`.
    cut: usize,
    /// A `\r` came: the next byte starts the line over.
    rewind: bool,
}

impl Default for Lines {
    fn default() -> Lines {
        Lines::with_max(MAX_LINE_BYTES)
    }
}

impl Lines {
    /// Lines of at most `max` bytes each.
    pub fn with_max(max: usize) -> Lines {
        Lines {
            current: Vec::new(),
            max,
            cut: 0,
            rewind: false,
        }
    }

    /// Feeds bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => {
                    done.push(self.render());
                    self.current.clear();
                    self.cut = 0;
                    self.rewind = false;
                }
                b'\r' => self.rewind = true,
                _ => {
                    if self.rewind {
                        self.current.clear();
                        self.cut = 0;
                        self.rewind = false;
                    }
                    if self.current.len() < self.max {
                        self.current.push(b);
                    } else {
                        self.cut += 1;
                    }
                }
            }
        }
        done
    }

    /// The line being written (a progress bar's latest state), if any.
    pub fn partial(&self) -> Option<String> {
        (!self.current.is_empty()).then(|| self.render())
    }

    fn render(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.current).into_owned();
        if self.cut > 0 {
            s.push_str(&format!(" … [{} more bytes]", self.cut));
        }
        s
    }
}

/// The last [`TAIL_LINES`] lines of one or more streams.
#[derive(Debug, Clone)]
pub struct Tail {
    lines: VecDeque<String>,
    streams: Vec<Lines>,
}

impl Tail {
    /// A tail of `streams` output streams (stdout and stderr: 2).
    pub fn new(streams: usize) -> Tail {
        Tail {
            lines: VecDeque::with_capacity(TAIL_LINES),
            streams: vec![Lines::default(); streams],
        }
    }

    /// Feeds bytes that stream `stream` wrote.
    pub fn push(&mut self, stream: usize, bytes: &[u8]) {
        for line in self.streams[stream].push(bytes) {
            if self.lines.len() == TAIL_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back(line);
        }
    }

    /// The tail as text: the last complete lines, then each stream's unfinished line.
    pub fn text(&self) -> String {
        let partials: Vec<String> = self.streams.iter().filter_map(Lines::partial).collect();
        let skip = (self.lines.len() + partials.len()).saturating_sub(TAIL_LINES);
        self.lines
            .iter()
            .cloned()
            .chain(partials)
            .skip(skip)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The tail of a finished piece of output (e.g. a pod's log).
    pub fn of(bytes: &[u8]) -> String {
        let mut t = Tail::new(1);
        t.push(0, bytes);
        t.text()
    }
}

/// `text` cut to at most `max` bytes, keeping its end (the latest output) on a character
/// boundary.
pub fn keep_end(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `text` cut to at most `max` bytes, keeping its start, with a note of what was cut.
pub fn keep_start(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … [{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_progress_bar_shows_its_latest_state_only() {
        let mut t = Tail::new(2);
        t.push(1, b"loading\n");
        for i in 0..=10_000 {
            t.push(
                0,
                format!("\r{:>3}%|{}", i / 100, "#".repeat(i / 500)).as_bytes(),
            );
        }
        assert_eq!(t.text(), format!("loading\n100%|{}", "#".repeat(20)));
        t.push(0, b"\n");
        t.push(1, b"done\n");
        assert_eq!(t.text().lines().last(), Some("done"));
    }

    #[test]
    fn megabyte_lines_and_bad_bytes_are_cut_and_shown() {
        let mut t = Tail::new(1);
        t.push(0, &vec![b'x'; 5 << 20]);
        t.push(0, b"\n\xff\xfeok\r\n");
        let text = t.text();
        assert!(text.len() < 2 * MAX_LINE_BYTES, "{}", text.len());
        assert!(text.contains(&format!("[{} more bytes]", (5 << 20) - MAX_LINE_BYTES)));
        assert!(text.ends_with("\u{fffd}\u{fffd}ok"), "{text}");
    }

    #[test]
    fn streams_keep_their_own_unfinished_lines() {
        let mut t = Tail::new(2);
        t.push(0, b"out: hal");
        t.push(1, b"err: whole\n");
        t.push(0, b"f\n");
        assert_eq!(t.text(), "err: whole\nout: half");
    }

    proptest! {
        #[test]
        fn the_tail_stays_small_whatever_is_printed(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..40)) {
            let mut t = Tail::new(2);
            for (i, c) in chunks.iter().enumerate() {
                t.push(i % 2, c);
            }
            let text = t.text();
            prop_assert!(text.lines().count() <= TAIL_LINES);
            prop_assert!(text.len() <= TAIL_LINES * (MAX_LINE_BYTES * 3 + 40));
        }

        #[test]
        fn cuts_keep_character_boundaries(s in "\\PC{0,200}", max in 0usize..300) {
            prop_assert!(keep_end(&s, max).len() <= max);
            prop_assert!(s.ends_with(keep_end(&s, max)));
            let k = keep_start(&s, max);
            if s.len() <= max {
                prop_assert_eq!(k, s);
            } else {
                let kept = k.split(" … [").next().unwrap();
                prop_assert!(kept.len() <= max && s.starts_with(kept));
                let note = format!("[{} more bytes]", s.len() - kept.len());
                prop_assert!(k.ends_with(&note));
            }
        }
    }
}
