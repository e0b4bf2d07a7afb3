//! Properties (proptest) of whole imports and of the parsing and report pieces.
//!
//! - For any generated file (valid rows, each kind of bad row, duplicates in any case and
//!   padding, SQL metacharacters, quotes, newlines and control characters in every field,
//!   CRLF or LF, blank lines, a BOM, invalid UTF-8, NUL), in either mode, with any batch size
//!   and emails already in the table: `processed = inserted + updated + errors`, the table
//!   holds exactly the rows of an independent model, and errors.csv parses back to the
//!   model's bad rows (line, code and values as read, neutralised).
//! - The reader, validation and the report writer keep the invariants the fuzz targets check
//!   (`fuzz/src/checks.rs`), on generated input and on the committed fuzz corpus.
//!
//! `PROPTEST_CASES` raises the number of cases (default: 24 imports, 256 for the pure ones).

mod common;

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use bulk_import_core::{ImportMode, JobStatus};
use bulk_import_importer::{report::neutralize, run_job, Outcome};
use common::{Backend, TestEnv};
use proptest::{prelude::*, test_runner::TestRunner};
use std::collections::{BTreeMap, HashSet};
use tokio_util::sync::CancellationToken;

const POOL: [&str; 8] = [
    "ann@example.com",
    "bob.o'neil@example.org",
    "c+tag@sub.example.net",
    "d_e-f@x-y.example",
    "émile@exemple.fr",
    "g@h.io",
    "h1@example.com",
    "zed@example.co.uk",
];

/// One generated data row, bad in at most one way.
#[derive(Debug, Clone)]
enum Kind {
    Valid,
    MissingEmail,
    InvalidEmail(&'static str),
    FieldTooLong(usize),
    Nul(usize),
    InvalidUtf8(usize),
    /// Not 5 fields; 70 is over the 64-field cap (`record_too_large`).
    WrongCount(usize),
}

#[derive(Debug, Clone)]
struct GenRow {
    kind: Kind,
    /// Index into POOL, with its case changed by `upper` and padded by `pad`.
    email: usize,
    upper: Vec<bool>,
    pad: (&'static str, &'static str),
    fields: [String; 4],
    crlf: bool,
    quote_all: bool,
    blank_lines_after: usize,
}

#[derive(Debug, Clone)]
struct GenFile {
    bom: bool,
    rows: Vec<GenRow>,
    final_newline: bool,
    mode: ImportMode,
    batch_size: usize,
    /// Pool emails already in the table before the import.
    existing: Vec<usize>,
}

/// Field text full of what breaks naive CSV, SQL or spreadsheets. No NUL: a NUL is its own
/// kind of bad row.
fn field() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ]{1,4}",
        Just("'".to_string()),
        Just("\"".to_string()),
        Just(",".to_string()),
        Just(";".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\r".to_string()),
        Just("\t".to_string()),
        Just("\\".to_string()),
        Just("%_".to_string()),
        Just("'); DROP TABLE customers; --".to_string()),
        Just("\\.".to_string()),
        Just("=1+2".to_string()),
        Just("+47".to_string()),
        Just("-".to_string()),
        Just("@x".to_string()),
        Just("\u{1}\u{7}\u{1b}[31m\u{7f}".to_string()),
        Just("é😀\u{202e}".to_string()),
        Just(" ".to_string()),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|v| v.concat())
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Valid),
        1 => Just(Kind::MissingEmail),
        1 => prop::sample::select(vec!["plain", "a@b", "x y@z.com", "=cmd()@x.com", "@x.com", "a..b@c.com"])
            .prop_map(Kind::InvalidEmail),
        1 => (1usize..5).prop_map(Kind::FieldTooLong),
        1 => (0usize..5).prop_map(Kind::Nul),
        1 => (0usize..5).prop_map(Kind::InvalidUtf8),
        1 => prop::sample::select(vec![1usize, 4, 6, 70]).prop_map(Kind::WrongCount),
    ]
}

