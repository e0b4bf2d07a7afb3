//! The cap on error rows a job stores (`MAX_STORED_ERROR_ROWS`): the first bad rows in line
//! order are stored (errors.csv, rows.csv, `?format=json`), later ones only counted, so that a
//! file of bad rows cannot fill the database. After any batch the job has stored
//! `min(error_rows, cap)` rows: each batch stores as many of its own, in line order, as the
//! batches before it left room for — which a resumed import finds the same way.

use crate::validate::RowError;

/// What a batch knows of the error rows before it when it is staged.
#[derive(Debug, Clone, Copy)]
pub struct StoredErrors {
    /// `MAX_STORED_ERROR_ROWS`.
    pub cap: i64,
    /// Error rows counted by the batches committed before it.
    pub committed: i64,
    /// Records of the batch still in flight before it, if any: at most that many more
    /// errors (its own count is known only once it commits).
    pub in_flight: i64,
}

impl StoredErrors {
    /// No cap.
    pub fn unlimited() -> StoredErrors {
        StoredErrors {
            cap: i64::MAX,
            committed: 0,
            in_flight: 0,
        }
    }

    /// Whether `n` error rows fit under the cap whatever the batch in flight before adds:
    /// then they are written beside it, as when there is no cap.
    pub fn fit(&self, n: usize) -> bool {
        self.committed
            .saturating_add(self.in_flight)
            .saturating_add(n as i64)
            <= self.cap
    }

    /// How many error rows a batch may store after `before` were counted.
    pub fn room(&self, before: i64) -> usize {
        usize::try_from(self.cap.saturating_sub(before)).unwrap_or(0)
    }
}

/// The first `room` of `errors` in line order: all of them, as they come, when they fit.
pub fn first_by_line<'a>(
    errors: impl Iterator<Item = &'a RowError>,
    room: usize,
) -> Vec<&'a RowError> {
    let mut all: Vec<&RowError> = errors.collect();
    if all.len() > room {
        all.sort_unstable_by_key(|e| e.line);
        all.truncate(room);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ErrorCode;

    fn error(line: i64) -> RowError {
        RowError {
            line,
            code: ErrorCode::InvalidEmail,
            message: String::new(),
            fields: Default::default(),
        }
    }

    #[test]
    fn the_first_rows_in_line_order_are_kept() {
        let errors = [error(9), error(3), error(7), error(5)];
        let lines = |v: Vec<&RowError>| v.iter().map(|e| e.line).collect::<Vec<_>>();
        assert_eq!(lines(first_by_line(errors.iter(), 2)), [3, 5]);
        assert_eq!(lines(first_by_line(errors.iter(), 0)), Vec::<i64>::new());
        assert_eq!(lines(first_by_line(errors.iter(), 4)), [9, 3, 7, 5]);
    }

    #[test]
    fn rows_fit_beside_the_batch_before_only_when_it_cannot_fill_the_room() {
        let s = StoredErrors {
            cap: 100,
            committed: 40,
            in_flight: 50,
        };
        assert!(s.fit(10));
        assert!(!s.fit(11));
        assert_eq!(s.room(95), 5);
        assert_eq!(s.room(120), 0);
        assert!(StoredErrors::unlimited().fit(usize::MAX / 2));
    }
}
