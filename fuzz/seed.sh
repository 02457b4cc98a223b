#!/usr/bin/env bash
# Seeds fuzz/corpus/<target> from the conformance data (`fuzz/seed.sh <target> <conformance dir>`).
# Every seed is one file named after its content's hash, so re-running adds nothing twice.
set -euo pipefail

target=$1
conformance=$2
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/$target"
mkdir -p "$corpus"

# add: one seed from standard input.
add() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    mv "$tmp" "$corpus/seed-$(sha1sum "$tmp" | cut -c1-16)"
}

case "$target" in
parse)
    find "$conformance/buildkit-parser" "$here/../fixtures" -type f -name Dockerfile -print0 |
        while IFS= read -r -d '' file; do add <"$file"; done
    ;;
words)
    # Each input gets a leading options byte (see fuzz_targets/words.rs); 0 and 15 cover
    # all options off and all on.
    {
        sed -n 's/^[AUW]|\(.*\)|.*$/\1/p' "$conformance/buildkit-shell/envVarTest" | sed 's/ *$//'
        sed -n 's/^\(.*\) | .*$/\1/p' "$conformance/buildkit-shell/wordsTest"
        jq -r '.input' "$conformance/buildkit-shell/process-word-with-matches.jsonl"
    } | while IFS= read -r line; do
        printf '\x00%s' "$line" | add
        printf '\x0f%s' "$line" | add
    done
    ;;
*)
    echo "unknown target: $target (expected parse or words)" >&2
    exit 2
    ;;
esac
echo "seeded $(find "$corpus" -name 'seed-*' | wc -l) inputs into $corpus" >&2
