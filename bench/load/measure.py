"""Measuring: wrk runs, CPU per request from /proc, and the paired runs
that cancel the host's drift (both proxies on one core, loaded at the same
moment)."""
import re
import statistics
import subprocess

from .env import LOAD_CPU, pinned
from .procs import Envoy, load_cmd


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(run, port, conns, seconds):
    out = subprocess.run(load_cmd(run, ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                                   f"http://127.0.0.1:{port}/"]), capture_output=True, text=True).stdout
    res = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}_ms"] = parse_duration_ms(m.group(1)) if m else float("nan")
    return res


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(run, bootstrap_cfg, concurrency, conn_counts, seconds, reps):
    e = Envoy(run, bootstrap_cfg, concurrency)
    try:
        wrk(run, e.port, 10, 1)  # warm up
        result = {}
        for conns in conn_counts:
            runs = []
            for _ in range(reps):
                c0 = e.cpu_seconds()
                w = wrk(run, e.port, conns, seconds)
                c1 = e.cpu_seconds()
                w["cpu_us_per_request"] = (c1 - c0) / max(w["requests"], 1) * 1e6
                runs.append(w)
            result[conns] = {k: spread([r[k] for r in runs]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")}
            result[conns]["non_2xx"] = sum(r["non_2xx"] for r in runs)
        result["rss_mib"] = e.rss_mib()
        return result
    finally:
        e.close()


def paired(run, base_cfg, cfg, seconds, reps, conns=10, server=None):
    """Both proxies on the same core, loaded at the same moment: the ratio of
    their CPU per request, which the host's drift cancels out of. `server`
    starts one (default: an Envoy with one worker)."""
    server = server or (lambda c: Envoy(run, c, 1))
    a = server(base_cfg)
    b = server(cfg)
    try:
        for e in (a, b):
            wrk(run, e.port, conns, 1)
        ratios = []
        for _ in range(reps):
            ca, cb = a.cpu_seconds(), b.cpu_seconds()
            oa, ob = wrk_pair(run, a.port, b.port, conns, seconds)
            na = int(re.search(r"(\d+) requests in", oa).group(1))
            nb = int(re.search(r"(\d+) requests in", ob).group(1))
            ua = (a.cpu_seconds() - ca) / max(na, 1)
            ub = (b.cpu_seconds() - cb) / max(nb, 1)
            ratios.append(ub / ua if ua > 0 else float("nan"))
        return spread(ratios)
    finally:
        a.close()
        b.close()


def wrk_pair(run, port_a, port_b, conns, seconds):
    """Two wrk runs started together, one per port; their outputs. In
    containers both run in one loadgen container, so that they start at
    the same moment."""
    args = lambda port: ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if run.containers:
        script = f"{' '.join(args(port_a))} > /tmp/a & {' '.join(args(port_b))} > /tmp/b; wait; cat /tmp/a; echo @@@@; cat /tmp/b"
        out = subprocess.run(load_cmd(run, ["sh", "-c", script]), capture_output=True, text=True).stdout
        oa, _, ob = out.partition("@@@@")
        return oa, ob
    pa = subprocess.Popen(pinned(LOAD_CPU, args(port_a)), stdout=subprocess.PIPE, text=True)
    pb = subprocess.Popen(pinned(LOAD_CPU, args(port_b)), stdout=subprocess.PIPE, text=True)
    return pa.communicate()[0], pb.communicate()[0]
