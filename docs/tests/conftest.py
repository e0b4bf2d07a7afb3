"""Fixtures of the docs tests: what exists in the repository (binaries' help, variables,
cargo targets), gathered once per session."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import docscheck  # noqa: E402


@pytest.fixture(scope="session")
def facts() -> docscheck.Facts:
    return docscheck.gather()
