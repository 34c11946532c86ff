#!/usr/bin/env bash
# `make run`: demo backends a, b, c on 127.0.0.1:8081-8083 and Envoy on
# :10000 with the rate-limit filter (envoy/rate-limit.yaml), or with
# envoy/$CONFIG.yaml (`make run CONFIG=circuit-breaker`; CONFIG=global-rate-limit
# also starts Redis on :6380 and ratelimit-engine on :8090/:8091; CONFIG=bundle runs all
# four policies in one module; CONFIG=sticky-session-eds reads the endpoints
# from envoy/eds/ by EDS; CONFIG=observability runs the bundle with traces on
# and also starts Prometheus on :9090 and an OTLP receiver on :4317). Ctrl-C
# stops all. Any CONFIG with -native appended (CONFIG=bundle-native) runs that
# sample with the native build instead of the Wasm modules.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${CONFIG:-rate-limit}"
# <sample>-native: the same sample with the native build (filters/native,
# target/native/libresilience.so) in place of each Wasm module.
BASE="${CONFIG%-native}"
[ -f "envoy/$BASE.yaml" ] || { echo "no envoy/$BASE.yaml"; exit 1; }
mkdir -p run
FILE="envoy/$BASE.yaml"
if [ "$BASE" != "$CONFIG" ]; then
    FILE="run/$CONFIG.yaml"
    cargo run -q -p packaging -- native-sample "envoy/$BASE.yaml" > "$FILE"
    export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PWD/target/native"
fi
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/demo-backend --backend a=127.0.0.1:8081 --backend b=127.0.0.1:8082 --backend c=127.0.0.1:8083 > run/backends.log 2>&1 &
pids+=($!)
if [ "$BASE" = global-rate-limit ]; then
    # The rate limit service: Redis without persistence, and one engine.
    redis-server --bind 127.0.0.1 --port 6380 --save '' --appendonly no > run/redis.log 2>&1 &
    pids+=($!)
    # GCRA: the demo's 20 per minute with no window edge in the middle of it.
    target/release/ratelimit-engine --config envoy/ratelimit/edge.yaml --redis redis://127.0.0.1:6380 --algorithm gcra \
        --grpc 127.0.0.1:8091 --http 127.0.0.1:8090 > run/engine.log 2>&1 &
    pids+=($!)
fi
if [ "$BASE" = observability ]; then
    # Spans: an OTLP/gRPC receiver on :4317 writing one JSON line per span.
    .venv/bin/python scripts/otlp-sink.py --listen 127.0.0.1:4317 --out run/spans.jsonl > run/otlp-sink.log 2>&1 &
    pids+=($!)
    # Metrics: Prometheus on :9090 scraping Envoy every 5 s, with the alert
    # and recording rules of deploy/prometheus/.
    cat > run/prometheus.yml <<PROM
global: { scrape_interval: 5s, evaluation_interval: 5s }
rule_files: ['$PWD/deploy/prometheus/alerts.yaml', '$PWD/deploy/prometheus/rules.yaml']
scrape_configs:
- job_name: envoy
  metrics_path: /stats/prometheus
  static_configs: [{ targets: ['127.0.0.1:9901'] }]
PROM
    prometheus --config.file=run/prometheus.yml --storage.tsdb.path=run/prometheus \
        --web.listen-address=127.0.0.1:9090 > run/prometheus.log 2>&1 &
    pids+=($!)
fi
.venv/bin/envoy -c "$FILE" --concurrency 2 --disable-hot-restart --log-level info > run/envoy.log 2>&1 &
pids+=($!)

for _ in $(seq 1 200); do
    curl -fs http://127.0.0.1:9901/ready >/dev/null 2>&1 && break
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then echo "Envoy exited; see run/envoy.log:"; tail -n 20 run/envoy.log; exit 1; fi
    sleep 0.1
done