fn row() -> impl Strategy<Value = GenRow> {
    (
        kind(),
        0..POOL.len(),
        prop::collection::vec(any::<bool>(), 24),
        prop::sample::select(vec![("", ""), (" ", ""), ("\t", "  "), ("", " ")]),
        [field(), field(), field(), field()],
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![0usize, 0, 0, 1, 2]),
    )
        .prop_map(
            |(kind, email, upper, pad, fields, crlf, quote_all, blank_lines_after)| GenRow {
                kind,
                email,
                upper,
                pad,
                fields,
                crlf,
                quote_all,
                blank_lines_after,
            },
        )
}

fn file() -> impl Strategy<Value = GenFile> {
    (
        any::<bool>(),
        prop::collection::vec(row(), 0..40),
        any::<bool>(),
        prop::sample::select(vec![ImportMode::InsertOnly, ImportMode::Upsert]),
        prop::sample::select(vec![1usize, 2, 3, 7, 5000]),
        prop::collection::vec(0..POOL.len(), 0..3),
    )
        .prop_map(
            |(bom, rows, final_newline, mode, batch_size, existing)| GenFile {
                bom,
                rows,
                final_newline,
                mode,
                batch_size,
                existing,
            },
        )
}

impl GenRow {
    /// The raw field bytes this row is written with.
    fn cells(&self) -> Vec<Vec<u8>> {
        let email: String = POOL[self.email]
            .chars()
            .zip(self.upper.iter().cycle())
            .map(|(c, &up)| {
                if up {
                    c.to_uppercase().next().unwrap()
                } else {
                    c
                }
            })
            .collect();
        let email = format!("{}{email}{}", self.pad.0, self.pad.1);
        let mut cells: Vec<Vec<u8>> = std::iter::once(email.into_bytes())
            .chain(self.fields.iter().map(|f| f.clone().into_bytes()))
            .collect();
        match self.kind {
            Kind::Valid => {}
            Kind::MissingEmail => cells[0] = self.pad.0.as_bytes().to_vec(),
            Kind::InvalidEmail(e) => cells[0] = e.as_bytes().to_vec(),
            Kind::FieldTooLong(i) => cells[i] = "x".repeat(256).into_bytes(),
            Kind::Nul(i) => cells[i].extend_from_slice(b"a\0b"),
            Kind::InvalidUtf8(i) => cells[i].extend_from_slice(b"J\xF6rg"),
            Kind::WrongCount(n) => {
                // Never a blank line: the first cell is the (non-empty) email.
                cells.resize(n, b"f".to_vec());
            }
        }
        cells
    }

    /// The line as written, with its terminator.
    fn encode(&self, out: &mut Vec<u8>) {
        for (i, cell) in self.cells().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let special = cell
                .iter()
                .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
            if self.quote_all || special {
                out.push(b'"');
                for &b in cell {
                    if b == b'"' {
                        out.push(b'"');
                    }
                    out.push(b);
                }
                out.push(b'"');
            } else {
                out.extend_from_slice(cell);
            }
        }
    }

    /// The expected error code, if the row is bad on its own (duplicates aside).
    fn code(&self) -> Option<&'static str> {
        Some(match self.kind {
            Kind::Valid => return None,
            Kind::MissingEmail => "missing_email",
            Kind::InvalidEmail(_) => "invalid_email",
            Kind::FieldTooLong(_) => "field_too_long",
            Kind::Nul(_) => "invalid_character",
            Kind::InvalidUtf8(_) => "invalid_utf8",
            Kind::WrongCount(70) => "record_too_large",
            Kind::WrongCount(_) => "wrong_column_count",
        })
    }
}

type Stored = [Option<String>; 4];

