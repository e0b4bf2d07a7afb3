//! The batch: what the reader (`crate::source`) hands the loader (`crate::load`) — the rows
//! and errors of a run of records and the checkpoint after them — and its preparation, the
//! work that needs no database, done on the reader thread so that it overlaps the previous
//! batch's transaction (`Batch::prepare`).

use crate::{
    copy,
    dedupe::SeenEmails,
    validate::{Customer, RowError},
};
use bulk_import_core::ImportMode;
use foldhash::{HashMap, HashMapExt};
use std::collections::hash_map::Entry;
use uuid::Uuid;

/// What the reader hands over: the rows and errors of a run of records, and the checkpoint
/// (offset and line of the next record) once they are applied.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Customer>,
    pub errors: Vec<RowError>,
    pub end_offset: u64,
    pub end_line: u64,
    /// gzip: the checkpoint in the decompressed stream.
    pub end_stream_offset: Option<u64>,
    /// Records read (set by `prepare`): the batch's share of `processed_rows`.
    records: usize,
    /// upsert: valid rows before repeats were collapsed.
    valid_rows: usize,
    /// insert_only: `rows` as tuples of COPY's binary format for `customers` (without its
    /// header and trailer); `copy_ends[i]` is where row i's tuple ends.
    pub(crate) copy_data: Vec<u8>,
    copy_ends: Vec<usize>,
    /// insert_only: later occurrences of an email within the batch, with the line of the
    /// first; classified with it once the table has been looked at.
    repeats: Vec<(Customer, i64)>,
    /// insert_only: for each of `repeats`, the index of its first occurrence in `rows`.
    pub(crate) repeat_of: Vec<u32>,
    /// Rows whose email's hash is also one of the batch read before it (set by `prepare`):
    /// `(index here, index there)`. If any, the batch cannot simply be applied beside that
    /// one (`Loader::can_follow`); a pair whose emails differ (a hash collision) is no
    /// sharing at all (the pipeline's task compares them).
    pub(crate) shared: Vec<(u32, u32)>,
    /// insert_only: indices into `rows` of the emails that an earlier batch of this run may
    /// have had (the Bloom filter's "maybe"): only those are looked up in the table.
    pub(crate) maybe_seen: Vec<usize>,
}

/// What the reader knows of the emails it has read, for `prepare`: hashes of the batch read
/// last, to tell whether a batch shares an email with the one before it (a hash collision
/// only makes a batch look as if it shared one, which costs it its overlap, never
/// correctness), and a Bloom filter of every email read so far (insert_only).
pub struct PreviousEmails {
    seen: SeenEmails,
    /// The hash of each email of the batch read last, with its row's index there.
    hashes: HashMap<u64, u32>,
}

impl PreviousEmails {
    /// Sized for `expected_rows` rows (insert_only; upsert needs no Bloom filter).
    pub fn new(mode: ImportMode, expected_rows: u64) -> PreviousEmails {
        let rows = match mode {
            ImportMode::InsertOnly => expected_rows,
            ImportMode::Upsert => 0,
        };
        PreviousEmails {
            seen: SeenEmails::new(rows),
            hashes: HashMap::new(),
        }
    }
}

impl Batch {
    /// Records in the batch so far (before `prepare`), or read (after).
    pub fn records(&self) -> usize {
        self.records.max(self.rows.len() + self.errors.len())
    }

    /// The work that needs no database, done on the reader thread so that it overlaps the
    /// previous batch's transaction. insert_only: later occurrences of an email within the
    /// batch are set aside (they are errors of the same kind as their first occurrence), and
    /// the rest is encoded for COPY. upsert: repeats are collapsed to their last occurrence
    /// (the one that wins), sorted by email so that concurrent upserts lock rows in one
    /// order. Both: whether the batch shares an email with the one before it (`previous`,
    /// which then holds this batch's emails), and (insert_only) which emails an earlier
    /// batch may have had.
    pub fn prepare(
        &mut self,
        mode: ImportMode,
        (job_id, org_id): (Uuid, i32),
        previous: &mut PreviousEmails,
    ) {
        self.records = self.rows.len() + self.errors.len();
        match mode {
            ImportMode::InsertOnly => {
                self.set_repeats_aside();
                self.encode_for_copy((job_id, org_id));
            }
            ImportMode::Upsert => self.collapse_repeats(),
        }
        self.note_emails(mode, previous);
    }

    /// insert_only: moves every later occurrence of an email to `repeats`, with the line of
    /// its first occurrence and (`repeat_of`) where that one is in `rows`.
    fn set_repeats_aside(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        // Where the first occurrence goes in `self.rows`, for each later one.
        let firsts: Vec<Option<u32>> = {
            let mut first: HashMap<&str, u32> = HashMap::with_capacity(rows.len());
            rows.iter()
                .map(|c| {
                    let next = first.len() as u32;
                    match first.entry(c.email()) {
                        Entry::Occupied(e) => Some(*e.get()),
                        Entry::Vacant(e) => {
                            e.insert(next);
                            None
                        }
                    }
                })
                .collect()
        };
        for (c, first) in rows.into_iter().zip(firsts) {
            match first {
                Some(first) => {
                    let line = self.rows[first as usize].line;
                    self.repeats.push((c, line));
                    self.repeat_of.push(first);
                }
                None => self.rows.push(c),
            }
        }
    }

    /// insert_only: every row as a tuple of COPY's binary format, ready to send.
    fn encode_for_copy(&mut self, (job_id, org_id): (Uuid, i32)) {
        self.copy_data = Vec::with_capacity(96 * 1024);
        self.copy_ends = Vec::with_capacity(self.rows.len());
        for c in &self.rows {
            copy::push_customer(&mut self.copy_data, org_id, c, &job_id);
            self.copy_ends.push(self.copy_data.len());
        }
    }

