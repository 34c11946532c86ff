"""`make loadtest`: Envoy with and without each filter, under wrk and ab, on 127.0.0.1.

Everything runs as plain processes: the demo backends, one Envoy per
configuration (from .venv), and the load generators. On a 2-core machine Envoy
is pinned to core 0 and the load generators and backends to core 1 (taskset),
so Envoy's CPU time is its own.

Per configuration and --concurrency (1 and 2): requests/s and latency p50/p99
from wrk at two connection counts, Envoy CPU seconds per request (from
/proc/<pid>/stat before and after), and Envoy's resident memory; --reps
repetitions, reported as median and min-max.

The host's speed drifts from minute to minute, so every configuration is also
measured *paired* with router-only: both Envoys pinned to the same core, loaded
at the same moment, and the report gives the ratio of their CPU per request,
which the drift cancels out of. A filter's added cost is derived from that
ratio, and compared with the no-op Wasm filter's added cost (the floor).

Seed scenarios print their expected outcome next to the measured one.

Output: a markdown report and JSON in bench/results/, and an SVG chart.
"""

import argparse
import datetime
import os
import pathlib
import sys
import tempfile
import time

from .configs import LLM_BASE, llm_configs, compose_files, configs, nginx_configs, probe_configs
from .env import BACKEND, COMPOSE, ENGINE, ENVOY, ENVOY_CPU, LOAD_CPU, NGINX, WASM, Run, log
from .measure import measure, paired
from .procs import Backends, Nginx, RateLimitService
from .report import write
from .scenarios import (scenario_cookie_vs_ip_hash, scenario_key_flood, scenario_kill_one_of_three,
                        scenario_engine_image, scenario_prometheus, scenario_random_failures, scenario_rate_limit)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--probe", type=int, default=0,
                    help="also the compute-probe rows (probe-<filter>-x0 and -xN): the core's work run N times per request in V8")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    ap.add_argument("--conns", default="10,50", help="wrk connection counts")
    ap.add_argument("--only", default="", help="comma-separated configuration names")
    ap.add_argument("--skip-scenarios", action="store_true")
    ap.add_argument("--scenarios-only", action="store_true")
    ap.add_argument("--no-nginx", action="store_true", help="skip the nginx rows")
    ap.add_argument("--paired-only", action="store_true", help="only the paired runs (no per-configuration table)")
    ap.add_argument("--out", default="", help="basename of the report in bench/results (default: loadtest, or scenarios)")
    ap.add_argument("--write-compose", action="store_true", help="regenerate bench/compose/envoy-*.yaml and exit")
    ap.add_argument("--check-compose", action="store_true", help="exit 1 if bench/compose/envoy-*.yaml are stale")
    ap.add_argument("--compose", action="store_true",
                    help="run everything in the containers of bench/compose/docker-compose.yml (bench/compose/harness.sh run)")
    ap.add_argument("--smoke", action="store_true",
                    help="with --compose: the chain with a backend killed halfway and the rate-limit seed scenario; exit 1 if either is off")
    args = ap.parse_args()
    if args.check_compose:
        stale = [n for n, text in compose_files().items() if (COMPOSE / n).read_text() != text]
        if stale:
            sys.exit(f"stale: {', '.join(stale)}; run python3 bench/loadtest.py --write-compose")
        return
    if args.write_compose:
        for name, text in compose_files().items():
            (COMPOSE / name).write_text(text)
            log(f"written: {COMPOSE / name}")
        return
    run = Run(scratch=pathlib.Path(tempfile.mkdtemp(prefix="loadtest-")), containers=args.compose)
    if args.compose:
        run.scratch.chmod(0o755)  # the Envoy image may run as a user of its own
        args.no_nginx = True
        if args.smoke:
            return smoke(run)
    for tool in ((BACKEND, ENGINE) if args.compose else (ENVOY, BACKEND, ENGINE)) + (WASM / "noop_filter.wasm", WASM / "bundle.wasm"):
        if not pathlib.Path(tool).exists():
            sys.exit(f"{tool} is missing: run `make loadtest` (it builds everything)")
    conn_counts = [int(c) for c in args.conns.split(",")]
    names = ["a", "b", "c"]
    started = datetime.datetime.now(datetime.timezone.utc)
    pinning = (f"Envoy on core {ENVOY_CPU}; wrk, ab and the demo backends on core {LOAD_CPU} (taskset)" if not run.containers else
               f"every process in a container of bench/compose/docker-compose.yml on host networking; Envoy on cpuset "
               f"{os.environ.get('ENVOY_CPUSET', ENVOY_CPU)}, wrk, ab, the demo backends, Redis and the engine on cpuset "
               f"{os.environ.get('LOAD_CPUSET', LOAD_CPU)}")
    report = {"generated": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": {"cpus": os.cpu_count()},
              "pinning": pinning, "runtime": "containers" if run.containers else "processes",
              "seconds": args.seconds, "reps": args.reps, "configs": {}, "paired": {}, "scenarios": []}
    backends = Backends(run, names)
    rls = RateLimitService(run) if ENGINE.exists() else None
    try:
        all_cfgs = configs(backends.addrs, rls.grpc_port if rls else None) | llm_configs(backends.addrs)
        if args.probe:
            all_cfgs.update(probe_configs(backends.addrs, args.probe))
        chosen = [] if args.scenarios_only else [c for c in all_cfgs if not args.only or c in args.only.split(",")]
        for name in [] if args.paired_only else chosen:
            for conc in (1, 2):
                log(f"measuring {name} --concurrency {conc}")
                report["configs"].setdefault(name, {})[conc] = measure(run, all_cfgs[name], conc, conn_counts, args.seconds, args.reps)
        for name in chosen:
            if name == "router":
                continue
            if name in LLM_BASE:
                base = LLM_BASE[name]
                log(f"paired: {base} vs {name}")
                report.setdefault("paired_llm", {})[name] = {
                    "base": base, **paired(run, all_cfgs[base], all_cfgs[name], args.seconds, args.reps)}
                continue
            log(f"paired: router vs {name}")
            report["paired"][name] = paired(run, all_cfgs["router"], all_cfgs[name], args.seconds, args.reps)
        if not args.no_nginx and not args.scenarios_only and NGINX.exists():
            ngx = nginx_configs(backends.addrs)
            for name in [n for n in ngx if n != "nginx-proxy" and (not args.only or n in args.only.split(","))]:
                log(f"paired: nginx-proxy vs {name}")
                report.setdefault("paired_nginx", {})[name] = paired(run, ngx["nginx-proxy"], ngx[name], args.seconds,
                                                                      args.reps, server=lambda c: Nginx(run, c))
        elif not args.no_nginx and not args.scenarios_only:
            log(f"nginx rows skipped: {NGINX} not found (set NGINX_WASM_BIN)")
    finally:
        backends.close()
        if rls:
            rls.close()
    if not args.skip_scenarios:
        log("seed scenarios")
        b = Backends(run, names)
        try:
            report["scenarios"] += scenario_rate_limit(run, b.addrs)
            report["scenarios"] += scenario_cookie_vs_ip_hash(run, b.addrs)
            report["scenarios"] += scenario_key_flood(run, b.addrs)
        finally:
            b.close()
        report["scenarios"] += scenario_random_failures(run, names)
        report["scenarios"] += scenario_kill_one_of_three(run, names)
    write(run, report, args, conn_counts)


def smoke(run):
    """The compose harness's smoke run (`make test`): the four filters
    chained behind Envoy with a backend killed halfway, the rate-limit seed
    scenario under ab, and Prometheus scraping an Envoy, all in containers.
    Exit 1 when one is off."""
    started = time.time()
    rows = scenario_kill_one_of_three(run, ["a", "b", "c"])
    rows += scenario_engine_image(run)
    b = Backends(run, ["a", "b", "c"])
    try:
        rows += scenario_rate_limit(run, b.addrs)[:1]
        rows += scenario_prometheus(run, b.addrs)
    finally:
        b.close()
    print("| scenario | expected | measured | |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenario']} | {r['expected']} | {r['measured']} | {'ok' if r['ok'] else 'OFF'} |")
    log(f"compose smoke run: {time.time() - started:.0f} s")
    if not all(r["ok"] for r in rows):
        sys.exit("compose smoke run: a scenario is off")
