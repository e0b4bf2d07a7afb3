//! Contracts that span the repository:
//! - every binary answers `--help` (its subcommands and every environment variable it reads,
//!   with the default) and `--version` (that the variables and defaults they list are exactly
//!   the ones `docs/configuration.md` documents is checked by `docs/tests/test_docs.py`);
//! - no SQL on `import_jobs` outside the job repository (`core/src/repo/`);
//! - the committed OpenAPI document (`docs/openapi.json`) is what the API serves
//!   (`bulk-import-api openapi`); `charts/tests` validates it against the OpenAPI schema.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of this workspace, built beside this test's API binary.
fn bin(name: &str) -> PathBuf {
    let api = PathBuf::from(env!("CARGO_BIN_EXE_bulk-import-api"));
    let path = api.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo build --workspace` (scripts/test.sh builds every binary)",
        path.display()
    );
    path
}

fn run(bin: &PathBuf, arg: &str) -> String {
    let out = Command::new(bin).arg(arg).env_clear().output().unwrap();
    assert!(out.status.success(), "{} {arg}: {out:?}", bin.display());
    String::from_utf8(out.stdout).unwrap()
}

/// Variable names at the start of the lines of a `--help`'s "Environment" section.
fn help_vars(help: &str) -> BTreeSet<String> {
    let section = help
        .split("Environment")
        .nth(1)
        .expect("an Environment section");
    section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| is_var(w))
        .map(str::to_string)
        .collect()
}

fn is_var(w: &str) -> bool {
    w.len() > 2
        && w.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

#[test]
fn help_lists_variables_with_defaults_and_version_works() {
    for name in [
        "bulk-import-api",
        "bulk-import-importer",
        "bulk-import-operator",
    ] {
        let path = bin(name);
        let help = run(&path, "--help");
        let vars = help_vars(&help);
        assert!(vars.contains("DATABASE_URL"), "{name} --help:\n{help}");
        assert!(help.contains("[default: "), "{name} shows defaults");
        let version = run(&path, "--version");
        assert!(
            version.starts_with(name) && version.contains(env!("CARGO_PKG_VERSION")),
            "{version}"
        );
    }
    assert!(run(&bin("bulk-import-api"), "--help").contains("migrate"));
    assert!(run(&bin("bulk-import-operator"), "--help").contains("crd"));
    assert!(run(&bin("bulk-import-importer"), "--help").contains("submit"));
}

#[test]
fn only_the_job_repository_writes_sql_on_import_jobs() {
    let mut offenders = vec![];
    for dir in ["api/src", "importer/src", "operator/src", "core/src"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                // The repository itself, and test-only modules that set up or inspect rows.
                if !name.ends_with(".rs")
                    || path.parent().is_some_and(|d| d.ends_with("core/src/repo"))
                    || name.ends_with("_tests.rs")
                    || name == "fixtures.rs"
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    let lower = code.to_lowercase();
                    if ["from", "into", "update", "join", "table"]
                        .iter()
                        .any(|kw| lower.contains(&format!("{kw} import_jobs")))
                    {
                        offenders.push(format!("{}:{}: {code}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL on import_jobs outside core/src/repo/:\n{}",
        offenders.join("\n")
    );
}

/// docs/openapi.json is what the binary serves, so a client generated from the repository
/// matches the API (drift-tested like the CRD).
#[test]
fn the_committed_openapi_document_is_the_served_one() {
    let served = run(&bin("bulk-import-api"), "openapi");
    let rel = "docs/openapi.json";
    let committed = std::fs::read_to_string(root().join(rel)).unwrap_or_default();
    if committed != served {
        let line = committed
            .lines()
            .zip(served.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(served.lines().count()), |i| i)
            + 1;
        panic!(
            "{rel} differs from the document the API serves (from line {line}).\n\
             Regenerate it: cargo run -p bulk-import-api -- openapi > {rel}"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    // Client generators name a function per operation id: each is unique.
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
    let code = &doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"];
    assert!(code.as_array().is_some_and(|c| c.len() > 20), "{code}");
    let status = &doc["components"]["schemas"]["JobView"]["properties"]["status"]["enum"];
    assert_eq!(
        status,
        &serde_json::json!([
            "queued",
            "pending",
            "processing",
            "done",
            "failed",
            "cancelled"
        ])
    );
}
