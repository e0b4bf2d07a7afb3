"""Checks that README.md and docs/ name only things that exist.

Sources of truth:
- scripts, bench and other repository files: the files on disk;
- binaries, subcommands and flags: each workspace binary's own `--help` (clap), walked
  subcommand by subcommand;
- cargo packages, targets and profiles: `cargo metadata` and Cargo.toml;
- environment variables: `core/src/settings.rs` (`VARS`, also printed by `--help` with their
  defaults), the CLI's `--help`, and the variables any binary, test or script reads;
- links: the files on disk and the headings of the Markdown files they point to.

`check_markdown` returns a list of problems for one page; the tests call it on every page and,
in the self-test, on pages with planted mistakes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The workspace's binaries: the four the docs talk about.
BINARIES = ("bulk-import-api", "bulk-import-importer", "bulk-import-operator", "bulk-import")

# Commands from outside the repository that docs may run. Their own flags are not checked.
EXTERNAL_COMMANDS = {
    "addr2line", "apt-get", "bash", "cat", "cd", "cp", "curl", "docker", "echo", "exec",
    "export", "git", "helm", "jq", "kind", "kubectl", "mc", "perf", "pip", "printf", "psql",
    "python3", "rustup", "sh", "source", ".", "sudo", "tmux", "wrk",
}

# Variables from outside the project that docs may name.
EXTERNAL_VARS = {
    "CARGO_TARGET_DIR", "HOME", "KUBECONFIG", "PATH", "PGPASSWORD", "RUSTC_BOOTSTRAP",
    "SQLX_OFFLINE", "XDG_CONFIG_HOME",
}

# Flags of outside tools that docs name on their own (cargo's -Z, helm's --set).
EXTERNAL_FLAGS = {"-Z", "--set"}

# Placeholders docs write in upper case, as a reader would type their own value.
PLACEHOLDERS = {"JOB_ID"}

# Scripts whose arguments go to another program (cargo test, pytest): flags not checked.
PASS_THROUGH_SCRIPTS = {"scripts/test.sh", "charts/tests/run.sh", "docs/tests/run.sh"}

# Top-level directories: a word starting with one of these and a slash is a repository path.
REPO_DIRS = (
    ".ci", ".sqlx", "api", "bench", "charts", "cli", "core", "crds", "docs", "fuzz",
    "importer", "migrations", "operator", "scripts",
)
# Paths that commands create (not in a fresh clone).
GENERATED = ("bench/data", "fuzz/artifacts")

# Documented ahead of the code: the organizations change adds these. The tests fail when an
# entry here has become real, so that it is removed from this list.
PENDING_VARS: dict = {}
PENDING_COMMANDS: dict = {}

VAR_RE = re.compile(r"(?<![\w$-])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?![\w-])")
WILDCARD_RE = re.compile(r"(?<![\w$-])([A-Z][A-Z0-9_]*?)_\*")
PATH_RE = re.compile(
    r"(?<![\w./~-])((?:%s)/[\w./@-]*)" % "|".join(re.escape(d) for d in REPO_DIRS)
)
LINK_RE = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
FENCE_RE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w-]*)")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
WORK_LOG_RE = re.compile(
    r"(?i)\b(this session|previous session|in this run|I (?:tried|measured|made|did|found|ran))\b"
)


# ---------------------------------------------------------------------------------------------
# Binaries: the command tree from `--help`.


@dataclasses.dataclass
class Command:
    path: tuple[str, ...]
    options: dict[str, bool]  # flag -> takes a value
    commands: dict[str, "Command"]
    help: str = ""
    pending: bool = False


def parse_help(text: str) -> tuple[dict[str, bool], list[str]]:
    """Options (flag -> takes a value) and subcommand names of one clap `--help` page."""
    options: dict[str, bool] = {}
    commands: list[str] = []
    section = ""
    for line in text.splitlines():
        header = re.match(r"^([A-Z][\w ]*?)(?: \(.*\))?:\s*$", line)
        if header:
            section = header.group(1)
            continue
        if section == "Commands":
            m = re.match(r"^  ([\w-]+)(?:\s|$)", line)
            if m:
                commands.append(m.group(1))
        elif section == "Options":
            m = re.match(r"^\s+(?:(-\w)(?:,\s+|\s|$))?(--[\w-]+)?(?:[ =]?(<[^>]+>|\[[^\]]+\]))?", line)
            if m and (m.group(1) or m.group(2)):
                takes_value = bool(m.group(3))
                for flag in (m.group(1), m.group(2)):
                    if flag:
                        options[flag] = takes_value
    return options, commands


def help_tree(binary: Path, path: tuple[str, ...]) -> Command:
    args = [str(binary), *path[1:], "--help"]
    out = subprocess.run(args, capture_output=True, text=True, env={}, check=True).stdout
    options, names = parse_help(out)
    cmd = Command(path=path, options=options, commands={}, help=out)
    for name in names:
        if name != "help":
            cmd.commands[name] = help_tree(binary, path + (name,))
    return cmd


def add_pending(trees: dict[str, Command]) -> list[str]:
    """Adds the pending commands; returns those that already exist (stale entries)."""
    stale = []
    for path, options in sorted(PENDING_COMMANDS.items(), key=lambda kv: len(kv[0])):
        parent = trees[path[0]]
        for name in path[1:-1]:
            parent = parent.commands[name]
        if path[-1] in parent.commands and not parent.commands[path[-1]].pending:
            stale.append(" ".join(path))
            continue
        parent.commands[path[-1]] = Command(
            path=path, options={**options, "-h": False, "--help": False}, commands={}, pending=True
        )
    return stale


# ---------------------------------------------------------------------------------------------
# What exists.


@dataclasses.dataclass
class Facts:
    root: Path
    trees: dict[str, Command]
    stale_pending: list[str]
    help_defaults: dict[str, str]  # settings variable -> default printed by --help
    cli_vars: set[str]
    read_vars: set[str]  # variables some source file reads
    packages: dict[str, dict]  # cargo package name -> {"dir", "tests", "bins"}
    profiles: set[str]
    flags: set[str]  # every flag of a binary or a script, for flags named on their own

    def known_var(self, name: str) -> bool:
        return (
            name in self.help_defaults
            or name in self.cli_vars
            or name in self.read_vars
            or name in EXTERNAL_VARS
            or name in PENDING_VARS
        )


def cargo_metadata(root: Path) -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)


def ensure_binaries(root: Path, target_dir: Path) -> Path:
    """The debug binaries, built first if any is missing."""
    bin_dir = target_dir / "debug"
    if any(not (bin_dir / b).exists() for b in BINARIES):
        subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=root, check=True)
    return bin_dir


def env_section_defaults(help_text: str) -> dict[str, str]:
    defaults = {}
    for m in re.finditer(r"^\s+([A-Z][A-Z0-9_]+)\s+\[default: (.*?)\] ", help_text, re.M):
        defaults[m.group(1)] = m.group(2)
    return defaults


def read_vars(root: Path) -> set[str]:
    """Variables read anywhere in the repository's code, tests and scripts."""
    names: set[str] = set()
    patterns = {
        ".rs": [r'env::var(?:_os)?\("([A-Z][A-Z0-9_]*)"\)', r'env!\("([A-Z][A-Z0-9_]*)"\)'],
        ".py": [r'environ(?:\.get)?[\[(]"([A-Z][A-Z0-9_]*)"', r'getenv\("([A-Z][A-Z0-9_]*)"'],
        ".sh": [r"\$\{?([A-Z][A-Z0-9_]*)", r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)="],
    }
    for path in source_files(root):
        for pattern in patterns.get(path.suffix, []):
            names.update(re.findall(pattern, path.read_text(errors="replace"), re.M))
    return names


