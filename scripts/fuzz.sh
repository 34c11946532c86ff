#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) with
# libFuzzer, starting from and adding to its corpus in fuzz/corpus/<target>/
# (only inputs that widen coverage are kept: -merge=1). Prints a table of
# executions per target. A crash stops the run and leaves the input in
# fuzz/artifacts/<target>/. `make test` replays the corpora on stable Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^filters-fuzz$')
results=()
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    work=$(mktemp -d)
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    echo "fuzz: $t for ${seconds}s"
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || {
        tail -n 30 "$log"
        echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)"
        exit 1
    }
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    # Keep what widened coverage, merged into the committed corpus.
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" -- -merge=1 "fuzz/corpus/$t" "$work" >>"$log" 2>&1
    rm -rf "$work"
    results+=("| \`$t\` | ${runs:-?} | $(find "fuzz/corpus/$t" -type f | wc -l) |")
done
echo
echo "| Target | Executions in ${seconds}s | Corpus files |"
echo "| --- | --- | --- |"
printf '%s\n' "${results[@]}"
