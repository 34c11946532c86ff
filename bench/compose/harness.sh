#!/usr/bin/env bash
# The compose harness on a machine of its own: a private Docker daemon that
# leaves the host's network alone, images built locally when no registry
# answers, and bench/loadtest.py driving the containers through
# docker-compose.
#
#   bench/compose/harness.sh run [loadtest args]   start, images, loadtest --compose, stop
#   bench/compose/harness.sh start | images | stop | clean | env
#
# The daemon: `dockerd --iptables=false --ip6tables=false --bridge=none` with
# its data root, exec root, pid file and socket under DOCKER_DIR
# (/var/tmp/resilience-filters-docker), so it never touches the host's
# iptables, bridges, or any other Docker daemon, socket or client on the
# machine: every command here uses /usr/bin/docker (Debian's docker.io) and
# DOCKER_HOST=unix://$DOCKER_DIR/docker.sock. Containers use host networking.
# `stop` stops the daemon and removes the containers it ran; the images stay
# in DOCKER_DIR for the next run (`clean` removes them too).
set -euo pipefail
cd "$(dirname "$0")/../.."

DOCKER_DIR="${DOCKER_DIR:-/var/tmp/resilience-filters-docker}"
DOCKER=/usr/bin/docker
export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
export COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0
COMPOSE=(docker-compose -f bench/compose/docker-compose.yml -p resilience-bench)
export DEBIAN_IMAGE="${DEBIAN_IMAGE:-debian:bookworm-slim}"
export ENVOY_IMAGE="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}"
export REDIS_IMAGE="${REDIS_IMAGE:-redis:7}"
# Envoy on core 0, the rest on core 1 (one core: everything on 0).
if [ "$(nproc)" -gt 1 ]; then export ENVOY_CPUSET="${ENVOY_CPUSET:-0}" LOAD_CPUSET="${LOAD_CPUSET:-1}"
else export ENVOY_CPUSET=0 LOAD_CPUSET=0; fi

log() { echo "harness: $*" >&2; }

install() {
    local missing=()
    [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

running() { "$DOCKER" version >/dev/null 2>&1; }

start() {
    install
    if running; then return; fi
    mkdir -p "$DOCKER_DIR"
    log "starting a private dockerd (socket $DOCKER_DIR/docker.sock)"
    # setsid: the daemon outlives this script's process group until `stop`.
    setsid /usr/sbin/dockerd --iptables=false --ip6tables=false --bridge=none \
        --data-root "$DOCKER_DIR/data" --exec-root "$DOCKER_DIR/exec" \
        --pidfile "$DOCKER_DIR/dockerd.pid" -H "$DOCKER_HOST" \
        >"$DOCKER_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 120); do
        running && return
        sleep 0.5
    done
    tail -20 "$DOCKER_DIR/dockerd.log" >&2
    stop
    if [ "${SMOKE:-0}" = 1 ]; then
        # The smoke run in `make test` on a machine where no daemon can run
        # (no cgroups, no privileges): said, not failed, like the nginx tests
        # without nginx. `make compose-loadtest` fails instead.
        echo "SKIPPED: the compose smoke run: a Docker daemon cannot run here ($(tail -1 "$DOCKER_DIR/dockerd.log"))"
        exit 0
    fi
    log "dockerd did not start"
    exit 1
}

have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The engine image's tag in its layout (the crate's version).
engine_tag() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' target/oci/ratelimit-engine/index.json; }

# A registry's image if one answers (20 s at most), else false.
pull() { timeout 20 "$DOCKER" pull -q "$1" >/dev/null 2>&1; }

images() {
    start
    if ! have "$DEBIAN_IMAGE" && ! pull "$DEBIAN_IMAGE"; then
        log "no registry: building $DEBIAN_IMAGE with debootstrap (about 90 s)"
        local root="$DOCKER_DIR/rootfs"
        rm -rf "$root"
        debootstrap --variant=minbase bookworm "$root" >"$DOCKER_DIR/debootstrap.log" 2>&1 \
            || { tail -20 "$DOCKER_DIR/debootstrap.log" >&2; exit 1; }
        tar -C "$root" -c . | "$DOCKER" import - "$DEBIAN_IMAGE" >/dev/null
        rm -rf "$root"
    fi
    for image in "$ENVOY_IMAGE:Dockerfile.envoy" "$REDIS_IMAGE:Dockerfile.redis"; do
        local name="${image%:*}" file="${image##*:}"
        if ! have "$name" && ! pull "$name"; then
            log "no registry: building $name from bench/compose/$file"
            # Its own context: the Dockerfile and the host's extra CA certificates.
            local ctx="$DOCKER_DIR/context"
            rm -rf "$ctx" && mkdir -p "$ctx/host-ca"
            cp "bench/compose/$file" "$ctx/Dockerfile"
            cp /usr/local/share/ca-certificates/*.crt "$ctx/host-ca/" 2>/dev/null || true
            "$DOCKER" build -q --network host --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "$name" "$ctx" >/dev/null
        fi
    done
    for f in target/release/demo-backend target/oci/ratelimit-engine/index.json target/wasm/bundle.wasm; do
        [ -e "$f" ] || { log "$f is missing: run \`make build\` and \`make oci\` first"; exit 1; }
    done
    # The engine is the image `make oci` ships (/bin/ratelimit, static,
    # nonroot), loaded as it is: the harness runs what users deploy.
    log "loading the engine's OCI image (target/oci/ratelimit-engine)"
    skopeo copy --quiet "oci:target/oci/ratelimit-engine:$(engine_tag)" \
        "docker-daemon:resilience-filters/ratelimit-engine:local" --dest-daemon-host "$DOCKER_HOST" >/dev/null
    log "building the harness's images (backend, loadgen, prometheus)"
    "${COMPOSE[@]}" build -q backend-a loadgen prometheus >/dev/null
}

stop() {
    if running; then
        "${COMPOSE[@]}" down --remove-orphans >/dev/null 2>&1 || true
        local left
        left="$("$DOCKER" ps -aq --filter label=com.docker.compose.project=resilience-bench)"
        [ -z "$left" ] || "$DOCKER" rm -f $left >/dev/null 2>&1 || true
    fi
    if [ -f "$DOCKER_DIR/dockerd.pid" ]; then
        local pid
        pid="$(cat "$DOCKER_DIR/dockerd.pid")"
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$DOCKER_DIR/dockerd.pid"
        log "dockerd stopped"
    fi
    # What the daemon leaves mounted (its default network namespace).
    { grep -F " $DOCKER_DIR/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" || true; done
}

case "${1:-}" in
    start) start ;;
    images) images ;;
    stop) stop ;;
    clean) stop; rm -rf "$DOCKER_DIR"; log "removed $DOCKER_DIR" ;;
    env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    run)
        shift
        [ "${1:-}" = "--smoke" ] && SMOKE=1
        started=0
        running || started=1
        [ "$started" = 1 ] && trap stop EXIT
        images
        python3 bench/loadtest.py --compose "$@"
        ;;
    *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
