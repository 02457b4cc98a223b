#!/usr/bin/env bash
# Runs one fuzz target for a while: `fuzz/run.sh <parse|words> [seconds] [extra libFuzzer flags…]`.
#
# Installs cargo-fuzz when it is missing, seeds fuzz/corpus/<target> from the peer conformance
# data and our fixtures (the corpus is not committed), then runs libFuzzer with big inputs
# allowed and a per-input timeout, so a hang shows up as a crash artifact in
# fuzz/artifacts/<target>/. cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 unlocks them
# on the stable toolchain this machine has.
set -euo pipefail

target=${1:?usage: fuzz/run.sh <parse|words> [seconds] [libFuzzer flags…]}
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
conformance=${CONFORMANCE:-$repo/../shared/conformance}

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

"$here/seed.sh" "$target" "$conformance"

cd "$repo"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$here" "$target" "$here/corpus/$target" -- \
    -max_total_time="$seconds" \
    -max_len=65536 \
    -timeout=10 \
    -rss_limit_mb=4096 \
    -print_final_stats=1 \
    -dict="$here/$target.dict" \
    "$@"
