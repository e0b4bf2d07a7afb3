//! Properties (proptest) of whole imports and of the parsing and report pieces.
//!
//! - For any generated file (valid rows, each kind of bad row, duplicates in any case and
//!   padding, SQL metacharacters, quotes, newlines and control characters in every field,
//!   CRLF or LF, blank lines, a BOM, invalid UTF-8, NUL), in either mode, with any batch size
//!   and emails already in the table: `processed = inserted + updated + errors`, the table
//!   holds exactly the rows of an independent model, and errors.csv parses back to the
//!   model's bad rows (line, code and values as read, neutralised). Files come in every
//!   dialect: delimiter `,` `;` tab `|`; UTF-8 (with or without BOM), UTF-16 LE or BE with a
//!   BOM; gzip or not; a standard header, one with the columns in any order under other
//!   spellings (English and Russian) with an extra column anywhere, or unknown names
//!   (positional).
//! - The reader, validation and the report writer keep the invariants the fuzz targets check
//!   (`fuzz/src/checks.rs`), on generated input and on the committed fuzz corpus.
//!
//! `PROPTEST_CASES` raises the number of cases (default: 24 imports, 256 for the pure ones).

use crate::{checks, common};
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

/// How the file is written.
#[derive(Debug, Clone)]
struct GenDialect {
    delimiter: u8,
    /// 0: UTF-8, 1: UTF-16 LE with BOM, 2: UTF-16 BE with BOM.
    encoding: u8,
    gzip: bool,
    header: GenHeader,
}

#[derive(Debug, Clone)]
enum GenHeader {
    /// `email,first_name,last_name,phone,city`.
    Standard,
    /// The five columns in the order of `order` (file position → column), each under the
    /// spelling `spelling[column]`, and an extra column at `extra` (if any).
    Named {
        order: Vec<usize>,
        spelling: [usize; 5],
        extra: Option<usize>,
    },
    /// Names nobody recognises: positional.
    Unknown,
}

const SPELLINGS: [&[&str]; 5] = [
    &[
        "email",
        "E-mail",
        "Email Address",
        "Почта",
        "Электронная почта",
    ],
    &["first_name", "First Name", "given name", "Имя"],
    &["last_name", "Last Name", "Surname", "Фамилия"],
    &["phone", "Phone Number", "Tel", "Телефон"],
    &["city", "City", "town", "Город"],
];

impl GenDialect {
    /// File position of each of the five columns, and the number of fields.
    fn layout(&self) -> ([usize; 5], usize) {
        match &self.header {
            GenHeader::Standard | GenHeader::Unknown => ([0, 1, 2, 3, 4], 5),
            GenHeader::Named { order, extra, .. } => {
                let mut pos = [0; 5];
                for (p, &c) in order.iter().enumerate() {
                    pos[c] = match extra {
                        Some(x) if p >= *x => p + 1,
                        _ => p,
                    };
                }
                (pos, 5 + extra.is_some() as usize)
            }
        }
    }

    fn header_cells(&self) -> Vec<String> {
        match &self.header {
            GenHeader::Standard => ["email", "first_name", "last_name", "phone", "city"]
                .map(String::from)
                .to_vec(),
            GenHeader::Unknown => ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            GenHeader::Named {
                order,
                spelling,
                extra,
            } => {
                let mut cells: Vec<String> = order
                    .iter()
                    .map(|&c| SPELLINGS[c][spelling[c] % SPELLINGS[c].len()].to_string())
                    .collect();
                if let Some(x) = extra {
                    cells.insert(*x, "Notes".into());
                }
                cells
            }
        }
    }
}

fn gen_dialect() -> impl Strategy<Value = GenDialect> {
    let header = prop_oneof![
        2 => Just(GenHeader::Standard),
        1 => Just(GenHeader::Unknown),
        3 => (
            Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
            [0usize..5, 0usize..5, 0usize..5, 0usize..5, 0usize..5],
            prop::option::of(0usize..6),
        )
            .prop_map(|(order, spelling, extra)| GenHeader::Named {
                order,
                spelling,
                extra,
            }),
    ];
    (
        prop::sample::select(vec![b',', b';', b'\t', b'|']),
        prop::sample::select(vec![0u8, 0, 1, 2]),
        any::<bool>(),
        header,
    )
        .prop_map(|(delimiter, encoding, gzip, header)| GenDialect {
            delimiter,
            encoding,
            gzip,
            header,
        })
}

