#!/usr/bin/env bash
# Installs the cargo tools CI runs besides cargo's own, when missing or at another version,
# into ~/.cargo/bin (cached between runs). Pinned: a new release may change what passes.
set -euo pipefail

need() { # need BINARY VERSION: `cargo install BINARY --version VERSION` unless it is there
  if ! "$1" --version 2>/dev/null | grep -qxF "$1 $2"; then
    cargo install "$1" --locked --version "$2"
  fi
}

need cargo-deny 0.20.2
