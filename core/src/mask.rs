//! Masking secret values in a step's output before it is written anywhere (the log, the live
//! tail, a failure message), also when a value is split across two writes.

/// What a secret value is replaced with.
pub const MASK: &[u8] = b"***";
/// Values shorter than this are not masked: masking `a` would destroy the log and protect
/// nothing.
pub const MIN_SECRET_LEN: usize = 3;

/// Masks the secrets of one output stream.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker {
            secrets,
            held: Vec::new(),
        }
    }

    /// Scans `bytes` from the start; `partial` says whether more bytes may follow. Masks every
    /// secret found and stops at the first position where a secret might begin but the bytes
    /// end before it can be told: the answer and where the undecided bytes begin.
    ///
    /// The same secret is chosen at each position as in a one-shot scan (longest first), so a
    /// stream masks exactly as the whole text would be masked.
    fn scan(&self, bytes: &[u8], partial: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'outer: while i < bytes.len() {
            let rest = &bytes[i..];
            for s in &self.secrets {
                if rest.starts_with(s) {
                    out.extend_from_slice(MASK);
                    i += s.len();
                    continue 'outer;
                }
                if partial && s.starts_with(rest) {
                    // `rest` is a proper prefix of `s`: the next bytes decide.
                    return (out, i);
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        (out, i)
    }

    fn replace(&self, bytes: &[u8]) -> Vec<u8> {
        self.scan(bytes, false).0
    }

    /// Feeds output; returns what may be written. Only bytes that may still be the start of a
    /// secret are held back until the next call: everything else is released at once, so a
    /// masked stream is as live as an unmasked one.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return bytes.to_vec();
        }
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(bytes);
        let (out, decided) = self.scan(&all, true);
        all.drain(..decided);
        self.held = all;
        out
    }

    /// How many bytes are held back (each a possible start of a secret).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// What is still held back, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.replace(&held)
    }

    /// `text` with every secret masked.
    pub fn mask(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.replace(text.as_bytes())).into_owned()
    }
}

/// Masks a step's output streams and the log they are interleaved into: each stream on its own
/// (a secret split across two writes of one stream) and the log as a whole (where the end of one
/// stream's write meets the start of the other's, a secret must not appear either).
#[derive(Debug, Clone)]
pub struct OutputMasker {
    streams: Vec<Masker>,
    log: Masker,
}

/// What one write releases: for its own stream (the live tail) and for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Released {
    pub stream: Vec<u8>,
    pub log: Vec<u8>,
}

