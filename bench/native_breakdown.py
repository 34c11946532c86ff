#!/usr/bin/env python3
"""Where the native build's extra Envoy CPU goes, per request.

Each native (dynamic-module) row of `make loadtest`, paired with its
routing (router-only; for the sticky and bundle rows, the same
override-host routing with no filter) as `make loadtest` pairs them: both
Envoys (one worker each) on the Envoy core, loaded at the same moment by
`wrk -c 10` for --seconds, their CPU per request from /proc, and
`perf record --call-graph dwarf` on both. Each sample is put in one place
by its stack (Envoy's binary is stripped, but its unwind tables
are there, and the module is built with symbols for this run):

- module: the module's own code (a libresilience.so frame is the leaf);
- Envoy for the module: Envoy (or libc) code under one of the module's
  hooks, i.e. the ABI callbacks the module called;
- Envoy, kernel, libc outside the module's hooks.

Each place's share of the samples times the CPU per request gives its
microseconds per request; the table sets them against router-only's.
Needs perf (Debian's linux-perf) and `make build`; builds the module with
symbols into target/native-symbols. Output: bench/results/native-breakdown.md.
"""
import argparse
import collections
import os
import re
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
ROOT = pathlib.Path(__file__).resolve().parent.parent
SYMBOLS = ROOT / "target" / "native-symbols"
os.environ["RESILIENCE_NATIVE_MODULE"] = str(SYMBOLS / "native" / "libresilience.so")

from load.configs import configs  # noqa: E402
from load.env import OUT, Run, log  # noqa: E402
from load.measure import wrk, wrk_pair  # noqa: E402
from load.procs import Backends, Envoy  # noqa: E402

ROWS = ["dm-rate-limit", "dm-circuit-breaker", "dm-retry", "dm-sticky-session", "dm-bundle-of-four"]
PLACES = ["module", "Envoy for the module", "Envoy", "kernel", "libc and vdso"]
# The routing each row is compared with.
BASE = {"dm-sticky-session": "router-override-host", "dm-bundle-of-four": "router-override-host"}


def place(stack):
    """stack: the frames' objects, leaf first."""
    leaf = stack[0]
    if "libresilience" in leaf:
        return "module"
    if any("libresilience" in f for f in stack[1:]):
        return "Envoy for the module"
    if "kernel" in leaf:
        return "kernel"
    if "envoy" in leaf:
        return "Envoy"
    return "libc and vdso"


def profile(data):
    """Samples per process and place."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,ip,dso", "--no-inline"],
                         capture_output=True, text=True).stdout
    counts = collections.defaultdict(collections.Counter)
    for sample in out.split("\n\n"):
        lines = sample.strip().splitlines()
        if len(lines) < 2:
            continue
        frames = [line.rsplit("(", 1)[-1] for line in lines[1:]]
        counts[int(lines[0].split()[0])][place(frames)] += 1
    return counts


def measure(run, base_cfg, cfg, seconds, scratch):
    """(base, row): each (CPU us per request, us per place)."""
    envoys = [Envoy(run, base_cfg, 1), Envoy(run, cfg, 1)]
    try:
        for e in envoys:
            wrk(run, e.port, 10, 1)
        data = scratch / f"perf-{envoys[1].port}.data"
        perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", str(data),
                                 "-p", ",".join(str(e.pid) for e in envoys)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        cpu = [e.cpu_seconds() for e in envoys]
        outs = wrk_pair(run, envoys[0].port, envoys[1].port, 10, seconds)
        done = [int(re.search(r"(\d+) requests in", o).group(1)) for o in outs]
        us = [(e.cpu_seconds() - c) / max(n, 1) * 1e6 for e, c, n in zip(envoys, cpu, done)]
        perf.send_signal(2)
        perf.wait()
        pids = [e.pid for e in envoys]
    finally:
        for e in envoys:
            e.close()
    counts = profile(data)
    result = []
    for pid, u in zip(pids, us):
        total = sum(counts[pid].values()) or 1
        result.append((u, {p: u * counts[pid][p] / total for p in PLACES}))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--out", default="native-breakdown")
    ap.add_argument("--only", default=",".join(ROWS), help="comma-separated rows")
    args = ap.parse_args()
    env = dict(os.environ, CARGO_PROFILE_NATIVE_STRIP="false", CARGO_PROFILE_NATIVE_DEBUG="1")
    subprocess.run(["cargo", "build", "-q", "--profile", "native", "-p", "filters-native", "--target-dir", str(SYMBOLS)],
                   cwd=ROOT, env=env, check=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="breakdown-"))
    run = Run(scratch=scratch)
    backends = Backends(run, ["a", "b", "c"])
    results = {}
    try:
        all_cfgs = configs(backends.addrs)
        for name in args.only.split(","):
            log(f"{name} ...")
            results[name] = measure(run, all_cfgs[BASE.get(name, "router")], all_cfgs[name], args.seconds, scratch)
    finally:
        backends.close()
    lines = [f"# Where the native build's CPU goes ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})", "",
             f"`python3 bench/native_breakdown.py` on {os.cpu_count()} cores: each native row paired with its "
             "routing (both Envoys on one core, one worker each, loaded at the same moment by `wrk -c 10` for "
             f"{args.seconds} s) under `perf record --call-graph dwarf`. Envoy CPU microseconds per request, "
             "split by where each sample's stack was; in parentheses, the row minus its routing measured with "
             "it. Sampling slows both Envoys alike; `make loadtest`'s paired rows are the cost figures.", "",
             "| row | its routing | CPU us/request | added | " + " | ".join(PLACES) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in PLACES) + " |"]
    for name, ((base_us, base_parts), (us, parts)) in results.items():
        cells = [f"{parts[p]:.1f} ({parts[p] - base_parts[p]:+.1f})" for p in PLACES]
        lines.append(f"| {name} | {BASE.get(name, 'router')} ({base_us:.1f}) | {us:.1f} | "
                     f"{us - base_us:+.1f} ({(us / base_us - 1) * 100:+.0f}%) | " + " | ".join(cells) + " |")
    (OUT / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    log(f"written: {OUT / (args.out + '.md')}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
