//! Memory quantities as Kubernetes writes them (`256Mi`, `1G`, `1048576`): parsed to bytes
//! and written back in the largest binary unit, for the OOM retry's doubled limit.

const UNITS: [(&str, u128); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// A memory quantity (`256Mi`, `1G`, `1048576`) in bytes; no fractions or exponents.
pub fn bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let (number, factor) = UNITS
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1));
    number.parse::<u128>().ok()?.checked_mul(factor)
}

/// Bytes as a quantity, in the largest binary unit that divides them.
pub fn format_bytes(b: u128) -> String {
    UNITS[..6]
        .iter()
        .rev()
        .find(|(_, f)| b >= *f && b.is_multiple_of(*f))
        .map(|(suffix, f)| format!("{}{suffix}", b / f))
        .unwrap_or_else(|| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_and_format() {
        assert_eq!(bytes("256Mi"), Some(256 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1048576"), Some(1 << 20));
        assert_eq!(bytes("1.5Gi"), None);
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1_000_000_000), "1000000000");
    }
}
