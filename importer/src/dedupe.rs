//! Which emails this importer run has already loaded, as a Bloom filter: memory stays bounded
//! (about 10 bits per row, capped) whatever the file size. A "maybe" only costs a look-up in
//! `customers`, which stays the source of truth; a "no" is certain.

use bloomfilter::Bloom;

/// Rows the filter is sized for at most (about 9.6 MB); beyond that its false-positive rate
/// rises, which costs extra look-ups, never wrong results.
const MAX_ITEMS: u64 = 8_000_000;
const FALSE_POSITIVE_RATE: f64 = 0.01;

pub struct SeenEmails {
    bloom: Bloom<str>,
}

impl SeenEmails {
    pub fn new(expected_rows: u64) -> SeenEmails {
        let items = expected_rows.clamp(1_000, MAX_ITEMS) as usize;
        let bloom =
            Bloom::new_for_fp_rate(items, FALSE_POSITIVE_RATE).expect("valid bloom parameters");
        SeenEmails { bloom }
    }

    pub fn may_contain(&self, email: &str) -> bool {
        self.bloom.check(email)
    }

    pub fn insert(&mut self, email: &str) {
        self.bloom.set(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut seen = SeenEmails::new(10_000);
        for i in 0..10_000 {
            seen.insert(&format!("user{i}@example.com"));
        }
        assert!((0..10_000).all(|i| seen.may_contain(&format!("user{i}@example.com"))));
        let fp = (0..10_000)
            .filter(|i| seen.may_contain(&format!("other{i}@example.com")))
            .count();
        assert!(fp < 300, "false positives: {fp}");
    }
}
