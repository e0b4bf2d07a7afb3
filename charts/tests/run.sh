#!/usr/bin/env bash
# The chart tests: charts/bulk-import rendered and linted with the real Helm library, every
# manifest validated against kind-config.yaml's Kubernetes version, RBAC exactness, pod security,
# configuration contract, values schema, kind wiring, Dockerfile. No cluster needed.
#
#   bash charts/tests/run.sh              # installs requirements.txt if needed, runs pytest
#   bash charts/tests/run.sh -k rbac -v   # arguments go to pytest
#
# Dependencies live in a virtualenv (.local/chart-tests-venv, or $CHART_TESTS_VENV), reinstalled
# whenever requirements.txt changes.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TESTS="$REPO/charts/tests"
REQUIREMENTS="$TESTS/requirements.txt"
VENV="${CHART_TESTS_VENV:-$REPO/.local/chart-tests-venv}"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

log() { echo "chart tests: $*"; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { log "error: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }

want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing $(basename "$REQUIREMENTS") into $VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      rm -rf "$VENV"
      "$PYTHON" -m venv "$VENV"
    else
      log "error: '$PYTHON -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" >"$STAMP"
fi

cd "$REPO"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the work tree
# Another suite shares this environment: docs/tests/run.sh sets PYTEST_SUITE=docs/tests.
exec "$VENV/bin/python" -m pytest "${PYTEST_SUITE:-charts/tests}" -q -rs -p no:cacheprovider "$@"