#[derive(Debug, Clone)]
struct GenFile {
    dialect: GenDialect,
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
        gen_dialect(),
        any::<bool>(),
        prop::collection::vec(row(), 0..40),
        any::<bool>(),
        prop::sample::select(vec![ImportMode::InsertOnly, ImportMode::Upsert]),
        prop::sample::select(vec![1usize, 2, 3, 7, 5000]),
        prop::collection::vec(0..POOL.len(), 0..3),
    )
        .prop_map(
            |(dialect, bom, rows, final_newline, mode, batch_size, existing)| GenFile {
                dialect,
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
    /// The five standard cells (email first) as this row holds them.
    fn standard_cells(&self, d: &GenDialect) -> Vec<Vec<u8>> {
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
            Kind::Valid | Kind::WrongCount(_) => {}
            Kind::MissingEmail => cells[0] = self.pad.0.as_bytes().to_vec(),
            Kind::InvalidEmail(e) => cells[0] = e.as_bytes().to_vec(),
            Kind::FieldTooLong(i) => cells[i] = "x".repeat(256).into_bytes(),
            Kind::Nul(i) => cells[i].extend_from_slice(b"a\0b"),
            // UTF-16 text cannot hold an invalid UTF-8 byte: the row stays valid.
            Kind::InvalidUtf8(_) if d.encoding != 0 => {}
            Kind::InvalidUtf8(i) => cells[i].extend_from_slice(b"J\xF6rg"),
        }
        cells
    }

    /// The raw field bytes this row is written with, in file order.
    fn cells(&self, d: &GenDialect) -> Vec<Vec<u8>> {
        let standard = self.standard_cells(d);
        let (pos, fields) = d.layout();
        let mut cells = vec![self.fields[3].clone().into_bytes(); fields];
        for (c, cell) in standard.iter().enumerate() {
            cells[pos[c]] = cell.clone();
        }
        if let Kind::WrongCount(n) = self.kind {
            if n == 1 {
                // Never a blank line: the one cell is the (non-empty) email.
                cells = vec![standard[0].clone()];
            } else {
                let n = if n == fields { n + 1 } else { n };
                cells.resize(n, b"f".to_vec());
            }
        }
        cells
    }

    /// The line as written, with its terminator.
    fn encode(&self, d: &GenDialect, out: &mut Vec<u8>) {
        for (i, cell) in self.cells(d).iter().enumerate() {
            if i > 0 {
                out.push(d.delimiter);
            }
            let special = cell
                .iter()
                .any(|&b| matches!(b, b'"' | b'\r' | b'\n') || b == d.delimiter);
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
    fn code(&self, d: &GenDialect) -> Option<&'static str> {
        Some(match self.kind {
            Kind::Valid => return None,
            Kind::MissingEmail => "missing_email",
            Kind::InvalidEmail(_) => "invalid_email",
            Kind::FieldTooLong(_) => "field_too_long",
            Kind::Nul(_) => "invalid_character",
            Kind::InvalidUtf8(_) if d.encoding != 0 => return None,
            Kind::InvalidUtf8(_) => "invalid_utf8",
            Kind::WrongCount(70) => "record_too_large",
            Kind::WrongCount(_) => "wrong_column_count",
        })
    }
}

type Stored = [Option<String>; 4];

/// What the import must produce, computed from the generator's knowledge of each row.
struct Model {
    /// The file as uploaded (encoded, maybe compressed).
    bytes: Vec<u8>,
    /// The options the upload needs (see `model`).
    options: bulk_import_core::options::ImportOptions,
    records: i64,
    inserted: i64,
    updated: i64,
    /// (line, code, the five cells as errors.csv must show them)
    errors: Vec<(u64, &'static str, Vec<String>)>,
    table: BTreeMap<String, Stored>,
}

fn model(f: &GenFile) -> Model {
    let d = &f.dialect;
    let (pos, _) = d.layout();
    let mut bytes = vec![];
    let header = d.header_cells().join(&(d.delimiter as char).to_string());
    bytes.extend_from_slice(header.as_bytes());
    bytes.push(b'\n');
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
        r.encode(d, &mut bytes);
        let last = n + 1 == f.rows.len();
        if !last || f.final_newline {
            bytes.extend_from_slice(if r.crlf { b"\r\n" } else { b"\n" });
        }
        if !last {
            for _ in 0..r.blank_lines_after {
                bytes.extend_from_slice(if r.crlf { b"\r\n" } else { b"\n" });
            }
        }
        let cells = r.cells(d);
        let standard = r.standard_cells(d);
        let shown = |oversize: bool| -> Vec<String> {
            (0..5)
                .map(|i| match cells.get(pos[i]) {
                    Some(c) if !oversize => String::from_utf8_lossy(c).replace('\0', "\u{FFFD}"),
                    _ => String::new(),
                })
                .collect()
        };
        if let Some(code) = r.code(d) {
            errors.push((line, code, shown(code == "record_too_large")));
            continue;
        }
        let email = POOL[r.email].to_string();
        let stored: Stored = std::array::from_fn(|i| {
            let s = String::from_utf8(standard[i + 1].clone()).unwrap();
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
    // A UTF-8 file whose invalid bytes might outnumber its valid non-ASCII characters would
    // be detected as a legacy encoding (as it should); the model says UTF-8 then.
    let mut options = bulk_import_core::options::ImportOptions::default();
    let invalid = f
        .rows
        .iter()
        .any(|r| matches!(r.kind, Kind::InvalidUtf8(_)));
    if d.encoding == 0 && !f.bom && invalid {
        options.encoding = Some("UTF-8".into());
    }
    let text = bytes;
    let mut bytes = match d.encoding {
        0 if f.bom => [b"\xEF\xBB\xBF".as_slice(), &text].concat(),
        0 => text.clone(),
        le_or_be => {
            let s = std::str::from_utf8(&text).expect("UTF-16 files hold valid text");
            let mut out = if le_or_be == 1 {
                vec![0xFF, 0xFE]
            } else {
                vec![0xFE, 0xFF]
            };
            for u in s.encode_utf16() {
                out.extend(if le_or_be == 1 {
                    u.to_le_bytes()
                } else {
                    u.to_be_bytes()
                });
            }
            out
        }
    };
    if d.gzip {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        bytes = enc.finish().unwrap();
    }
    Model {
        bytes,
        options,
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
        sqlx::query("INSERT INTO customers (org_id, email, first_name) VALUES ($2, $1, 'before') ON CONFLICT DO NOTHING")
            .bind(POOL[i])
            .bind(env.org)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let id = env.submit_with(&m.bytes, f.mode, &m.options).await;
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
        .run(&file(), |mut f| {
            // Detection finds the dialect the file was written in, and decoding with it
            // resumes exactly from every checkpoint.
            f.dialect.gzip = false;
            let m = model(&f);
            checks::detect_and_read(&m.bytes);
            let found = bulk_import_importer::dialect::detect(&m.bytes, true, false, &m.options)
                .expect("the header has an email column");
            let (pos, fields) = f.dialect.layout();
            assert_eq!(found.delimiter_byte(), f.dialect.delimiter);
            assert_eq!(
                found.encoding,
                ["UTF-8", "UTF-16LE", "UTF-16BE"][f.dialect.encoding as usize]
            );
            if !matches!(f.dialect.header, GenHeader::Unknown) {
                assert_eq!(found.fields, fields);
                let got: Vec<usize> = found.columns.iter().map(|c| c.position - 1).collect();
                assert_eq!(got, pos.to_vec());
            }
            // The plain reader's invariants on the same rows as a standard file.
            f.dialect = GenDialect {
                delimiter: b',',
                encoding: 0,
                gzip: false,
                header: GenHeader::Standard,
            };
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
            prop::sample::select(b",;\t|\"\r\n\xEF\xBB\xBF\xFF\xFE\xC0\xE0\x00".to_vec())
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
        checks::detect_and_read(&b);
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
    let dialects = files("dialect_detect");
    assert!(!dialects.is_empty(), "the dialect corpus is committed");
    for path in &dialects {
        checks::detect_and_read(&std::fs::read(path).unwrap());
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
    sqlx::query("INSERT INTO customers (org_id, email) VALUES ($1, 'ann@example.com')")
        .bind(env.org)
        .execute(&env.pool)
        .await
        .unwrap();
    let file = b"email,first_name,last_name,phone,city\nann@example.com,,,,\nann@example.com,,,,\n";
    let (job, _) = env.import(file, ImportMode::InsertOnly).await;
    let codes: Vec<String> = env.report(&job).await[1..]
        .iter()
        .map(|r| r[1].clone())
        .collect();
    // docs/import-semantics.md: "An email already in the table before the job is duplicate_in_db at every
    // occurrence."
    assert_eq!(codes, ["duplicate_in_db", "duplicate_in_db"]);
}
