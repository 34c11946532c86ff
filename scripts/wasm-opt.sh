#!/usr/bin/env bash
# Shrinks the shipped modules with Binaryen's wasm-opt -Oz (`make build`):
# each target/wasm32-wasip1/release/<module>.wasm is rewritten from cargo's
# own output in deps/, so running it twice gives the same bytes. Measured
# (bench/README.md): 10-14% smaller, no measurable CPU cost per request,
# where rustc's opt-level "z" was 15% smaller but cost 0.3-1 floor more.
# Without wasm-opt (scripts/setup.sh installs binaryen), the modules stay as
# cargo built them, and this says so.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/wasm32-wasip1/release
if ! command -v wasm-opt >/dev/null; then
    echo "wasm-opt: not installed, modules left as cargo built them"
    exit 0
fi
for name in "$@"; do
    src="$dir/deps/$name.wasm" out="$dir/$name.wasm" stamp="$dir/$name.wasm-opt"
    [ -f "$src" ] || { echo "wasm-opt: $src missing" >&2; exit 1; }
    # Only when cargo rebuilt it since the last run.
    if [ -f "$stamp" ] && [ "$stamp" -nt "$src" ] && [ -f "$out" ]; then
        continue
    fi
    wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
        --enable-mutable-globals "$src" -o "$out.tmp"
    mv "$out.tmp" "$out"
    touch "$stamp"
done
