//! Contracts that span the repository:
//! - every binary answers `--help` (its subcommands and every environment variable it reads,
//!   with the default) and `--version`; the variables the three binaries list are exactly the
//!   ones the README's configuration tables document;
//! - no SQL on `import_jobs` outside the job repository (`core/src/repo.rs`).

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

/// Variables in the first cell of the README's configuration tables (a table whose header
/// names a variable column).
fn readme_vars() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut vars = BTreeSet::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| variable |") || line.starts_with("| operator variable |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if in_table {
            let first = line.split('|').nth(1).unwrap_or("");
            for token in first.split('`').skip(1).step_by(2) {
                assert!(
                    is_var(token),
                    "not a variable name in the README: {token:?}"
                );
                vars.insert(token.to_string());
            }
        }
    }
    vars
}

#[test]
fn help_lists_exactly_the_variables_the_readme_documents_and_version_works() {
    let mut listed = BTreeSet::new();
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
        listed.extend(vars);
    }
    assert!(run(&bin("bulk-import-api"), "--help").contains("migrate"));
    assert!(run(&bin("bulk-import-operator"), "--help").contains("crd"));
    assert!(run(&bin("bulk-import-importer"), "--help").contains("submit"));
    let documented = readme_vars();
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        undocumented.is_empty() && unlisted.is_empty(),
        "in --help but not in the README: {undocumented:?}; in the README but in no --help: {unlisted:?}"
    );
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
                    || path.ends_with("core/src/repo.rs")
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
        "SQL on import_jobs outside core/src/repo.rs:\n{}",
        offenders.join("\n")
    );
}
