#!/usr/bin/env bash
# Installs axe-core (the accessibility rules the web page test runs in the browser) from npm
# into .local/axe, a test-only directory: the API never serves it. Idempotent; prints the path
# of axe.min.js. api/tests/it/web.rs calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=4.10.3
dir=.local/axe
js="$dir/node_modules/axe-core/axe.min.js"
if [ -f "$js" ] && grep -q "\"version\": \"$VERSION\"" "$dir/node_modules/axe-core/package.json"; then
    echo "$PWD/$js"
    exit 0
fi
if ! command -v npm >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
mkdir -p "$dir"
npm install --silent --no-audit --no-fund --prefix "$dir" "axe-core@$VERSION" >&2
test -f "$js"
echo "$PWD/$js"
