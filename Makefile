# Proxy-Wasm resilience filters. `make run` and `make test` are the two
# commands a new machine needs; both install what they use (scripts/setup.sh).

CARGO      ?= cargo
WASM_TARGET = wasm32-wasip1
FILTERS     = rate-limit circuit-breaker retry sticky-session bundle
ENVOY      ?= .venv/bin/envoy
# nginx with ngx_wasm_module for the real-nginx tests: the one beside the
# clone (../shared/nginx-wasm/nginx) unless NGINX_WASM_BIN says otherwise;
# without either, those tests print SKIPPED.
NGINX_WASM_BIN ?= $(abspath $(wildcard ../shared/nginx-wasm/nginx))
export NGINX_WASM_BIN
# Istio's and Envoy Gateway's CRDs, for the offline manifest checks
# (tools/packaging/tests/deploy.rs); without them those print SKIPPED.
CRDS_DIR ?= $(abspath $(wildcard ../shared/crds))
export CRDS_DIR

.PHONY: setup build run test unit integration lint validate-configs bench loadtest fuzz clean schemas oci oci-push compose-loadtest compose-smoke

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS))
	@scripts/wasm-opt.sh rate_limit circuit_breaker retry sticky_session bundle
	$(CARGO) build --release -p demo-backend -p ratelimit-engine
	@# The engine statically linked, for its image (`make oci`, tests/engine_dropin.rs).
	$(CARGO) build --release --target x86_64-unknown-linux-musl -p ratelimit-engine
	@# The native Envoy module (filters/native): target/native/libresilience.so.
	$(CARGO) build --profile native -p filters-native
	@# Its test-only twin that panics on demand (tests/native.rs).
	$(CARGO) build --profile native -p filters-native --features panic-on-demand --target-dir target/native-test
	@# A test-only variant that traps on demand (tests/rate_limit.rs, VM failure).
	$(CARGO) build --release --target $(WASM_TARGET) -p rate-limit --features trap-on-demand --target-dir target/trap-test

# CONFIG=<name> runs envoy/<name>.yaml instead of the rate limiter.
run: build
	@CONFIG=$(CONFIG) scripts/run.sh

# Everything: lints, core unit tests, every sample config through
# `envoy --mode validate`, the integration tests in real Envoy, and the
# compose harness's smoke run in containers.
test: build lint unit validate-configs integration compose-smoke

unit: setup
	@# The alert rules: syntax, and their unit tests (each fires, each near miss stays silent).
	cd deploy/prometheus && promtool check rules alerts.yaml rules.yaml && promtool test rules alerts.test.yaml
	$(CARGO) test -p rls-protocol -p filters-core -p filters-host -p filters-native -p ratelimit-engine -p traefik-convert -p packaging --features filters-native/fake-envoy

validate-configs: build
	$(CARGO) test -p integration-tests --test configs

integration: build
	$(CARGO) test -p integration-tests --test rate_limit
	$(CARGO) test -p integration-tests --test token_limit
	$(CARGO) test -p integration-tests --test global_rate_limit -- --nocapture
	$(CARGO) test -p integration-tests --test engine_compat
	$(CARGO) test -p integration-tests --test engine_hostile
	$(CARGO) test -p integration-tests --test engine_dropin
	$(CARGO) test -p integration-tests --test engine_gateway
	$(CARGO) test -p integration-tests --test config_push -- --nocapture
	$(CARGO) test -p integration-tests --test observability
	$(CARGO) test -p integration-tests --test traces
	$(CARGO) test -p integration-tests --test redis_cluster -- --nocapture
	$(CARGO) test -p integration-tests --test circuit_breaker
	$(CARGO) test -p integration-tests --test retry
	$(CARGO) test -p integration-tests --test sticky_session
	$(CARGO) test -p integration-tests --test sticky_eds -- --nocapture
	$(CARGO) test -p integration-tests --test bundle -- --nocapture
	$(CARGO) test -p integration-tests --test native
	$(CARGO) test -p integration-tests --test traefik -- --nocapture
	@# OCI images through a registry into Envoy, and Envoy's remote loading.
	$(CARGO) test -p integration-tests --test ingress -- --nocapture
	@# Real nginx (NGINX_WASM_BIN, above); prints SKIPPED when there is none.
	$(CARGO) test -p integration-tests --test nginx -- --nocapture --test-threads 1

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS)) -p filters-host -p noop-filter -p compute-probe -- -D warnings
	$(CARGO) clippy -p filters-core -p demo-backend -- -D warnings
	$(CARGO) clippy -p filters-native --all-targets -- -D warnings
	$(CARGO) clippy -p filters-native --all-targets --features fake-envoy -- -D warnings
	$(CARGO) clippy -p filters-core --features schema,testing -- -D warnings
	$(CARGO) clippy -p rls-protocol -p ratelimit-engine -p traefik-convert -p packaging --all-targets -- -D warnings
	$(CARGO) clippy -p integration-tests --tests -- -D warnings
	@# No function in filters/ longer than 80 lines.
	python3 scripts/long-functions.py filters
	@# No import cycle between filters/core's modules.
	python3 scripts/import-cycles.py

