//! Kubernetes quantities as people write them: CPUs (`500m`, `2`) and bytes (`512Mi`, `1G`).

/// A positive, finite number in plain decimal notation (no exponents, signs or `NaN`).
fn plain_number(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.chars().filter(|&c| c == '.').count() <= 1;
    let v: f64 = s.parse().ok().filter(|_| ok)?;
    (v > 0.0 && v.is_finite()).then_some(v)
}

/// CPUs of a Kubernetes CPU quantity (`500m`, `2`, `0.5`).
pub(super) fn cpu_cores(s: &str) -> Option<f64> {
    match s.strip_suffix('m') {
        Some(milli) => plain_number(milli).map(|v| v / 1000.0),
        None => plain_number(s),
    }
}

/// Bytes of a Kubernetes memory quantity (`512Mi`, `1G`, `1000`).
pub(super) fn memory_bytes(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, unit) = SUFFIXES
        .iter()
        .find_map(|(suf, unit)| s.strip_suffix(suf).map(|n| (n, *unit)))
        .unwrap_or((s, 1.0));
    plain_number(number).map(|v| v * unit)
}