/// What the import must produce, computed from the generator's knowledge of each row.
struct Model {
    bytes: Vec<u8>,
    records: i64,
    inserted: i64,
    updated: i64,
    /// (line, code, the five cells as errors.csv must show them)
    errors: Vec<(u64, &'static str, Vec<String>)>,
    table: BTreeMap<String, Stored>,
}

fn model(f: &GenFile) -> Model {
    let mut bytes = vec![];
    if f.bom {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    bytes.extend_from_slice(b"email,first_name,last_name,phone,city\n");
    let mut table: BTreeMap<String, Stored> = f
        .existing
        .iter()
        .map(|&i| {
            (
                POOL[i].to_string(),
                [Some("before".to_string()), None, None, None],
            )
        })
        .collect();
    let before: HashSet<String> = table.keys().cloned().collect();
    let mut inserted_here: HashSet<String> = HashSet::new();
    let (mut inserted, mut updated) = (0, 0);
    let mut errors = vec![];
    for (n, r) in f.rows.iter().enumerate() {
        let line = 1 + bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        r.encode(&mut bytes);
        let last = n + 1 == f.rows.len();
        if !last || f.final_newline {
            bytes.extend_from_slice(if r.crlf { b"\r\n" } else { b"\n" });
        }
        if !last {
            for _ in 0..r.blank_lines_after {
                bytes.extend_from_slice(if r.crlf { b"\r\n" } else { b"\n" });
            }
        }
        let cells = r.cells();
        let shown = |oversize: bool| -> Vec<String> {
            (0..5)
                .map(|i| match cells.get(i) {
                    Some(c) if !oversize => String::from_utf8_lossy(c).replace('\0', "\u{FFFD}"),
                    _ => String::new(),
                })
                .collect()
        };
        if let Some(code) = r.code() {
            errors.push((line, code, shown(code == "record_too_large")));
            continue;
        }
        let email = POOL[r.email].to_string();
        let stored: Stored = std::array::from_fn(|i| {
            let s = String::from_utf8(cells[i + 1].clone()).unwrap();
            (!s.is_empty()).then_some(s)
        });
        match f.mode {
            ImportMode::InsertOnly => {
                if before.contains(&email) {
                    errors.push((line, "duplicate_in_db", shown(false)));
                } else if inserted_here.contains(&email) {
                    errors.push((line, "duplicate_in_file", shown(false)));
                } else {
                    inserted_here.insert(email.clone());
                    table.insert(email, stored);
                    inserted += 1;
                }
            }
            ImportMode::Upsert => {
                if table.insert(email, stored).is_some() {
                    updated += 1;
                } else {
                    inserted += 1;
                }
            }
        }
    }
    Model {
        bytes,
        records: f.rows.len() as i64,
        inserted,
        updated,
        errors,
        table,
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn import_matches_model(env: &TestEnv, f: &GenFile) {
    let m = model(f);
    sqlx::query("TRUNCATE customers")
        .execute(&env.pool)
        .await
        .unwrap();
    for &i in &f.existing {
        sqlx::query("INSERT INTO customers (email, first_name) VALUES ($1, 'before') ON CONFLICT DO NOTHING")
            .bind(POOL[i])
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let id = env.submit(&m.bytes, f.mode).await;
    let mut settings = env.settings.clone();
    settings.import.batch_size = f.batch_size;
    let outcome = run_job(&settings, id, CancellationToken::new())
        .await
        .expect("importer ran");
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!(
        job.processed_rows,
        job.inserted_rows + job.updated_rows + job.error_rows,
        "processed = inserted + updated + errors"
    );
    assert_eq!(job.processed_rows, m.records);
    assert_eq!(
        (job.inserted_rows, job.updated_rows, job.error_rows),
        (m.inserted, m.updated, m.errors.len() as i64)
    );
    let table: BTreeMap<String, Stored> = env
        .customers()
        .await
        .into_iter()
        .map(|(e, a, b, c, d)| (e, [a, b, c, d]))
        .collect();
    assert_eq!(table, m.table, "the table holds exactly the model's rows");
    if m.errors.is_empty() {
        assert!(job.report_object.is_none());
        return;
    }
    let report = env.report(&job).await;
    assert_eq!(report[0], bulk_import_importer::report::HEADER);
    assert_eq!(report.len() - 1, m.errors.len());
    for (got, (line, code, cells)) in report[1..].iter().zip(&m.errors) {
        assert_eq!(got[0], line.to_string());
        assert_eq!(got[1], *code, "line {line}");
        assert!(!got[2].is_empty());
        let want: Vec<String> = cells.iter().map(|c| neutralize(c).into_owned()).collect();
        assert_eq!(got[3..], want[..], "line {line}: the values as read");
    }
}

#[test]
fn any_file_imports_exactly_as_the_model_says() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(TestEnv::new(Backend::Fs));
    let config = ProptestConfig {
        cases: cases(24),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    TestRunner::new(config)
        .run(&file(), |f| {
            rt.block_on(import_matches_model(&env, &f));
            Ok(())
        })
        .unwrap();
}

#[test]
fn generated_files_keep_the_reader_invariants() {
    let config = ProptestConfig {
        cases: cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    TestRunner::new(config)
        .run(&file(), |f| {
            let m = model(&f);
            checks::read_and_validate(&m.bytes);
            // The header plus one record per generated row, on the model's lines.
            let lines: Vec<u64> = checks::read_all(&m.bytes, 0, 1)
                .iter()
                .map(|(r, _)| r.line)
                .collect();
            assert_eq!(lines.len(), f.rows.len() + 1);
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_bytes_keep_the_reader_invariants() {
    let bytes = prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            prop::sample::select(b",\"\r\n\xEF\xBB\xBF".to_vec())
        ],
        0..400,
    );
    TestRunner::new(ProptestConfig {
        cases: cases(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
    .run(&bytes, |b| {
        checks::read_and_validate(&b);
        Ok(())
    })
    .unwrap();
}

#[test]
fn errors_csv_round_trips() {
    let cell = prop_oneof![any::<String>(), field()];
    let row = (
        any::<u32>(),
        cell.clone(),
        cell.clone(),
        [
            prop::option::of(cell.clone()),
            prop::option::of(cell.clone()),
            prop::option::of(cell.clone()),
            prop::option::of(cell.clone()),
            prop::option::of(cell),
        ],
    );
    TestRunner::new(ProptestConfig {
        cases: cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
    .run(
        &(prop::collection::vec(row, 0..8), any::<u8>()),
        |(rows, take)| {
            checks::report_roundtrip(&rows, take as usize % 9);
            Ok(())
        },
    )
    .unwrap();
}

/// Replays the committed fuzz corpus (and any crash reproducers under `fuzz/regressions/`)
/// through the fuzz targets' checks, so that a fixed crash stays fixed.
#[test]
fn fuzz_corpus_replays_clean() {
    use arbitrary::{Arbitrary, Unstructured};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let files = |target: &str| -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        for dir in ["corpus", "regressions"] {
            if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
                out.extend(entries.map(|e| e.unwrap().path()));
            }
        }
        out.sort();
        out
    };
    let reads = files("read_validate");
    assert!(!reads.is_empty(), "the corpus is committed");
    for path in &reads {
        let data = std::fs::read(path).unwrap();
        checks::read_and_validate(&data);
    }
    for path in files("report_roundtrip") {
        let data = std::fs::read(&path).unwrap();
        // The same decoding libFuzzer's `fuzz_target!` applies to the bytes.
        if let Ok((rows, take)) =
            <(Vec<checks::ReportRow>, u8)>::arbitrary_take_rest(Unstructured::new(&data))
        {
            checks::report_roundtrip(&rows, take as usize);
        }
    }
}

/// Found by `any_file_imports_exactly_as_the_model_says`: the in-batch duplicate check ran
/// before the table look-up, so the second occurrence said `duplicate_in_file`.
#[tokio::test]
async fn an_existing_email_repeated_in_one_batch_is_duplicate_in_db_every_time() {
    let env = TestEnv::new(Backend::Fs).await;
    sqlx::query("INSERT INTO customers (email) VALUES ('ann@example.com')")
        .execute(&env.pool)
        .await
        .unwrap();
    let file = b"email,first_name,last_name,phone,city\nann@example.com,,,,\nann@example.com,,,,\n";
    let (job, _) = env.import(file, ImportMode::InsertOnly).await;
    let codes: Vec<String> = env.report(&job).await[1..]
        .iter()
        .map(|r| r[1].clone())
        .collect();
    // README: "An email already in the table before the job is duplicate_in_db at every
    // occurrence."
    assert_eq!(codes, ["duplicate_in_db", "duplicate_in_db"]);
}
