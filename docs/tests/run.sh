#!/usr/bin/env bash
# The docs tests: every command, flag, variable, file and link that README.md and docs/ name
# exists; the configuration tables match the binaries' defaults; compose.yaml is valid.
# They run in the chart tests' virtualenv (charts/tests/requirements.txt) and use the
# workspace's debug binaries' --help (built first if missing). No network, no Docker.
#
#   bash docs/tests/run.sh            # all of them
#   bash docs/tests/run.sh -k compose # arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTEST_SUITE=docs/tests exec bash charts/tests/run.sh "$@"
