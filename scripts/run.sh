#!/usr/bin/env bash
# `make run`: two demo backends on 127.0.0.1:8081 and :8082 and Envoy on
# :10000 with the rate-limit filter (envoy/rate-limit.yaml). Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p run
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/demo-backend --backend a=127.0.0.1:8081 --backend b=127.0.0.1:8082 > run/backends.log 2>&1 &
pids+=($!)
.venv/bin/envoy -c envoy/rate-limit.yaml --concurrency 2 --disable-hot-restart --log-level info > run/envoy.log 2>&1 &
pids+=($!)

for _ in $(seq 1 200); do
    curl -fs http://127.0.0.1:9901/ready >/dev/null 2>&1 && break
    if ! kill -0 "${pids[1]}" 2>/dev/null; then echo "Envoy exited; see run/envoy.log:"; tail -n 20 run/envoy.log; exit 1; fi
    sleep 0.1
done

cat <<'MSG'
Envoy is serving on http://127.0.0.1:10000 with the rate-limit filter
(10 requests/s per client, bursts of 5), in front of demo backends a and b.

  curl -i http://127.0.0.1:10000/                  # 200, x-backend and RateLimit headers
  for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/; done; echo
                                                   # five 200s, then 429s
  curl -i http://127.0.0.1:10000/ -H 'x-forwarded-for: 1.2.3.4'   # spoofing does not help
  curl -s http://127.0.0.1:9901/stats/prometheus | grep rate_limit  # allowed/refused counters

Logs: run/envoy.log, run/backends.log. Ctrl-C to stop.
MSG
wait