impl OutputMasker {
    pub fn new<I, S>(secrets: I, streams: usize) -> OutputMasker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let one = Masker::new(secrets);
        OutputMasker {
            streams: vec![one.clone(); streams],
            log: one,
        }
    }

    /// Feeds a write of `stream`.
    ///
    /// # Panics
    /// When `stream` is not below the number of streams given to `new`.
    pub fn push(&mut self, stream: usize, bytes: &[u8]) -> Released {
        let out = self.streams[stream].push(bytes);
        Released {
            log: self.log.push(&out),
            stream: out,
        }
    }

    /// The streams have ended: what each still held (masked), and the log's last bytes.
    pub fn finish(&mut self) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut log = Vec::new();
        let rests: Vec<Vec<u8>> = self
            .streams
            .iter_mut()
            .map(|m| {
                let rest = m.finish();
                log.extend(self.log.push(&rest));
                rest
            })
            .collect();
        log.extend(self.log.finish());
        (rests, log)
    }

    /// Bytes held back by the streams and the log (each a possible start of a secret).
    pub fn held(&self) -> usize {
        self.streams.iter().map(Masker::held).sum::<usize>() + self.log.held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secrets_are_masked_even_across_writes() {
        let mut m = Masker::new(["hunter22", "s3cr3t"]);
        let mut out = m.push(b"password=hun");
        out.extend(m.push(b"ter22 and s3c"));
        out.extend(m.push(b"r3t!"));
        out.extend(m.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "password=*** and ***!");
        assert_eq!(m.mask("x hunter22 y"), "x *** y");
    }

    #[test]
    fn short_values_are_left_alone() {
        let mut m = Masker::new(["ab"]);
        assert_eq!(m.push(b"abc"), b"abc");
    }

    #[test]
    fn output_that_cannot_begin_a_secret_is_released_at_once() {
        let mut m = Masker::new(["s3cr3t-value"]);
        assert_eq!(m.push(b"phase one \n"), b"phase one \n");
        assert_eq!(m.push(b"phase two s3"), b"phase two ");
        assert_eq!(m.held(), 2, "only a possible start of the secret waits");
        assert_eq!(m.push(b"x"), b"s3x");
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn a_longer_secret_is_awaited_before_a_shorter_one_is_masked() {
        let mut m = Masker::new(["abc", "abcdef"]);
        assert_eq!(m.push(b"abc"), b"");
        assert_eq!(m.push(b"def!"), b"***!");
        assert_eq!(m.push(b"abcx"), b"***x");
    }

    #[test]
    fn a_secret_made_where_two_streams_meet_in_the_log_is_masked() {
        // "ab" leaves stdout's masker (stdout's buffer "abz" cannot be "abcd"), "cd" comes on
        // stderr: the log would read "abcd".
        let mut m = OutputMasker::new(["abcd", "zzz"], 2);
        let out = m.push(0, b"abz");
        assert_eq!(out.stream, b"ab");
        let err = m.push(1, b"cd");
        assert_eq!(err.stream, b"cd");
        let (rests, last) = m.finish();
        let log = [out.log, err.log, last].concat();
        assert_eq!(String::from_utf8(log).unwrap(), "***z");
        assert_eq!(rests, vec![b"z".to_vec(), vec![]]);
    }

    /// Output bytes (letters, space, newline) and secrets drawn from a small alphabet, so that
    /// secrets and their prefixes occur often.
    fn secrets() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[abc]{3,7}", 1..4)
    }

    proptest! {
        #[test]
        fn streams_mask_like_the_whole_text_and_hold_only_possible_secret_starts(
            secrets in secrets(),
            writes in proptest::collection::vec((0usize..2, "[abc \n]{0,12}"), 0..12),
        ) {
            let mut m = OutputMasker::new(&secrets, 2);
            let one = Masker::new(&secrets);
            let mut per_stream = [Vec::new(), Vec::new()];
            let mut raw = [Vec::new(), Vec::new()];
            let mut log = Vec::new();
            for (stream, text) in &writes {
                let out = m.push(*stream, text.as_bytes());
                raw[*stream].extend_from_slice(text.as_bytes());
                per_stream[*stream].extend(out.stream);
                log.extend(out.log);
                // Never delayed: what a stream holds could still become a secret.
                let held = &raw[*stream][raw[*stream].len() - m.streams[*stream].held()..];
                prop_assert!(
                    held.is_empty() || secrets.iter().any(|s| s.len() > held.len() && s.as_bytes().starts_with(held)),
                    "held {:?}", String::from_utf8_lossy(held)
                );
            }
            let (rests, last) = m.finish();
            for (i, rest) in rests.into_iter().enumerate() {
                per_stream[i].extend(rest);
                // Each stream is masked exactly as its whole text would be.
                prop_assert_eq!(
                    String::from_utf8(per_stream[i].clone()).unwrap(),
                    one.mask(&String::from_utf8(raw[i].clone()).unwrap())
                );
            }
            log.extend(last);
            let log = String::from_utf8(log).unwrap();
            for s in &secrets {
                if s.len() >= MIN_SECRET_LEN {
                    prop_assert!(!log.contains(s.as_str()), "{s} in {log:?}");
                }
            }
        }

        #[test]
        fn no_secret_survives_any_split(
            secret in "[a-z]{3,12}",
            before in "[a-z ]{0,30}",
            after in "[a-z ]{0,30}",
            cuts in proptest::collection::vec(0usize..80, 0..6),
        ) {
            let text = format!("{before}{secret}{after}");
            let mut m = Masker::new([secret.clone()]);
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort();
            let mut out = Vec::new();
            let mut last = 0;
            for p in points {
                out.extend(m.push(&bytes[last..p]));
                last = p;
            }
            out.extend(m.push(&bytes[last..]));
            out.extend(m.finish());
            let out = String::from_utf8(out).unwrap();
            prop_assert!(!out.contains(&secret), "{out}");
            prop_assert_eq!(out, m.mask(&text));
        }
    }
}
