#!/usr/bin/env bash
# The shipped modules (`make build`): each target/wasm/<module>.wasm is
# Binaryen's wasm-opt -Oz of cargo's target/wasm32-wasip1/release/<module>.wasm.
# target/wasm/ is a directory cargo never writes, so a later `cargo build`
# (which re-links cargo's own copy) cannot put an unoptimised module where the
# samples, the tests, the OCI images and the load tests read it. Measured
# (bench/README.md): 10-14% smaller, no measurable CPU cost per request,
# where rustc's opt-level "z" was 15% smaller but cost 0.3-1 floor more.
# Without wasm-opt (scripts/setup.sh installs binaryen) the modules are
# copied as cargo built them, and this says so. `--as-built` copies the
# modules named after it unchanged (the load test's no-op and probe modules,
# measured as built).
set -euo pipefail
cd "$(dirname "$0")/.."
src_dir=target/wasm32-wasip1/release
out_dir=target/wasm
mkdir -p "$out_dir"
optimise=1
if [ "${1:-}" = "--as-built" ]; then
    optimise=0
    shift
elif ! command -v wasm-opt >/dev/null; then
    echo "wasm-opt: not installed, modules copied as cargo built them"
    optimise=0
fi
for name in "$@"; do
    src="$src_dir/$name.wasm" out="$out_dir/$name.wasm"
    [ -f "$src" ] || { echo "wasm-opt: $src missing" >&2; exit 1; }
    # Only when cargo rebuilt it since the last run (same bytes in, same out).
    if [ -f "$out" ] && [ "$out" -nt "$src" ]; then
        continue
    fi
    if [ "$optimise" = 1 ]; then
        wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
            --enable-mutable-globals "$src" -o "$out.tmp"
    else
        cp "$src" "$out.tmp"
    fi
    mv "$out.tmp" "$out"
done
