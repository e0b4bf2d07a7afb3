//! Which emails this importer run has already read, as a Bloom filter (fastbloom): memory
//! stays bounded (about 10 bits per row, capped) whatever the file size. A "maybe" only costs
//! a look-up in `customers`, which stays the source of truth; a "no" is certain.
//!
//! Each email is hashed once (foldhash, seeded at random per run), on the reader thread (`SeenEmails::hash`); the filter and the
//! check of a batch against the one before it (`crate::batch::PreviousEmails`) both work
//! from that hash.

use fastbloom::BloomFilter;
use foldhash::fast::RandomState;

/// Rows the filter is sized for at most (about 9.6 MB); beyond that its false-positive rate
/// rises, which costs extra look-ups, never wrong results.
const MAX_ITEMS: u64 = 8_000_000;
const FALSE_POSITIVE_RATE: f64 = 0.01;

pub struct SeenEmails {
    bloom: BloomFilter<RandomState>,
}

impl SeenEmails {
    pub fn new(expected_rows: u64) -> SeenEmails {
        let items = expected_rows.clamp(1_000, MAX_ITEMS) as usize;
        SeenEmails {
            bloom: BloomFilter::with_false_pos(FALSE_POSITIVE_RATE)
                .hasher(RandomState::default())
                .expected_items(items),
        }
    }

    /// The hash every other method takes.
    pub fn hash(&self, email: &str) -> u64 {
        self.bloom.source_hash(email)
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        self.bloom.contains_hash(hash)
    }

    pub fn insert(&mut self, hash: u64) {
        self.bloom.insert_hash(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut seen = SeenEmails::new(10_000);
        for i in 0..10_000 {
            seen.insert(seen.hash(&format!("user{i}@example.com")));
        }
        assert!((0..10_000).all(|i| seen.may_contain(seen.hash(&format!("user{i}@example.com")))));
        let fp = (0..10_000)
            .filter(|i| seen.may_contain(seen.hash(&format!("other{i}@example.com"))))
            .count();
        assert!(fp < 300, "false positives: {fp}");
    }
}
