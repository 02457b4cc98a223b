#!/usr/bin/env bash
# run-latency: the wall time of `kiln run --rm IMAGE true` and of `docker run --rm IMAGE true`
# on the same image (kbench's busybox base, built by each tool from
# ../shared/bench/gen-workloads.sh), measured in one sitting, alternating the two tools so
# that both see the same machine load. Prints median, minimum and 90th percentile in ms.
#
#   benches/run-latency.sh [RUNS]          (from the repository root; RUNS defaults to 50)
#
# KILN_BIN (default target/release/kiln) and DOCKER (default /usr/bin/docker) pick the
# binaries; docker is skipped with a note when its daemon does not answer.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
kiln=${KILN_BIN:-target/release/kiln}
docker=${DOCKER:-/usr/bin/docker}
[[ -x $kiln ]] || { echo "error: $kiln is missing (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d /tmp/kiln-run-latency.XXXXXX)
trap 'rm -rf "$work"' EXIT
../shared/bench/gen-workloads.sh "$work" base >/dev/null 2>&1
ctx=$work/base/ctx
store=$work/store
"$kiln" build -q --root "$store" -t kiln-run-latency:1 "$ctx" >/dev/null
use_docker=0
if "$docker" info >/dev/null 2>&1; then
    DOCKER_BUILDKIT=1 "$docker" build -q -t kiln-run-latency:1 "$ctx" >/dev/null
    use_docker=1
else
    echo "note: docker does not answer; timing kiln alone" >&2
fi

# Milliseconds, from bash's own clock (no process started for the timing itself).
now() { local t=$EPOCHREALTIME; echo "${t/./}"; }
time_one() {
    local start end
    start=$(now)
    "$@" >/dev/null
    end=$(now)
    echo "scale=3; ($end - $start) / 1000" | bc
}

for _ in 1 2 3; do   # warm the page cache and dockerd
    "$kiln" run --root "$store" --rm kiln-run-latency:1 true
    (( use_docker )) && "$docker" run --rm kiln-run-latency:1 true
done
: > "$work/kiln.ms"
: > "$work/docker.ms"
for _ in $(seq "$runs"); do
    time_one "$kiln" run --root "$store" --rm kiln-run-latency:1 true >> "$work/kiln.ms"
    (( use_docker )) && time_one "$docker" run --rm kiln-run-latency:1 true >> "$work/docker.ms"
done

stats() {
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-\t-\t-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = v[int(NR * 0.9 + 0.5) > 0 ? int(NR * 0.9 + 0.5) : 1]
        printf "%.1f\t%.1f\t%.1f\n", m, v[1], p }'
}
printf 'tool\truns\tmedian ms\tmin ms\tp90 ms\n'
printf 'kiln run --rm\t%s\t%s\n' "$runs" "$(stats "$work/kiln.ms")"
if (( use_docker )); then
    printf 'docker run --rm\t%s\t%s\n' "$runs" "$(stats "$work/docker.ms")"
    k=$(stats "$work/kiln.ms" | cut -f1)
    d=$(stats "$work/docker.ms" | cut -f1)
    echo "docker / kiln (median): $(echo "scale=1; $d / $k" | bc)x"
    "$docker" rmi kiln-run-latency:1 >/dev/null 2>&1 || true
fi
