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

    fn longest(&self) -> usize {
        self.secrets.first().map_or(0, Vec::len)
    }

    fn replace(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'outer: while i < bytes.len() {
            for s in &self.secrets {
                if bytes[i..].starts_with(s) {
                    out.extend_from_slice(MASK);
                    i += s.len();
                    continue 'outer;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    /// Feeds output; returns what may be written. The last bytes may be held back until the
    /// next call (they might be the start of a secret).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return bytes.to_vec();
        }
        let keep = self.longest() - 1;
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(bytes);
        // Only what cannot be the start of a secret that continues later is decided now.
        let decided = all.len().saturating_sub(keep);
        let mut out = Vec::new();
        let mut i = 0;
        while i < decided {
            match self.secrets.iter().find(|s| all[i..].starts_with(s)) {
                Some(s) => {
                    out.extend_from_slice(MASK);
                    i += s.len();
                }
                None => {
                    out.push(all[i]);
                    i += 1;
                }
            }
        }
        self.held = all[i.min(all.len())..].to_vec();
        out
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

    proptest! {
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