    /// upsert: by email, the last occurrence (highest line) first; then the others go.
    fn collapse_repeats(&mut self) {
        self.valid_rows = self.rows.len();
        self.rows
            .sort_unstable_by(|a, b| a.email().cmp(b.email()).then(b.line.cmp(&a.line)));
        self.rows
            .dedup_by(|later, kept| later.email() == kept.email());
    }

    /// Hashes every email of the batch once: which the batch before also has (`shared`),
    /// and (insert_only) which an earlier batch may have had (`maybe_seen`).
    fn note_emails(&mut self, mode: ImportMode, previous: &mut PreviousEmails) {
        // `rows` holds every email of the batch once (repeats were set aside or collapsed).
        let seen = &mut previous.seen;
        let hashes: Vec<u64> = self.rows.iter().map(|c| seen.hash(c.email())).collect();
        if mode == ImportMode::InsertOnly {
            // Emails of every batch read before this one. Those of the batch right before
            // may not be committed when this one is applied: they are set aside then
            // (`Staged::classify`), never looked up too early.
            self.maybe_seen = (0..hashes.len())
                .filter(|&i| seen.may_contain(hashes[i]))
                .collect();
            for &h in &hashes {
                seen.insert(h);
            }
        }
        let mut mine: HashMap<u64, u32> = HashMap::with_capacity(hashes.len());
        for (i, h) in hashes.into_iter().enumerate() {
            if let Some(&j) = previous.hashes.get(&h) {
                self.shared.push((i as u32, j));
            }
            mine.insert(h, i as u32);
        }
        previous.hashes = mine;
    }

    pub fn shares_with_previous(&self) -> bool {
        !self.shared.is_empty()
    }

    /// insert_only: later occurrences within the batch, with the line of the first.
    pub fn repeats(&self) -> &[(Customer, i64)] {
        &self.repeats
    }

    /// upsert: valid rows before repeats were collapsed.
    pub fn valid_rows(&self) -> usize {
        self.valid_rows
    }

    /// insert_only: row i as a binary COPY tuple.
    pub(crate) fn copy_row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.copy_ends[i - 1] };
        &self.copy_data[start..self.copy_ends[i]]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn batch(emails: &[&str]) -> Batch {
        let rows = emails
            .iter()
            .enumerate()
            .map(|(i, e)| Customer::new(i as i64 + 2, e.to_string(), None, [""; 4]))
            .collect();
        Batch {
            rows,
            ..Batch::default()
        }
    }

    /// `batch(emails)`, prepared after the batches `previous` has seen.
    fn prepared(mode: ImportMode, emails: &[&str], previous: &mut PreviousEmails) -> Batch {
        let mut b = batch(emails);
        b.prepare(mode, (Uuid::nil(), 1), previous);
        b
    }

    #[test]
    fn a_batch_knows_whether_it_shares_an_email_with_the_one_before() {
        for mode in [ImportMode::InsertOnly, ImportMode::Upsert] {
            let mut previous = PreviousEmails::new(mode, 100);
            let sequence: [(&[&str], bool); 4] = [
                (&["a@x", "b@x", "a@x"], false),
                (&["c@x", "d@x"], false),
                (&["e@x", "d@x", "e@x"], true),
                // Only the batch right before counts.
                (&["c@x", "f@x"], false),
            ];
            for (emails, shares) in sequence {
                let b = prepared(mode, emails, &mut previous);
                assert_eq!(b.shares_with_previous(), shares, "{mode:?} {emails:?}");
            }
        }
    }

    #[test]
    fn a_batch_knows_which_of_its_rows_the_one_before_has_and_where() {
        let mut previous = PreviousEmails::new(ImportMode::InsertOnly, 100);
        let first = prepared(
            ImportMode::InsertOnly,
            &["a@x", "b@x", "c@x"],
            &mut previous,
        );
        assert!(first.shared.is_empty());
        // d@x twice: the repeat points at its first occurrence's index among the rows.
        let second = prepared(
            ImportMode::InsertOnly,
            &["d@x", "c@x", "d@x", "a@x"],
            &mut previous,
        );
        let emails: Vec<&str> = second.rows.iter().map(|c| c.email()).collect();
        assert_eq!(emails, ["d@x", "c@x", "a@x"]);
        assert_eq!(second.repeat_of, [0]);
        assert_eq!(second.repeats()[0].1, 2, "the line of the first occurrence");
        // (index here, index there): c@x is row 1 here and row 2 there, a@x row 2 and row 0.
        assert_eq!(second.shared, [(1, 2), (2, 0)]);
    }

    #[test]
    fn only_emails_of_earlier_batches_are_looked_up() {
        let mut previous = PreviousEmails::new(ImportMode::InsertOnly, 100);
        let first = prepared(
            ImportMode::InsertOnly,
            &["a@x", "b@x", "a@x"],
            &mut previous,
        );
        // Nothing read before; the repeat of a@x is set aside within the batch.
        assert!(first.maybe_seen.is_empty());
        assert_eq!(first.repeats().len(), 1);
        let second = prepared(
            ImportMode::InsertOnly,
            &["c@x", "b@x", "d@x", "a@x"],
            &mut previous,
        );
        // A Bloom filter may say "maybe" for c@x or d@x too, never "no" for b@x or a@x.
        assert!(second.maybe_seen.contains(&1) && second.maybe_seen.contains(&3));
        let mut upsert = PreviousEmails::new(ImportMode::Upsert, 100);
        prepared(ImportMode::Upsert, &["a@x"], &mut upsert);
        let b = prepared(ImportMode::Upsert, &["a@x"], &mut upsert);
        assert!(b.maybe_seen.is_empty(), "upsert looks nothing up");
    }
}