def source_files(root: Path):
    """The repository's own files: build output, local state and fuzz inputs left out (the
    directories are pruned, not walked: target/ holds hundreds of thousands of files)."""
    skip = {"target", ".git", ".local", "corpus", "regressions", "node_modules", "data"}
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            yield Path(parent) / name


def gather(root: Path = ROOT) -> Facts:
    meta = cargo_metadata(root)
    bin_dir = ensure_binaries(root, Path(meta["target_directory"]))
    trees = {b: help_tree(bin_dir / b, (b,)) for b in BINARIES}
    stale = add_pending(trees)
    help_defaults: dict[str, str] = {}
    for b in BINARIES[:3]:
        help_defaults.update(env_section_defaults(trees[b].help))
    cli_vars = set(
        re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s", trees["bulk-import"].help.split("Environment")[-1], re.M)
    )
    packages = {}
    for p in meta["packages"]:
        kinds = {}
        for t in p["targets"]:
            for k in t["kind"]:
                kinds.setdefault(k, set()).add(t["name"])
        packages[p["name"]] = {
            "dir": Path(p["manifest_path"]).parent,
            "tests": kinds.get("test", set()),
            "bins": kinds.get("bin", set()),
        }
    cargo_toml = (root / "Cargo.toml").read_text()
    profiles = {"dev", "release", "test", "bench"} | set(re.findall(r"^\[profile\.([\w-]+)\]", cargo_toml, re.M))
    flags: set[str] = set()
    stack = list(trees.values())
    while stack:
        node = stack.pop()
        flags.update(node.options)
        stack.extend(node.commands.values())
    for script in (p for p in source_files(root) if p.suffix == ".sh"):
        flags.update(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", script.read_text(errors="replace")))
    return Facts(
        root=root, trees=trees, stale_pending=stale, help_defaults=help_defaults,
        cli_vars=cli_vars, read_vars=read_vars(root), packages=packages, profiles=profiles,
        flags=flags,
    )


# ---------------------------------------------------------------------------------------------
# Markdown.


@dataclasses.dataclass
class Block:
    lang: str
    first_line: int
    lines: list[str]


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[Block]]:
    """Prose lines (number, text) and fenced code blocks."""
    prose, blocks = [], []
    block = None
    fence = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE_RE.match(line)
        if block is None and m:
            fence = m.group(2)
            block = Block(lang=m.group(3).lower(), first_line=n + 1, lines=[])
        elif block is not None and line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
            blocks.append(block)
            block = None
        elif block is not None:
            block.lines.append(line)
        else:
            prose.append((n, line))
    return prose, blocks


