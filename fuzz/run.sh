#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz (libFuzzer, ASan),
# starting from the committed corpus; new inputs go to fuzz/corpus/<target>, crashes to
# fuzz/artifacts/<target>. Prints each target's executions.
#
#   fuzz/run.sh 300                 five minutes per target
#   fuzz/run.sh 60 read_validate    one target
#
# cargo-fuzz needs nightly's -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them. Installs cargo-fuzz from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
shift || true
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "==> $t for ${seconds}s"
  log=$(mktemp)
  # -rss_limit_mb: the reader caps records at 1 MiB, so anything near this is a bug.
  if ! cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=1024 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "==> $t: FAILED (reproducer in fuzz/artifacts/$t)"
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' "$log" || tail -n 5 "$log"
  rm -f "$log"
done
