"""README.md and docs/ name only things that exist, and keep the rules of a front door."""

import re
from pathlib import Path

import docscheck
from docscheck import ROOT


def test_every_page_names_only_commands_flags_variables_files_and_links_that_exist(facts):
    problems = [p for page in docscheck.doc_pages() for p in docscheck.check_markdown(facts, page)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_planted_mistakes(facts):
    """A page with one mistake of each kind: each is reported, and nothing else."""
    page = ROOT / "docs" / "planted.md"
    text = """# Planted

## A real heading

```bash
bulk-import import customers.csv --wiat
MAX_UPLOADS_BYTES=10 scripts/run-local.sh
scripts/run-locl.sh
bench/run.sh --repet 3
cargo test -p bulk-import-apii
cargo test -p bulk-import-api --test no_such_test
bulk-import-api create-organisation
bulk-import-importer --job-id "$JOB_ID" --mdoe upsert
bulk-imprt list
EXECUTR=local scripts/run-local.sh
```

Set `S3_BUKET` and read `importer/src/no_such_file.rs`; pass `--dyr-run` to the CLI.
See [the API](api.md#no-such-anchor), [a missing page](missing.md),
[outside](../../outside.md) and [this page](#a-real-heading).
In this session I tried something; see ../shared/DESIGN.md.
"""
    problems = docscheck.check_markdown(facts, page, text)
    expected = [
        "`bulk-import import` has no option --wiat",
        "unknown environment variable MAX_UPLOADS_BYTES",
        "no such file or directory in the repository: scripts/run-locl.sh",
        "bench/run.sh does not handle --repet",
        "no cargo package 'bulk-import-apii'",
        "no test target 'no_such_test'",
        "`bulk-import-api` has no subcommand 'create-organisation'",
        "`bulk-import-importer` has no option --mdoe",
        "unknown command 'bulk-imprt'",
        "unknown environment variable EXECUTR",
        "unknown environment variable S3_BUKET",
        "no such file or directory in the repository: importer/src/no_such_file.rs",
        "no binary or script has the option --dyr-run",
        "link to a missing anchor: api.md#no-such-anchor",
        "link to a missing file: missing.md",
        "link outside the repository: ../../outside.md",
        "reads as a work log",
        "refers to a design file outside the repository",
    ]
    for message in expected:
        assert any(message in p for p in problems), f"not caught: {message}\n" + "\n".join(problems)
    assert len(problems) == len(expected), "\n".join(problems)


def test_the_configuration_tables_list_each_variable_once_with_the_binaries_default(facts):
    text = (ROOT / "docs" / "configuration.md").read_text()
    tables = docscheck.config_tables(text)
    seen: dict[str, str] = {}
    problems = []
    for header, rows in tables:
        for name, default in rows:
            if name in seen:
                problems.append(f"{name} is in two tables")
            seen[name] = header
            expected = facts.help_defaults.get(name, docscheck.PENDING_VARS.get(name))
            if header == "variable" and expected is not None:
                written = default.replace("`", "")
                if not written.startswith(expected):
                    problems.append(f"{name}: default {written!r}, the binaries print {expected!r}")
    settings = {n for n, h in seen.items() if h == "variable"}
    cli = {n for n, h in seen.items() if h == "CLI variable"}
    wanted = set(facts.help_defaults) | set(docscheck.PENDING_VARS)
    problems += [f"{n} is read by a binary but not documented" for n in sorted(wanted - settings)]
    problems += [f"{n} is documented but no binary lists it" for n in sorted(settings - wanted)]
    problems += [f"the CLI reads {n}, undocumented" for n in sorted(facts.cli_vars - cli)]
    problems += [f"{n} is in the CLI table but the CLI does not list it" for n in sorted(cli - facts.cli_vars)]
    assert not problems, "\n".join(problems)


def test_pending_entries_are_not_yet_in_the_code(facts):
    """Once the code has a documented-ahead command or variable, drop it from docscheck's
    PENDING_* lists so that it is checked like any other."""
    stale = facts.stale_pending + sorted(set(docscheck.PENDING_VARS) & set(facts.help_defaults))
    assert not stale, f"now real, remove from docs/tests/docscheck.py PENDING_*: {stale}"


def test_the_module_map_names_every_source_file():
    design = (ROOT / "docs" / "design.md").read_text()
    sources = [ROOT / "core" / "build.rs"]
    for crate in ("api", "cli", "core", "importer", "operator"):
        sources += [p for p in (ROOT / crate / "src").rglob("*") if p.is_file()]
    missing = [str(p.relative_to(ROOT)) for p in sources if f"`{p.relative_to(ROOT)}`" not in design]
    assert not missing, f"add a line for each to the module map of docs/design.md: {missing}"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md is over 250 lines: move detail into docs/"
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", setup, re.S).group(1)
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert [c[0] for c in commands] == ["scripts/run-local.sh", "scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh\s*$", ci, re.M), "CI runs the README's test command"
    for page in ("docs/README.md",):
        assert f"({page})" in readme, f"the README links {page}"


def test_no_file_refers_to_design_notes_outside_the_repository():
    pattern = re.compile(r"\.\./shared/|DESIGN(?:\.md|\s*§)")
    suffixes = {".rs", ".sh", ".md", ".py", ".yaml", ".yml", ".toml", ".json", ".tpl", ".txt"}
    offenders = []
    for path in docscheck.source_files(ROOT):
        if path.suffix not in suffixes and path.name not in ("Dockerfile", "run"):
            continue
        if path.parent == Path(__file__).parent:
            continue  # these tests spell the pattern out
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "point to the docs/ page instead:\n" + "\n".join(offenders)