def slugify(heading: str) -> str:
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def anchors(text: str) -> set[str]:
    prose, _ = split_markdown(text)
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = HEADING_RE.match(line)
        if not m:
            continue
        slug = slugify(m.group(2))
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        out.add(slug)
    return out


def strip_comment(line: str) -> str:
    """The line without a shell comment (a `#` at a word start, outside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: words, split at ; && || | & ( ) and $( )."""
    lexer = shlex.shlex(strip_comment(line), posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    commands, current, skip_next = [], [], False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok and set(tok) <= set("<>"):
            skip_next = True  # a redirection's file
            continue
        if tok and set(tok) <= set(";&|()"):
            if current:
                commands.append(current)
            current = []
            continue
        if tok.endswith("$") and "=" in tok:  # NAME=$( ... ): the assignment, then the command
            tok = tok[:-1]
        current.append(tok)
    if current:
        commands.append(current)
    # A line ending in 2>&1 leaves a bare number behind.
    return [c for c in commands if not re.fullmatch(r"\d+", c[0])]


def command_lines(block: Block) -> list[tuple[int, str]]:
    """The shell command lines of a block, continuation lines joined."""
    out: list[tuple[int, str]] = []
    shell = block.lang in ("bash", "sh", "shell", "zsh")
    pending, start = "", 0
    for offset, line in enumerate(block.lines):
        n = block.first_line + offset
        if not pending:
            if block.lang in ("console", "text", "") and not line.startswith("$ "):
                continue
            if not shell and not line.startswith("$ "):
                continue
            if line.startswith("$ "):
                line = line[2:]
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


# ---------------------------------------------------------------------------------------------
# Checks.


class Checker:
    def __init__(self, facts: Facts, doc: Path, text: str):
        self.facts = facts
        self.doc = doc
        self.text = text
        self.rel = doc.relative_to(facts.root) if doc.is_relative_to(facts.root) else doc
        self.problems: list[str] = []
        self.local_vars: set[str] = set()

    def problem(self, line: int, message: str) -> None:
        self.problems.append(f"{self.rel}:{line}: {message}")

    def run(self) -> list[str]:
        prose, blocks = split_markdown(self.text)
        commands: list[tuple[int, list[str], bool]] = []  # line, words, from a code block
        for block in blocks:
            for n, line in command_lines(block):
                for words in simple_commands(line):
                    commands.append((n, words, True))
        for n, line in prose:
            for m in CODE_SPAN_RE.finditer(line):
                span = m.group(2).strip()
                flag = re.match(r"^(--?[a-zA-Z][\w-]*)(?:[ =]|$)", span)
                if flag and flag.group(1) not in self.facts.flags | EXTERNAL_FLAGS:
                    self.problem(n, f"no binary or script has the option {flag.group(1)}")
                for words in simple_commands(span):
                    commands.append((n, words, False))
        # Shell variables the page's own commands set (TOKEN=$(…)) are the reader's.
        for _, words, _ in commands:
            if all("=" in w and re.match(r"^[A-Za-z_]\w*=", w) for w in words):
                self.local_vars.update(w.split("=", 1)[0] for w in words)
        for n, words, in_block in commands:
            self.check_command(n, words, in_block)
        for n, line in prose:
            self.check_links(n, line)
        all_lines = list(prose) + [
            (b.first_line + i, l) for b in blocks if b.lang not in ("json",) for i, l in enumerate(b.lines)
        ]
        for n, line in all_lines:
            self.check_vars(n, line)
            self.check_paths(n, line)
            if WORK_LOG_RE.search(line):
                self.problem(n, f"reads as a work log: {WORK_LOG_RE.search(line).group(0)!r}")
            if re.search(r"\.\./shared|DESIGN(?:\.md| §)", line):
                self.problem(n, "refers to a design file outside the repository")
        return self.problems

    # -- commands

    def check_command(self, n: int, words: list[str], in_block: bool) -> None:
        """One simple command. In a code block every command must be known; in an inline
        code span only what looks like one of ours (a binary, cargo, a script) is checked."""
        env = []
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            env.append(words[0].split("=", 1)[0])
            words = words[1:]
        while words and words[0] in ("bash", "sh", "exec", "sudo", "env"):
            words = words[1:]
        if not words:
            return
        head = words[0]
        name = re.sub(r"^(?:\./)?target/(?:debug|release|profiling)/", "", head)
        script = "/" in head and "://" not in head and not head.startswith(("/", "~", "$", ".local/", "target/"))
        if not in_block and script:
            script = head.endswith(".sh") or head.removeprefix("./") == ".ci/run"
        if name in self.facts.trees:
            self.check_invocation(n, self.facts.trees[name], words[1:])
        elif head == "cargo":
            self.check_cargo(n, words[1:])
        elif script:
            self.check_script(n, head.removeprefix("./"), words[1:])
        elif not in_block:
            return
        elif head not in EXTERNAL_COMMANDS and not head.startswith("$"):
            self.problem(n, f"unknown command {head!r} (not a binary, a script or an allowed tool)")
        for var in env:  # names with an underscore are checked with every other word
            if re.fullmatch(r"[A-Z][A-Z0-9]*", var) and not self.facts.known_var(var):
                self.problem(n, f"unknown environment variable {var}")

    def check_invocation(self, n: int, node: Command, args: list[str]) -> None:
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                return
            if re.match(r"^<.*>$|.*…|^\$", arg):
                if arg.startswith("<") and node.commands:
                    return  # a placeholder for a subcommand: nothing more to check
                continue
            if arg.startswith("-") and arg != "-":
                flag = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
                if flag not in node.options:
                    self.problem(n, f"`{' '.join(node.path)}` has no option {flag}")
                    return  # whether it takes a value is unknown: the rest cannot be read
                elif node.options[flag] and "=" not in arg and (arg.startswith("--") or len(arg) == 2):
                    i += 1
                continue
            if node.commands:
                if arg in node.commands:
                    node = node.commands[arg]
                elif arg != "help":
                    self.problem(n, f"`{' '.join(node.path)}` has no subcommand {arg!r}")
                    return

    def check_cargo(self, n: int, args: list[str]) -> None:
        packages: list[str] = []
        after: list[str] = []
        if "--" in args:
            after = args[args.index("--") + 1:]
            args = args[: args.index("--")]
        i = 0
        while i < len(args):
            arg, value = args[i], args[i + 1] if i + 1 < len(args) else ""
            i += 1
            if arg in ("-p", "--package"):
                i += 1
                packages.append(value)
                if value not in self.facts.packages:
                    self.problem(n, f"no cargo package {value!r}")
            elif arg == "--test":
                i += 1
                scope = [self.facts.packages[p] for p in packages if p in self.facts.packages] or list(
                    self.facts.packages.values()
                )
                if not any(value in p["tests"] for p in scope):
                    self.problem(n, f"no test target {value!r} in {packages or 'the workspace'}")
            elif arg == "--bin":
                i += 1
                if not any(value in p["bins"] for p in self.facts.packages.values()):
                    self.problem(n, f"no binary target {value!r}")
            elif arg == "--profile":
                i += 1
                if value not in self.facts.profiles:
                    self.problem(n, f"no cargo profile {value!r}")
            elif arg == "--path":
                i += 1
                if not (self.facts.root / value).is_dir():
                    self.problem(n, f"no directory {value!r}")
        if args and args[0] == "run" and packages and after:
            bins = self.facts.packages.get(packages[0], {}).get("bins", set())
            for b in bins:
                if b in self.facts.trees:
                    self.check_invocation(n, self.facts.trees[b], after)

    def check_script(self, n: int, path: str, args: list[str]) -> None:
        file = self.facts.root / path
        if not file.is_file():
            if not PATH_RE.fullmatch(path):  # those are reported by check_paths
                self.problem(n, f"no script {path}")
            return
        if path in PASS_THROUGH_SCRIPTS:
            return
        text = file.read_text(errors="replace")
        for j, arg in enumerate(args):
            if arg.startswith("-"):
                flag = arg.split("=", 1)[0]
                if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(flag), text):
                    self.problem(n, f"{path} does not handle {flag}")
            elif j == 0 and re.fullmatch(r"[a-z][\w-]*", arg) and not re.search(
                r"(?<![\w-])%s(?![\w-])" % re.escape(arg), text
            ):
                self.problem(n, f"{path} does not handle {arg!r}")

    # -- links, variables, paths

    def check_links(self, n: int, line: str) -> None:
        for m in LINK_RE.finditer(CODE_SPAN_RE.sub("", line)):
            target = m.group(2)
            if re.match(r"^[a-z][\w+.-]*:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = (self.doc.parent / path).resolve() if path else self.doc
            if not file.is_relative_to(self.facts.root.resolve()):
                self.problem(n, f"link outside the repository: {target}")
                continue
            if path and not file.exists():
                self.problem(n, f"link to a missing file: {target}")
                continue
            if anchor:
                text = self.text if file == self.doc else file.read_text() if file.suffix == ".md" else ""
                if anchor not in anchors(text):
                    self.problem(n, f"link to a missing anchor: {target}")

    def check_vars(self, n: int, line: str) -> None:
        line = LINK_RE.sub(lambda m: m.group(1), line)
        line = re.sub(r"https?://\S+", "", line)
        for m in WILDCARD_RE.finditer(line):
            if not any(v.startswith(m.group(1) + "_") for v in self.facts.help_defaults):
                self.problem(n, f"no variable matches {m.group(1)}_*")
        for m in VAR_RE.finditer(line):
            name = m.group(1)
            if not (self.facts.known_var(name) or name in self.local_vars or name in PLACEHOLDERS):
                self.problem(n, f"unknown environment variable {name}")

    def check_paths(self, n: int, line: str) -> None:
        line = re.sub(r"https?://\S+", "", line)
        for m in PATH_RE.finditer(line):
            path = m.group(1).rstrip(".,:;")
            if re.search(r"[<{*…]", line[m.end(1): m.end(1) + 1]) or path.startswith(GENERATED):
                continue
            if not (self.facts.root / path).exists():
                self.problem(n, f"no such file or directory in the repository: {path}")


def check_markdown(facts: Facts, doc: Path, text: str | None = None) -> list[str]:
    return Checker(facts, doc, doc.read_text() if text is None else text).run()


def doc_pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


# ---------------------------------------------------------------------------------------------
# The configuration page's tables.


def config_tables(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(header, [(variable, default cell)]) of each table whose first column names variables."""
    tables = []
    current = None
    for line in text.splitlines():
        if re.match(r"^\| (CLI )?variable \|", line):
            current = (line.split("|")[1].strip(), [])
            tables.append(current)
            continue
        if not line.startswith("|"):
            current = None
            continue
        if current is None or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            current[1].append((name, cells[1] if len(cells) > 1 else ""))
    return tables
