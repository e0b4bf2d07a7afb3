#!/usr/bin/env bash
# Installs the cargo tools CI runs besides cargo's own, when missing or at another version,
# into ~/.cargo/bin (cached between runs). Pinned: a new release may change what passes.
set -euo pipefail

need() { # need cargo-TOOL VERSION: `cargo install` it unless `cargo TOOL` is that version
  if [[ "$(cargo "${1#cargo-}" --version 2>/dev/null)" != "$1 $2" ]]; then
    cargo install "$1" --locked --version "$2"
  fi
}

need cargo-deny 0.20.2
