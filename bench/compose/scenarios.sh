#!/bin/sh
# The compose harness's load generator: the scenarios of bench/loadtest.py
# that need no process control, against the compose services.
set -eu
: "${CHAIN_URL:=http://127.0.0.1:10000/}" "${RATE_LIMIT_URL:=http://127.0.0.1:10001/}" "${SECONDS:=10}"
: "${GLOBAL_RATE_LIMIT_URL:=http://127.0.0.1:10002/}"
for url in "$CHAIN_URL" "$RATE_LIMIT_URL" "$GLOBAL_RATE_LIMIT_URL"; do
    until curl -fs -o /dev/null "$url"; do sleep 1; done
done

echo "== four filters chained: wrk at 10 and 50 connections, ${SECONDS}s each"
wrk -t1 -c10 -d"${SECONDS}s" --latency "$CHAIN_URL"
wrk -t1 -c50 -d"${SECONDS}s" --latency "$CHAIN_URL"

echo "== rate limit 100/s, burst 50: ab -n 1000 -c 10"
echo "expected: about 50 + 100/s x (time taken) admitted, the rest 429"
ab -n 1000 -c 10 "$RATE_LIMIT_URL" | grep -E "Time taken|Complete requests|Non-2xx"

echo "== same session cookie across 10 requests (expected: one backend per session)"
for s in 1 2 3 4 5 6; do
    backends=$(for i in 1 2 3 4 5 6 7 8 9 10; do
        curl -s -D- -o /dev/null -H "cookie: session=s$s" "$CHAIN_URL" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-backend"{print $2}'
    done | sort -u | tr '\n' ' ')
    echo "session s$s: $backends"
done

echo "== a global limit (ratelimit-engine + Redis over gRPC): wrk at 10 connections, ${SECONDS}s"
echo "compare the latency with the rate limit above: the difference is the service call"
wrk -t1 -c10 -d"${SECONDS}s" --latency "$GLOBAL_RATE_LIMIT_URL"