# schemas/<module>.schema.json from the types that parse each configuration
# and the filters' README tables (`make test` fails when they are stale).
schemas:
	$(CARGO) run -q -p packaging -- schemas

# Each module as OCI image layouts in target/oci/<module>/ (tags <version>,
# the "compat" image, and <version>-oci, the Wasm artifact); see deploy/README.md.
OCI_SOURCE ?= $(shell git remote get-url origin 2>/dev/null)
oci: build
	$(CARGO) run -q -p packaging -- oci --source "$(OCI_SOURCE)"

# Pushes every image of `make oci` to REGISTRY (e.g. ghcr.io/you/filters) with
# skopeo, keeping their digests; SKOPEO_FLAGS for credentials or
# --dest-tls-verify=false.
oci-push: oci
	@test -n "$(REGISTRY)" || { echo "usage: make oci-push REGISTRY=host/path"; exit 2; }
	@scripts/oci-push.sh "$(REGISTRY)" $(SKOPEO_FLAGS)

# Criterion benches of the core algorithms, each next to a naive baseline,
# and of the native build (its store, a request through its hooks);
# prints a markdown table and writes it (and JSON) to bench/results/.
bench: setup
	$(CARGO) bench -p filters-core --features testing --bench core
	$(CARGO) bench -p filters-native --features fake-envoy --bench native
	python3 bench/criterion_table.py

# Envoy with and without each filter under wrk and ab, as plain processes on
# 127.0.0.1 (Envoy pinned to core 0, load on core 1); prints the tables and
# writes markdown, JSON and an SVG chart to bench/results/. About 12 minutes.
loadtest: build
	@scripts/setup.sh --load
	$(CARGO) build --release --target $(WASM_TARGET) -p noop-filter -p compute-probe
	@scripts/wasm-opt.sh --as-built noop_filter compute_probe
	python3 bench/loadtest.py $(LOADTEST_ARGS)

# `make loadtest`'s tables (and chart) from containers: a private Docker
# daemon (bench/compose/harness.sh: installs docker.io, docker-compose and
# debootstrap if missing; builds local images when no registry answers), the
# compose file's services driven by bench/loadtest.py --compose, the daemon
# stopped at the end. Writes bench/results/compose-loadtest.{md,json,svg}.
compose-loadtest: build
	$(CARGO) run -q -p packaging -- oci > /dev/null
	$(CARGO) build --release --target $(WASM_TARGET) -p noop-filter -p compute-probe
	@scripts/wasm-opt.sh --as-built noop_filter compute_probe
	bench/compose/harness.sh run $(LOADTEST_ARGS)

# The short version `make test` runs: the images, the chain behind Envoy
# with a backend killed halfway, the rate-limit seed scenario; about 80 s on
# a fresh machine, 40 s once the images exist.
compose-smoke: build
	$(CARGO) run -q -p packaging -- oci > /dev/null
	bench/compose/harness.sh run --smoke

# Every fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each under
# libFuzzer; inputs that widen coverage are merged into fuzz/corpus/, which
# `make test` replays (the core's and the engine's corpus_replays tests).
FUZZ_SECONDS ?= 60
fuzz: setup
	@scripts/setup.sh --fuzz
	scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
	rm -rf run
