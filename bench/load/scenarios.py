"""Seed scenarios: each prints its expected outcome next to the measured one."""
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request

from .configs import (bootstrap, cluster, configs, filter_configs, override_host_cluster, rate_limit_scenario_config, route,
                      sample_stats_tags, wasm)
from .env import ROOT, free_port
from .procs import Backends, Container, Envoy, get, load_cmd


def scenario_rate_limit(run, addrs):
    e = Envoy(run, rate_limit_scenario_config(addrs), 2)
    try:
        out = subprocess.run(load_cmd(run, ["ab", "-n", "1000", "-c", "10", f"http://127.0.0.1:{e.port}/"]),
                             capture_output=True, text=True).stdout
        total = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
        non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx responses:\s+(\d+)", out)) else 0
        secs = float(re.search(r"Time taken for tests:\s+([\d.]+)", out).group(1))
        admitted = total - non2xx
        time.sleep(1.0)  # refill to the full burst
        t0 = time.time()
        statuses = [get(e.port)[0] for _ in range(150)]
        t = time.time() - t0
        refused = statuses.count(429)
        return [
            {"scenario": "ab -n 1000 -c 10 against 100/s, burst 50",
             "expected": f"about {50 + 100 * secs:.0f} admitted (50 + 100/s x {secs:.2f} s)",
             "measured": f"{admitted} admitted, {non2xx} refused (429)",
             # Wide bounds: a busy machine stretches ab's run, and the refill with it.
             "ok": total == 1000 and abs(admitted - (50 + 100 * secs)) <= max(40, 0.3 * (50 + 100 * secs))},
            {"scenario": "150 sequential requests, same limit",
             "expected": f"about {max(0, 150 - (50 + 100 * t)):.0f} refused (150 - 50 - 100/s x {t:.2f} s)",
             "measured": f"{refused} refused (429), {statuses.count(200)} admitted"},
        ]
    finally:
        e.close()


def scenario_engine_image(run):
    """The rate limit service's image as `make oci` ships it, run by Docker
    (containers only): `/bin/ratelimit` answers ShouldRateLimit over /json,
    as the nonroot user (65532)."""
    from .procs import RateLimitService
    rls = RateLimitService(run)
    try:
        body = json.dumps({"domain": "bench", "descriptors": [{"entries": [
            {"key": "generic_key", "value": "all"}, {"key": "remote_address", "value": "192.0.2.1"}]}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{rls.http_port}/json", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
        uids = subprocess.run(["ps", "-o", "uid=", "-C", "ratelimit"], capture_output=True, text=True).stdout.split()
    finally:
        rls.close()
    ok = answer.get("overallCode") == "OK" and uids == ["65532"]
    return [{"scenario": "the engine's image (make oci) run by Docker", "expected": "/json answers OK; /bin/ratelimit runs as uid 65532",
             "measured": f"{answer.get('overallCode')}; uid {','.join(uids) or 'none'}", "ok": ok}]


def scenario_prometheus(run, addrs):
    """The compose file's Prometheus (Debian's, in its own container) scrapes
    an Envoy running the rate limiter: after some requests its query API
    returns the filter's labelled series, as many admissions as Envoy
    counted, and deploy/prometheus/'s rules are loaded."""
    cfg = rate_limit_scenario_config(addrs)
    cfg["stats_config"] = {"stats_tags": sample_stats_tags()}
    e = Envoy(run, cfg, 2)
    port = free_port()
    (run.scratch / "prometheus.yml").write_text(
        "global: { scrape_interval: 1s, evaluation_interval: 1s }\n"
        "rule_files: ['/etc/prometheus/rules/alerts.yaml', '/etc/prometheus/rules/rules.yaml']\n"
        f"scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n"
        f"  static_configs: [{{ targets: ['{e.admin}'] }}]\n")
    prom = Container("prometheus", ["--config.file=/loadtest/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus",
                                    f"--web.listen-address=127.0.0.1:{port}"],
                     volumes=[f"{run.scratch}:/loadtest:ro", f"{ROOT / 'deploy/prometheus'}:/etc/prometheus/rules:ro"])
    try:
        statuses = [get(e.port)[0] for _ in range(20)]
        admitted = statuses.count(200)
        query = urllib.parse.quote('rate_limit_allowed{job="envoy", limit="main"}')
        seen, rules, deadline = None, 0, time.time() + 90
        while time.time() < deadline and seen != admitted:
            time.sleep(1)
            try:
                r = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=2))
                result = r["data"]["result"]
                seen = int(float(result[0]["value"][1])) if result else None
                groups = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=2))
                rules = sum(len(g["rules"]) for g in groups["data"]["groups"])
            except (OSError, ValueError, KeyError, IndexError):
                if not prom.running():
                    raise RuntimeError(f"prometheus exited: {prom.logs()}") from None
        return [{"scenario": "Prometheus (container) scrapes Envoy's rate limiter",
                 "expected": f"rate_limit_allowed{{limit=\"main\"}} = {admitted} (Envoy's count), rules loaded",
                 "measured": f"{seen}, {rules} rules",
                 "ok": seen == admitted and rules >= 10}]
    finally:
        prom.close()
        e.close()


