#!/usr/bin/env bash
# Installs the programs the tests run besides the project's own binaries and services, with
# apt-get when one is missing: tmux and script (the CLI's interactive prompt tests), pgrep and
# kill (finding and signalling importer processes), runuser (a second Unix user for the
# permission tests). Idempotent; scripts/test.sh calls it before the Rust tests.
set -euo pipefail

# command -> the Debian package that provides it
declare -A PACKAGE=(
  [tmux]=tmux
  [script]=bsdutils
  [pgrep]=procps
  [kill]=procps
  [runuser]=util-linux
)

missing=()
for cmd in "${!PACKAGE[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${PACKAGE[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# shellcheck disable=SC2207
pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
echo "test-tools: installing ${pkgs[*]} with apt-get"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
for cmd in "${!PACKAGE[@]}"; do
  command -v "$cmd" >/dev/null || { echo "test-tools: $cmd still missing" >&2; exit 1; }
done