if [ "$BASE" = rate-limit ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the rate-limit filter
(10 requests/s per client, bursts of 5), in front of demo backends a and b.

  curl -i http://127.0.0.1:10000/                  # 200, x-backend and RateLimit headers
  for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/; done; echo
                                                   # five 200s, then 429s
  curl -i http://127.0.0.1:10000/ -H 'x-forwarded-for: 1.2.3.4'   # spoofing does not help
  curl -s http://127.0.0.1:9901/stats/prometheus | grep rate_limit  # allowed/refused counters

MSG
elif [ "$BASE" = circuit-breaker ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the circuit-breaker filter:
/flaky/... goes to cluster "flaky" (backend b), everything else to "healthy" (a).

  curl '127.0.0.1:8082/_demo/set?fail=1'           # make backend b fail every request
  for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/flaky/x; done; echo
  curl -i http://127.0.0.1:10000/flaky/x           # 503, retry-after, x-circuit-breaker: flaky; state=open
  curl -i http://127.0.0.1:10000/                  # the healthy cluster is unaffected
  curl '127.0.0.1:8082/_demo/set?fail=0'           # recover; after retry-after seconds a probe closes it
  curl -s http://127.0.0.1:9901/stats/prometheus | grep circuit_breaker

MSG
elif [ "$BASE" = retry ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the retry-headers filter,
in front of demo backend a (127.0.0.1:8081).

  curl '127.0.0.1:8081/_demo/set?fail=0.2&random=1'   # backend a fails 20% at random
  for i in $(seq 20); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/; done; echo
                                                   # retried: all 200
  curl -s -o /dev/null -w '%{http_code}\n' -X POST http://127.0.0.1:10000/   # POST without Idempotency-Key: not retried
  curl -s 127.0.0.1:8081/_demo/stats               # attempts the backend saw
  curl -s http://127.0.0.1:9901/stats/prometheus | grep '^retry_'

MSG
elif [ "$BASE" = sticky-session ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the sticky-session filter,
in front of demo backends a, b and c (127.0.0.1:8081-8083).

  for i in 1 2 3; do curl -s -D- -o /dev/null http://127.0.0.1:10000/ -H 'x-session-id: alice' | grep -i -e x-backend -e set-cookie; done
                                                   # always the same backend, and a signed sticky cookie
  curl -s -D- -o /dev/null http://127.0.0.1:10000/ -H 'cookie: sticky=v1.a.forged' | grep -i x-backend   # forged: ignored
  curl -s http://127.0.0.1:9901/stats/prometheus | grep '^sticky_'

MSG
elif [ "$BASE" = sticky-session-eds ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the sticky-session filter in
its dynamic mode: the endpoints of cluster "sticky" come from EDS, read from
envoy/eds/sticky-endpoints.yaml (backends a, b, c on 127.0.0.1:8081-8083),
which Envoy watches. Envoy's Maglev places a new session; the cookie pins it.

  curl -s -D- -o /dev/null http://127.0.0.1:10000/ -H 'x-session-id: alice' | grep -i -e x-sticky-backend -e set-cookie
  # remove backend b: edit a copy without the 8082 line, then move it over the file
  grep -v 8082 envoy/eds/sticky-endpoints.yaml > envoy/eds/.new && mv envoy/eds/.new envoy/eds/sticky-endpoints.yaml
  # sessions pinned to b move once (a new set-cookie), the others stay; `git checkout envoy/eds` restores it
  curl -s http://127.0.0.1:9901/stats/prometheus | grep -E '^sticky_|membership_total'

MSG
elif [ "$BASE" = global-rate-limit ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the rate-limit filter asking a
rate limit service (ratelimit-engine on :8091 gRPC / :8090 HTTP, Redis on :6380)
for its global limits (envoy/ratelimit/edge.yaml: 20 per minute per client).

  for i in $(seq 25); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/; sleep 0.2; done; echo
                                                   # 20 200s, then 429s (a second proxy would share the count)
  curl -i http://127.0.0.1:10000/                  # RateLimit headers of the local and the global limit
  curl -s 127.0.0.1:8090/metrics | grep -v '^#'    # the engine's counters
  curl -s http://127.0.0.1:9901/stats/prometheus | grep rate_limit_global

MSG
elif [ "$BASE" = bundle ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the bundle: rate limiting
(100/s per client), a circuit breaker, sticky sessions over backends a, b, c
and retry headers, in one Wasm module.

  curl -i http://127.0.0.1:10000/ -H 'x-session-id: alice'   # x-sticky-backend, RateLimit headers, set-cookie
  for i in $(seq 5); do curl -s -H 'x-session-id: alice' http://127.0.0.1:10000/ -o /dev/null -w '%header{x-sticky-backend} '; done; echo
  curl '127.0.0.1:8081/_demo/set?fail=1'; curl '127.0.0.1:8082/_demo/set?fail=1'; curl '127.0.0.1:8083/_demo/set?fail=1'
  for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/; done; echo
                                                   # retried 503s, then the breaker's own 503s
  curl -s http://127.0.0.1:9901/stats/prometheus | grep -E 'rate_limit|circuit_breaker|sticky|retry'

MSG
elif [ "$BASE" = observability ]; then
cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the bundle (all four
policies) and "trace": true, every request traced (deploy/observability.md).

  for i in $(seq 200); do curl -s -o /dev/null -H "x-session-id: s$((i % 7))" http://127.0.0.1:10000/; done
  curl '127.0.0.1:8081/_demo/set?fail=0.5'        # backend a fails every other request: retries, ejections

Metrics:     http://127.0.0.1:9090/graph?g0.expr=rate_limit_allowed   (Prometheus, scraping Envoy every 5 s)
             curl -s http://127.0.0.1:9901/stats/prometheus | grep -E '^(rate_limit|circuit_breaker|sticky|retry)_'
Alerts:      http://127.0.0.1:9090/alerts         (deploy/prometheus/alerts.yaml, rules.yaml)
Dashboards:  import deploy/grafana/filters.json into a Grafana whose Prometheus data source is http://127.0.0.1:9090
Traces:      tail -f run/spans.jsonl              (each span's ratelimit.*, circuit_breaker.*, sticky.*, retry.*)
             or stop the sink and point an OpenTelemetry collector at 127.0.0.1:4317

MSG
else
  echo "Envoy is serving $FILE on http://127.0.0.1:10000"
fi
[ "$BASE" = "$CONFIG" ] || echo "(The native build: $FILE loads target/native/libresilience.so; filters/native/README.md.)"
echo "Logs: run/envoy.log, run/backends.log. Ctrl-C to stop."
wait