def scenario_key_flood(run, addrs, keys=1_000_000, table_size=65536):
    """The rate limiter keyed on client_ip with trusted_hops 1, flooded with
    distinct X-Forwarded-For addresses: Envoy's resident memory before and
    after, against the table it was configured with."""
    cfg = bootstrap([wasm("rate_limit", "rate_limit", {"limits": [{"name": "flood", "requests": 1000000, "period": "1s",
                                                                   "key": "client_ip"}],
                                                       "trusted_hops": 1, "table_size": table_size})],
                    [cluster(list(addrs.values()))], route(), direct_response=True)
    e = Envoy(run, cfg, 2)
    try:
        rss_before = e.rss_mib()
        sent, started = 0, time.time()
        while sent < keys and time.time() - started < 600:
            script = "/bench/flood.lua" if run.containers else str(ROOT / "bench" / "flood.lua")
            out = subprocess.run(load_cmd(run, ["wrk", "-t2", "-c32", "-d10s", "-s", script, f"http://127.0.0.1:{e.port}/"]),
                                 capture_output=True, text=True).stdout
            sent += int(re.search(r"(\d+) requests in", out).group(1))
        rss_after = e.rss_mib()
        # About 93 bytes of shared data per slot in Envoy (filters/rate-limit/README.md).
        table_mib = table_size * 93 / 2**20
        return [{"scenario": f"{sent:,} requests with distinct X-Forwarded-For addresses, rate limiter keyed on client_ip "
                             f"(trusted_hops 1, table_size {table_size})",
                 "expected": f"RSS flat: the {table_size}-slot table (~{table_mib:.0f} MiB) exists from start-up",
                 "measured": f"Envoy RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after ({rss_after - rss_before:+.1f} MiB)"}]
    finally:
        e.close()


def scenario_cookie_vs_ip_hash(run, addrs):
    rows = []
    for label, key in (("cookie stickiness (sticky-session, session cookie)", ["cookie:session"]),
                       ("nginx-style ip_hash (sticky-session keyed on client_ip)", ["client_ip"])):
        f = filter_configs(addrs)["sticky"]
        f["session_key"] = key
        f.pop("cookie")
        f["backend_header"] = "x-sticky-backend"
        e = Envoy(run, bootstrap([wasm("sticky", "sticky_session", f)], [override_host_cluster(list(addrs.values()))], route()), 2)
        try:
            per_session, all_backends = [], {}
            for s in range(30):
                seen = {get(e.port, headers={"cookie": f"session=s{s}"})[1].get("x-backend") for _ in range(10)}
                per_session.append(len(seen))
                for b in seen:
                    all_backends[b] = all_backends.get(b, 0) + 1
            rows.append({"scenario": f"30 sessions x 10 requests from one client address: {label}",
                         "expected": "each session on one backend" + (", sessions spread over all three" if "cookie" in label else ", every session on the same backend (one address)"),
                         "measured": f"max backends per session {max(per_session)}, sessions per backend {dict(sorted(all_backends.items()))}"})
        finally:
            e.close()
    return rows


def scenario_random_failures(run, names):
    rows = []
    for label, use_retry in (("router only (no retry)", False), ("with the retry filter", True)):
        b = Backends(run, names)
        try:
            for n in names:
                b.set(n, "fail=0.2&random=1")
            filters = [wasm("retry", "retry", filter_configs(b.addrs)["retry"])] if use_retry else []
            e = Envoy(run, bootstrap(filters, [cluster(list(b.addrs.values()))], route()), 2)
            try:
                ok = sum(1 for _ in range(1000) if get(e.port)[0] == 200)
                attempts = sum(b.requests(n) for n in names)
                rows.append({"scenario": f"1000 GETs, backends failing 20% at random, {label}",
                             "expected": "about 80% succeed" if not use_retry else "at least 99% succeed",
                             "measured": f"{ok / 10:.1f}% succeeded, {attempts} upstream attempts"})
            finally:
                e.close()
        finally:
            b.close()
    return rows


def scenario_kill_one_of_three(run, names):
    b = Backends(run, names)
    try:
        e = Envoy(run, configs(b.addrs)["chain-of-four"], 2)
        try:
            failed, total = 0, 3000
            for i in range(total):
                if i == total // 2:
                    b.kill(names[1])
                status, _ = get(e.port, headers={"x-session-id": f"u{i % 60}"})
                failed += status != 200
            return [{"scenario": f"{total} requests over 60 sessions; backend {names[1]} of three killed halfway; "
                                 "rate limit, breaker, retry and sticky sessions chained",
                     "expected": "no failed request (the route retry covers the requests before the sticky filter ejects it)",
                     "measured": f"{failed} failed requests", "ok": failed == 0}]
        finally:
            e.close()
    finally:
        b.close()
