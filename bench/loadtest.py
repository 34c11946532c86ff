#!/usr/bin/env python3
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
import http.client
import json
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENVOY = ROOT / ".venv" / "bin" / "envoy"
# The shipped modules (`make build`, scripts/wasm-opt.sh), and the no-op and
# probe modules copied there as built (`make loadtest`).
WASM = ROOT / "target" / "wasm"
BACKEND = ROOT / "target" / "release" / "demo-backend"
ENGINE = ROOT / "target" / "release" / "ratelimit-engine"
OUT = ROOT / "bench" / "results"
ENVOY_CPU, LOAD_CPU = "0", "1"
# nginx with ngx_wasm_module for the nginx rows: NGINX_WASM_BIN, else the
# one beside the clone; without either the nginx rows are skipped.
NGINX = pathlib.Path(os.environ.get("NGINX_WASM_BIN") or ROOT.parent / "shared" / "nginx-wasm" / "nginx")
CLK = os.sysconf("SC_CLK_TCK")
SCRATCH = pathlib.Path(tempfile.mkdtemp(prefix="loadtest-"))
# --compose: every process below runs in a container of
# bench/compose/docker-compose.yml instead (docker-compose run, host
# networking), on the daemon DOCKER_HOST names (bench/compose/harness.sh).
CONTAINERS = False
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
COMPOSE_CMD = os.environ.get("DOCKER_COMPOSE", "docker-compose").split() + [
    "-f", str(ROOT / "bench" / "compose" / "docker-compose.yml"), "-p", "resilience-bench"]
# Where the .wasm files are, as the proxy sees them.
WASM_SEEN = str(WASM)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def pinned(cpu, cmd):
    """Pin to a core when the machine has more than one and taskset exists."""
    if os.cpu_count() and os.cpu_count() > 1 and subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        return ["taskset", "-c", cpu] + cmd
    return cmd


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- processes

class Container:
    """One container of the compose file's `service`, run with `args` (its
    command) by docker-compose on the harness's daemon; the host sees its
    processes, so CPU and memory are read from /proc as for a process."""

    def __init__(self, service, args, volumes=()):
        self.name = f"lt-{service}-{free_port()}"
        cmd = COMPOSE_CMD + ["run", "-d", "--no-deps", "--name", self.name]
        for v in volumes:
            cmd += ["-v", v]
        out = subprocess.run(cmd + [service, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"docker-compose run {service}: {out.stderr[-2000:]}")
        self.pid = int(subprocess.run([DOCKER, "inspect", "-f", "{{.State.Pid}}", self.name], check=True,
                                      capture_output=True, text=True).stdout.strip())

    def running(self):
        out = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Running}}", self.name], capture_output=True, text=True)
        return out.stdout.strip() == "true"

    def logs(self):
        out = subprocess.run([DOCKER, "logs", "--tail", "40", self.name], capture_output=True, text=True)
        return out.stdout + out.stderr

    def kill(self):
        subprocess.run([DOCKER, "kill", self.name], capture_output=True)

    def close(self):
        subprocess.run([DOCKER, "rm", "-f", self.name], capture_output=True)


def load_cmd(cmd):
    """A load generator's command line: pinned to the load core here, or in
    the loadgen container (which has bench/ at /bench)."""
    if CONTAINERS:
        return COMPOSE_CMD + ["run", "--rm", "--no-deps", "-T", "-v", f"{ROOT / 'bench'}:/bench:ro", "loadgen", *cmd]
    return pinned(LOAD_CPU, cmd)


def wait_http(url, what, alive=lambda: True, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url}")


class Backends:
    """Demo backends, one process each so that one can be killed."""

    def __init__(self, names, extra=()):
        self.procs, self.addrs = {}, {}
        for n in names:
            if CONTAINERS:
                port = free_port()
                self.addrs[n] = f"127.0.0.1:{port}"
                service = f"backend-{n}" if n in ("a", "b", "c") else "backend-a"
                self.procs[n] = Container(service, ["--backend", f"{n}=127.0.0.1:{port}", *extra])
                wait_http(f"http://{self.addrs[n]}/_demo/stats", f"backend {n}", self.procs[n].running)
                continue
            p = subprocess.Popen(pinned(LOAD_CPU, [str(BACKEND), "--backend", f"{n}=127.0.0.1:0", *extra]),
                                 stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline().split()
            self.procs[n], self.addrs[n] = p, line[2]

    def kill(self, name):
        self.procs[name].kill()
        if not CONTAINERS:
            self.procs[name].wait()

    def set(self, name, query):
        urllib.request.urlopen(f"http://{self.addrs[name]}/_demo/set?{query}", timeout=5).read()

    def requests(self, name):
        return json.loads(urllib.request.urlopen(f"http://{self.addrs[name]}/_demo/stats", timeout=5).read())["requests"]

    def close(self):
        for p in self.procs.values():
            if CONTAINERS:
                p.close()
                continue
            p.kill()
            p.wait()


class RateLimitService:
    """Redis and one ratelimit-engine on the load core, for the global-limit row.
    The limit (1e9 per second per client) never refuses: what is measured is
    the cost of asking."""

    LIMITS = ("domain: bench\ndescriptors:\n  - key: generic_key\n    value: all\n    descriptors:\n"
              "      - key: remote_address\n        rate_limit: { unit: second, requests_per_unit: 1000000000 }\n")

    def __init__(self):
        self.redis_port = free_port()
        if CONTAINERS:
            self._containers()
            return
        self.redis = subprocess.Popen(pinned(LOAD_CPU, ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                                                        "--save", "", "--appendonly", "no"]), stdout=subprocess.DEVNULL)
        cfg = SCRATCH / "limits.yaml"
        cfg.write_text(self.LIMITS)
        time.sleep(0.3)
        self.engine = subprocess.Popen(pinned(LOAD_CPU, [str(ENGINE), "--config", str(cfg), "--redis",
                                                         f"redis://127.0.0.1:{self.redis_port}", "--grpc", "127.0.0.1:0",
                                                         "--http", "127.0.0.1:0", "--algorithm", "gcra"]),
                                       stdout=subprocess.PIPE, text=True)
        words = dict(w.split("=", 1) for w in self.engine.stdout.readline().split()[1:])
        self.grpc_port = int(words["grpc"].rsplit(":", 1)[1])

    def _containers(self):
        self.redis = Container("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                                         "--save", "", "--appendonly", "no"])
        (SCRATCH / "limits.yaml").write_text(self.LIMITS)
        self.grpc_port, http_port = free_port(), free_port()
        time.sleep(0.5)
        self.engine = Container("ratelimit-engine", [
            "--config", "/loadtest/limits.yaml", "--redis", f"redis://127.0.0.1:{self.redis_port}",
            "--grpc", f"127.0.0.1:{self.grpc_port}", "--http", f"127.0.0.1:{http_port}", "--algorithm", "gcra"],
            volumes=[f"{SCRATCH}:/loadtest:ro"])
        wait_http(f"http://127.0.0.1:{http_port}/metrics", "ratelimit-engine", self.engine.running)

    def close(self):
        for p in (self.engine, self.redis):
            if CONTAINERS:
                p.close()
                continue
            p.kill()
            p.wait()


class Envoy:
    def __init__(self, bootstrap, concurrency, cpu=ENVOY_CPU):
        self.port, admin = free_port(), free_port()
        text = json.dumps(bootstrap).replace('"__LISTENER__"', str(self.port)).replace('"__ADMIN__"', str(admin))
        cfg = SCRATCH / f"envoy-{self.port}.json"
        cfg.write_text(text)
        self.admin = f"127.0.0.1:{admin}"
        if CONTAINERS:
            self.proc = None
            self.container = Container("envoy-chain", ["-c", f"/loadtest/envoy-{self.port}.json", "--concurrency",
                                                       str(concurrency), "--disable-hot-restart", "--log-level", "warn"],
                                       volumes=[f"{SCRATCH}:/loadtest:ro"])
            alive, logs = self.container.running, self.container.logs
        else:
            self.logf = open(SCRATCH / f"envoy-{self.port}.log", "w")
            self.proc = subprocess.Popen(
                pinned(cpu, [str(ENVOY), "-c", str(cfg), "--concurrency", str(concurrency), "--disable-hot-restart",
                             "--log-level", "warn"]),
                stdout=subprocess.DEVNULL, stderr=self.logf)
            alive = lambda: self.proc.poll() is None
            logs = lambda: (SCRATCH / f"envoy-{self.port}.log").read_text()[-2000:]
        try:
            wait_http(f"http://{self.admin}/ready", "Envoy", alive)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {logs()}") from None

    @property
    def pid(self):
        return self.container.pid if CONTAINERS else self.proc.pid

    def cpu_seconds(self):
        fields = pathlib.Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime

    def rss_mib(self):
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def close(self):
        if CONTAINERS:
            self.container.close()
            return
        self.proc.kill()
        self.proc.wait()
        self.logf.close()


class Nginx:
    """One nginx process (master_process off, one worker), pinned like Envoy,
    serving `conf` (an nginx.conf with __LISTENER__ for its port)."""

    def __init__(self, conf, cpu=ENVOY_CPU):
        self.port = free_port()
        d = SCRATCH / f"nginx-{self.port}"
        (d / "logs").mkdir(parents=True)
        path = d / "nginx.conf"
        path.write_text(conf.replace("__LISTENER__", str(self.port)).replace("__PID__", str(d / "nginx.pid")))
        self.logf = open(d / "error.log", "w")
        self.proc = subprocess.Popen(pinned(cpu, [str(NGINX), "-p", str(d), "-e", "stderr", "-c", str(path)]),
                                     stdout=subprocess.DEVNULL, stderr=self.logf)
        deadline = time.time() + 90
        modules = conf.count("\n    module ")
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(d / 'error.log').read_text()[-2000:]}")
            loaded = (d / "error.log").read_text().count("[wasm] successfully loaded")
            if loaded >= modules and get(self.port)[0] != 0:
                return
            time.sleep(0.1)
        raise RuntimeError("nginx did not become ready")

    def cpu_seconds(self):
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


def nginx_configs(addrs):
    """The nginx rows: plain proxy_pass, the no-op filter, each filter and the
    four chained, each with the Envoy rows' plugin configuration (sticky
    sessions through a map onto one upstream per backend)."""
    names = sorted(addrs)
    f = filter_configs(addrs)
    shm = {"rate_limit": "shm_kv rate_limit 10m;", "circuit_breaker": "shm_kv circuit_breaker 2m;",
           "retry": "shm_kv retry_budget 1m;", "sticky_session": "shm_kv sticky_health 1m;", "noop_filter": "",
           "bundle": "shm_kv rate_limit 10m;\n    shm_kv circuit_breaker 2m;\n    shm_kv retry_budget 1m;\n"
                     "    shm_kv sticky_health 1m;"}
    upstreams = "upstream demo {\n" + "".join(f"        server {addrs[n]};\n" for n in names) + "    }\n"
    upstreams += "".join(f"    upstream backend_{n} {{ server {addrs[n]}; }}\n" for n in names)
    sticky_map = ("map $http_x_sticky_upstream $sticky_backend {\n" +
                  "".join(f"        {addrs[n]} backend_{n};\n" for n in names) + "        default demo;\n    }\n")

    def conf(filters, sticky=False):
        modules = "".join(f"    module {file} {WASM / (file + '.wasm')};\n    {shm[file]}\n" for file, _ in filters)
        wasm_block = f"wasm {{\n{modules}}}\n" if filters else ""
        directives = "".join(f"            proxy_wasm {file} '{json.dumps(cfg)}';\n" for file, cfg in filters)
        target = "$sticky_backend" if sticky else "demo"
        return (f"daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log stderr info;\npid __PID__;\n"
                f"events {{}}\n{wasm_block}http {{\n    access_log off;\n    {upstreams}    {sticky_map}"
                f"    server {{\n        listen 127.0.0.1:__LISTENER__;\n        location / {{\n{directives}"
                f"            proxy_pass http://{target};\n            proxy_set_header Host $host;\n"
                f"        }}\n    }}\n}}\n")

    each = [("rate_limit", f["rate_limit"]), ("circuit_breaker", f["circuit_breaker"]), ("retry", f["retry"]),
            ("sticky_session", f["sticky"])]
    return {
        "nginx-proxy": conf([]),
        "nginx-noop-wasm": conf([("noop_filter", {})]),
        "nginx-rate-limit": conf(each[0:1]),
        "nginx-circuit-breaker": conf(each[1:2]),
        "nginx-retry": conf(each[2:3]),
        "nginx-sticky-session": conf(each[3:4], sticky=True),
        "nginx-chain-of-four": conf(each, sticky=True),
        "nginx-bundle-of-four": conf([("bundle", bundle_config(f))], sticky=True),
    }


# ---------------------------------------------------------------- Envoy configs

def sa(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


def endpoints(addrs):
    return [{"endpoint": {"address": sa(int(a.rsplit(":", 1)[1]), a.rsplit(":", 1)[0])}} for a in addrs]


def cluster(addrs, **extra):
    c = {"name": "demo", "connect_timeout": "1s", "type": "STATIC", "lb_policy": "ROUND_ROBIN",
         "load_assignment": {"cluster_name": "demo", "endpoints": [{"lb_endpoints": endpoints(addrs)}]},
         # Envoy's default of 3 concurrent retries would cap retries before any policy does.
         "circuit_breakers": {"thresholds": [{"max_retries": 10000}]}}
    c.update(extra)
    return c


def override_host_cluster(addrs):
    c = cluster(addrs)
    del c["lb_policy"]
    c["load_balancing_policy"] = {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
            "override_host_sources": [{"header": "x-sticky-upstream"}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.round_robin",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"}}}]}}}}]}
    return c


def route(**extra):
    r = {"match": {"prefix": "/"}, "route": {"cluster": "demo", "timeout": "5s"}}
    r["route"].update(extra)
    return r


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def wasm(name, file, config):
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": name, "root_id": name, "failure_policy": "FAIL_RELOAD",
                   "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": f"{WASM_SEEN}/{file}.wasm"}}},
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(config)}}}}


def bootstrap(filters, clusters, rt, direct_response=False):
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "ingress", "use_remote_address": True, "skip_xff_append": True,
           "http_protocol_options": {"accept_http_10": True}, "delayed_close_timeout": "0s",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "direct_response": {"status": 200}} if direct_response else rt]}]},
           "http_filters": filters + [ROUTER]}
    return {"admin": {"address": sa("__ADMIN__")},
            "static_resources": {
                "listeners": [{"name": "ingress", "address": sa("__LISTENER__"),
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": clusters}}


def filter_configs(addrs):
    names = sorted(addrs)
    return {
        "rate_limit": {"limits": [{"name": "all", "requests": 1000000, "period": "1s", "key": "client_ip"}],
                       "headers": "draft"},
        "circuit_breaker": {"key": "cluster", "consecutive_failures": 5, "min_requests": 10,
                            "expression": "LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5"},
        "retry": {"policies": [{"name": "reads", "match": {"methods": ["GET", "HEAD"]}, "max_retries": 3},
                               {"name": "default", "max_retries": 2}]},
        "sticky": {"backends": [{"name": n, "address": addrs[n]} for n in names],
                   "session_key": ["cookie:session", "client_ip"],
                   "cookie": {"name": "sticky", "secret": "loadtest-secret-0123456789"},
                   "health": {"failures": 3, "eject_for": "10s"}},
    }


def bundle_config(f, **override):
    """The bundle with the four policies of `filter_configs`, sections
    replaced by `override`."""
    return {"rate_limit": f["rate_limit"], "circuit_breaker": f["circuit_breaker"], "sticky_session": f["sticky"],
            "retry": f["retry"], **override}


def global_limit_config(rls_port):
    return {"limits": [{"name": "all", "requests": 1000000, "period": "1s", "key": "client_ip", "scope": "global"}],
            "global": {"cluster": "ratelimit", "domain": "bench", "timeout": "1s"}, "headers": "draft"}


def rls_cluster(port, host="127.0.0.1"):
    return {"name": "ratelimit", "connect_timeout": "1s", "type": "STATIC",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "ratelimit", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sa(port, host)}}]}]}}


def configs(addrs, rls_port=None):
    a = list(addrs.values())
    f = filter_configs(addrs)
    retry_route = {"retry_policy": {"retry_on": "connect-failure,reset", "num_retries": 2,
                                    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                                    "host_selection_retry_max_attempts": 5}}
    local_rl = {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "lrl",
        "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "lrl_on", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"runtime_key": "lrl_enf", "default_value": {"numerator": 100, "denominator": "HUNDRED"}}}}
    return {
        "router": bootstrap([], [cluster(a)], route()),
        "noop-wasm": bootstrap([wasm("noop", "noop_filter", {})], [cluster(a)], route()),
        "native-local-ratelimit": bootstrap([local_rl], [cluster(a)], route()),
        "native-ring-hash-cookie": bootstrap([], [cluster(a, lb_policy="RING_HASH")],
                                             route(hash_policy=[{"cookie": {"name": "sticky", "ttl": "3600s"}}])),
        "native-retry-policy": bootstrap([], [cluster(a)], route(retry_policy={"retry_on": "5xx,reset,connect-failure", "num_retries": 3})),
        "native-outlier-detection": bootstrap([], [cluster(a, outlier_detection={"consecutive_5xx": 5})], route()),
        "rate-limit": bootstrap([wasm("rate_limit", "rate_limit", f["rate_limit"])], [cluster(a)], route()),
        "circuit-breaker": bootstrap([wasm("circuit_breaker", "circuit_breaker", f["circuit_breaker"])], [cluster(a)], route()),
        "retry": bootstrap([wasm("retry", "retry", f["retry"])], [cluster(a)], route()),
        "sticky-session": bootstrap([wasm("sticky", "sticky_session", f["sticky"])], [override_host_cluster(a)], route(**retry_route)),
        "bundle-of-four": bootstrap([wasm("bundle", "bundle", bundle_config(f))],
                                    [override_host_cluster(a)], route(**retry_route)),
        # The breaker on consecutive failures alone (no window, no expression).
        "circuit-breaker-consecutive": bootstrap([wasm("circuit_breaker", "circuit_breaker",
                                                       {"key": "cluster", "consecutive_failures": 5})], [cluster(a)], route()),
        "bundle-of-four-consecutive-breaker": bootstrap(
            [wasm("bundle", "bundle", bundle_config(f, circuit_breaker={"key": "cluster", "consecutive_failures": 5}))],
            [override_host_cluster(a)], route(**retry_route)),
        # Envoy's native equivalents of the four, together on one route.
        "native-chain-of-four": bootstrap([local_rl], [cluster(a, lb_policy="RING_HASH", outlier_detection={"consecutive_5xx": 5})],
                                          route(hash_policy=[{"cookie": {"name": "sticky", "ttl": "3600s"}}],
                                                retry_policy={"retry_on": "5xx,reset,connect-failure", "num_retries": 3})),
        "chain-of-four": bootstrap([wasm("rate_limit", "rate_limit", f["rate_limit"]),
                                    wasm("circuit_breaker", "circuit_breaker", f["circuit_breaker"]),
                                    wasm("retry", "retry", f["retry"]),
                                    wasm("sticky", "sticky_session", f["sticky"])],
                                   [override_host_cluster(a)], route(**retry_route)),
        **({"rate-limit-global": bootstrap([wasm("rate_limit", "rate_limit", global_limit_config(rls_port))],
                                           [cluster(a), rls_cluster(rls_port)], route()),
            # Envoy's own rate limit filter asking the same service with the same descriptor.
            "native-ratelimit-service": bootstrap(
                [{"name": "envoy.filters.http.ratelimit", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": "bench", "timeout": "1s",
                    "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                                           "transport_api_version": "V3"}}}],
                [cluster(a), rls_cluster(rls_port)],
                route(rate_limits=[{"actions": [{"generic_key": {"descriptor_value": "all"}}, {"remote_address": {}}]}]))}
           if rls_port else {}),
    }


def probe_configs(addrs, repeat):
    """The compute probe (bench/compute-probe): each policy's and the bundle's
    whole request run `repeat` times on the in-memory recording host inside
    the VM, per real request; paired with repeat 0, the difference / repeat
    is one request's compute in V8."""
    a = list(addrs.values())
    f = filter_configs(addrs)
    inner = {"rate_limit": f["rate_limit"], "circuit_breaker": f["circuit_breaker"], "retry": f["retry"],
             "sticky_session": f["sticky"], "bundle": bundle_config(f), "noop": {}}
    return {f"probe-{name}-x{n}": bootstrap([wasm("probe", "compute_probe", {"filter": name, "repeat": n, "config": cfg})],
                                            [cluster(a)], route())
            for name, cfg in inner.items() for n in (0, repeat)} | {
        "probe-lean-breaker": bootstrap([wasm("probe", "compute_probe", {"filter": "lean", "repeat": 0})], [cluster(a)], route())}


NATIVE_OF = {"bundle-of-four": "native-chain-of-four", "chain-of-four": "native-chain-of-four",
             "rate-limit": "native-local-ratelimit", "rate-limit-global": "native-ratelimit-service", "sticky-session": "native-ring-hash-cookie",
             "retry": "native-retry-policy", "circuit-breaker": "native-outlier-detection"}


# ---------------------------------------------------------------- load generators

def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(port, conns, seconds):
    out = subprocess.run(load_cmd(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
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


def measure(bootstrap_cfg, concurrency, conn_counts, seconds, reps):
    e = Envoy(bootstrap_cfg, concurrency)
    try:
        wrk(e.port, 10, 1)  # warm up
        result = {}
        for conns in conn_counts:
            runs = []
            for _ in range(reps):
                c0 = e.cpu_seconds()
                w = wrk(e.port, conns, seconds)
                c1 = e.cpu_seconds()
                w["cpu_us_per_request"] = (c1 - c0) / max(w["requests"], 1) * 1e6
                runs.append(w)
            result[conns] = {k: spread([r[k] for r in runs]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")}
            result[conns]["non_2xx"] = sum(r["non_2xx"] for r in runs)
        result["rss_mib"] = e.rss_mib()
        return result
    finally:
        e.close()


def paired(base_cfg, cfg, seconds, reps, conns=10, server=None):
    """Both proxies on the same core, loaded at the same moment: the ratio of
    their CPU per request, which the host's drift cancels out of. `server`
    starts one (default: an Envoy with one worker)."""
    server = server or (lambda c: Envoy(c, 1))
    a = server(base_cfg)
    b = server(cfg)
    try:
        for e in (a, b):
            wrk(e.port, conns, 1)
        ratios = []
        for _ in range(reps):
            ca, cb = a.cpu_seconds(), b.cpu_seconds()
            oa, ob = wrk_pair(a.port, b.port, conns, seconds)
            na = int(re.search(r"(\d+) requests in", oa).group(1))
            nb = int(re.search(r"(\d+) requests in", ob).group(1))
            ua = (a.cpu_seconds() - ca) / max(na, 1)
            ub = (b.cpu_seconds() - cb) / max(nb, 1)
            ratios.append(ub / ua if ua > 0 else float("nan"))
        return spread(ratios)
    finally:
        a.close()
        b.close()


def wrk_pair(port_a, port_b, conns, seconds):
    """Two wrk runs started together, one per port; their outputs. In
    containers both run in one loadgen container, so that they start at
    the same moment."""
    args = lambda port: ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if CONTAINERS:
        script = f"{' '.join(args(port_a))} > /tmp/a & {' '.join(args(port_b))} > /tmp/b; wait; cat /tmp/a; echo @@@@; cat /tmp/b"
        out = subprocess.run(load_cmd(["sh", "-c", script]), capture_output=True, text=True).stdout
        oa, _, ob = out.partition("@@@@")
        return oa, ob
    pa = subprocess.Popen(pinned(LOAD_CPU, args(port_a)), stdout=subprocess.PIPE, text=True)
    pb = subprocess.Popen(pinned(LOAD_CPU, args(port_b)), stdout=subprocess.PIPE, text=True)
    return pa.communicate()[0], pb.communicate()[0]


# ---------------------------------------------------------------- seed scenarios

def get(port, path="/", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders())
    except OSError:
        return 0, {}
    finally:
        c.close()


def rate_limit_scenario_config(addrs):
    return bootstrap([wasm("rate_limit", "rate_limit", {"limits": [{"name": "main", "requests": 100, "period": "1s",
                                                                    "burst": 50, "key": "client_ip"}]})],
                     [cluster(list(addrs.values()))], route())


def scenario_rate_limit(addrs):
    e = Envoy(rate_limit_scenario_config(addrs), 2)
    try:
        out = subprocess.run(load_cmd(["ab", "-n", "1000", "-c", "10", f"http://127.0.0.1:{e.port}/"]),
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


def scenario_key_flood(addrs, keys=1_000_000, table_size=65536):
    """The rate limiter keyed on client_ip with trusted_hops 1, flooded with
    distinct X-Forwarded-For addresses: Envoy's resident memory before and
    after, against the table it was configured with."""
    cfg = bootstrap([wasm("rate_limit", "rate_limit", {"limits": [{"name": "flood", "requests": 1000000, "period": "1s",
                                                                   "key": "client_ip"}],
                                                       "trusted_hops": 1, "table_size": table_size})],
                    [cluster(list(addrs.values()))], route(), direct_response=True)
    e = Envoy(cfg, 2)
    try:
        rss_before = e.rss_mib()
        sent, started = 0, time.time()
        while sent < keys and time.time() - started < 600:
            script = "/bench/flood.lua" if CONTAINERS else str(ROOT / "bench" / "flood.lua")
            out = subprocess.run(load_cmd(["wrk", "-t2", "-c32", "-d10s", "-s", script, f"http://127.0.0.1:{e.port}/"]),
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


def scenario_cookie_vs_ip_hash(addrs):
    rows = []
    for label, key in (("cookie stickiness (sticky-session, session cookie)", ["cookie:session"]),
                       ("nginx-style ip_hash (sticky-session keyed on client_ip)", ["client_ip"])):
        f = filter_configs(addrs)["sticky"]
        f["session_key"] = key
        f.pop("cookie")
        f["backend_header"] = "x-sticky-backend"
        e = Envoy(bootstrap([wasm("sticky", "sticky_session", f)], [override_host_cluster(list(addrs.values()))], route()), 2)
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


def scenario_random_failures(names):
    rows = []
    for label, use_retry in (("router only (no retry)", False), ("with the retry filter", True)):
        b = Backends(names)
        try:
            for n in names:
                b.set(n, "fail=0.2&random=1")
            filters = [wasm("retry", "retry", filter_configs(b.addrs)["retry"])] if use_retry else []
            e = Envoy(bootstrap(filters, [cluster(list(b.addrs.values()))], route()), 2)
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


def scenario_kill_one_of_three(names):
    b = Backends(names)
    try:
        e = Envoy(configs(b.addrs)["chain-of-four"], 2)
        try:
            failed, total = 0, 3000
            for i in range(total):
                if i == total // 2:
                    b.kill(names[1])
                status, _ = get(e.port, headers={"cookie": f"session=u{i % 60}"})
                failed += status != 200
            return [{"scenario": f"{total} requests over 60 sessions; backend {names[1]} of three killed halfway; "
                                 "rate limit, breaker, retry and sticky sessions chained",
                     "expected": "no failed request (the route retry covers the requests before the sticky filter ejects it)",
                     "measured": f"{failed} failed requests", "ok": failed == 0}]
        finally:
            e.close()
    finally:
        b.close()


# ---------------------------------------------------------------- report

def svg_chart(rows, path):
    """Bars of CPU per request (us) and p99 (ms) per configuration, --concurrency 1, 10 connections."""
    width, bar_h, gap, left = 760, 14, 10, 190
    cpu_max = max(r["cpu"] for r in rows) or 1
    p99_max = max(r["p99"] for r in rows) or 1
    height = 60 + len(rows) * (2 * bar_h + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="10" y="18" font-size="13">Envoy CPU per request (blue, us) and p99 latency (orange, ms); --concurrency 1, 10 connections</text>']
    y = 40
    for r in rows:
        wc = (width - left - 80) * r["cpu"] / cpu_max
        wp = (width - left - 80) * r["p99"] / p99_max
        out.append(f'<text x="10" y="{y + bar_h}">{r["name"]}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{wc:.1f}" height="{bar_h - 2}" fill="#3b6fb6"/>')
        out.append(f'<text x="{left + wc + 4:.1f}" y="{y + bar_h - 3}">{r["cpu"]:.1f}</text>')
        out.append(f'<rect x="{left}" y="{y + bar_h}" width="{wp:.1f}" height="{bar_h - 2}" fill="#e08a2c"/>')
        out.append(f'<text x="{left + wp + 4:.1f}" y="{y + 2 * bar_h - 3}">{r["p99"]:.2f}</text>')
        y += 2 * bar_h + gap
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


COMPOSE = ROOT / "bench" / "compose"
# The compose harness's fixed addresses (host networking, docker-compose.yml).
COMPOSE_BACKENDS = {"a": "127.0.0.1:8081", "b": "127.0.0.1:8082", "c": "127.0.0.1:8083"}
COMPOSE_PORTS = {"envoy-chain.yaml": (10000, 9901), "envoy-rate-limit.yaml": (10001, 9902),
                 "envoy-global-rate-limit.yaml": (10002, 9903)}
COMPOSE_RLS_GRPC = 18081


def compose_files():
    """The compose harness's Envoy configs, generated from the same builders
    as the load test: fixed ports on 127.0.0.1, the .wasm files mounted at /wasm."""
    def render(name, cfg):
        listener, admin = COMPOSE_PORTS[name]
        text = json.dumps(cfg, indent=2)
        text = text.replace('"port_value": "__LISTENER__"', f'"port_value": {listener}')
        text = text.replace('"port_value": "__ADMIN__"', f'"port_value": {admin}')
        return text.replace(str(WASM), "/wasm") + "\n"
    global_cfg = bootstrap([wasm("rate_limit", "rate_limit", global_limit_config(COMPOSE_RLS_GRPC))],
                           [cluster(list(COMPOSE_BACKENDS.values())), rls_cluster(COMPOSE_RLS_GRPC)], route())
    return {"envoy-chain.yaml": render("envoy-chain.yaml", configs(COMPOSE_BACKENDS)["chain-of-four"]),
            "envoy-rate-limit.yaml": render("envoy-rate-limit.yaml", rate_limit_scenario_config(COMPOSE_BACKENDS)),
            "envoy-global-rate-limit.yaml": render("envoy-global-rate-limit.yaml", global_cfg),
            "limits-bench.yaml": RateLimitService.LIMITS}


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
    if args.compose:
        global CONTAINERS, WASM_SEEN
        CONTAINERS, WASM_SEEN = True, "/wasm"
        SCRATCH.chmod(0o755)  # the Envoy image may run as a user of its own
        args.no_nginx = True
        if args.smoke:
            return smoke()
    for tool in ((BACKEND, ENGINE) if args.compose else (ENVOY, BACKEND, ENGINE)) + (WASM / "noop_filter.wasm", WASM / "bundle.wasm"):
        if not pathlib.Path(tool).exists():
            sys.exit(f"{tool} is missing: run `make loadtest` (it builds everything)")
    conn_counts = [int(c) for c in args.conns.split(",")]
    names = ["a", "b", "c"]
    started = datetime.datetime.now(datetime.timezone.utc)
    pinning = (f"Envoy on core {ENVOY_CPU}; wrk, ab and the demo backends on core {LOAD_CPU} (taskset)" if not CONTAINERS else
               f"every process in a container of bench/compose/docker-compose.yml on host networking; Envoy on cpuset "
               f"{os.environ.get('ENVOY_CPUSET', ENVOY_CPU)}, wrk, ab, the demo backends, Redis and the engine on cpuset "
               f"{os.environ.get('LOAD_CPUSET', LOAD_CPU)}")
    report = {"generated": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": {"cpus": os.cpu_count()},
              "pinning": pinning, "runtime": "containers" if CONTAINERS else "processes",
              "seconds": args.seconds, "reps": args.reps, "configs": {}, "paired": {}, "scenarios": []}
    backends = Backends(names)
    rls = RateLimitService() if ENGINE.exists() else None
    try:
        all_cfgs = configs(backends.addrs, rls.grpc_port if rls else None)
        if args.probe:
            all_cfgs.update(probe_configs(backends.addrs, args.probe))
        chosen = [] if args.scenarios_only else [c for c in all_cfgs if not args.only or c in args.only.split(",")]
        for name in [] if args.paired_only else chosen:
            for conc in (1, 2):
                log(f"measuring {name} --concurrency {conc}")
                report["configs"].setdefault(name, {})[conc] = measure(all_cfgs[name], conc, conn_counts, args.seconds, args.reps)
        for name in chosen:
            if name == "router":
                continue
            log(f"paired: router vs {name}")
            report["paired"][name] = paired(all_cfgs["router"], all_cfgs[name], args.seconds, args.reps)
        if not args.no_nginx and not args.scenarios_only and NGINX.exists():
            ngx = nginx_configs(backends.addrs)
            for name in [n for n in ngx if n != "nginx-proxy" and (not args.only or n in args.only.split(","))]:
                log(f"paired: nginx-proxy vs {name}")
                report.setdefault("paired_nginx", {})[name] = paired(ngx["nginx-proxy"], ngx[name], args.seconds,
                                                                      args.reps, server=Nginx)
        elif not args.no_nginx and not args.scenarios_only:
            log(f"nginx rows skipped: {NGINX} not found (set NGINX_WASM_BIN)")
    finally:
        backends.close()
        if rls:
            rls.close()
    if not args.skip_scenarios:
        log("seed scenarios")
        b = Backends(names)
        try:
            report["scenarios"] += scenario_rate_limit(b.addrs)
            report["scenarios"] += scenario_cookie_vs_ip_hash(b.addrs)
            report["scenarios"] += scenario_key_flood(b.addrs)
        finally:
            b.close()
        report["scenarios"] += scenario_random_failures(names)
        report["scenarios"] += scenario_kill_one_of_three(names)

    # ---- tables
    lines = [f"# Load test ({report['generated']})", "",
             f"`{'make compose-loadtest' if CONTAINERS else 'make loadtest'}` on {os.cpu_count()} cores. {report['pinning']}. "
             f"wrk runs of {args.seconds} s, {args.reps} repetitions: median (min-max).", ""]
    conns0 = conn_counts[0]
    lines += ["## Per configuration", "",
              "| config | concurrency | conns | requests/s | p50 ms | p99 ms | Envoy CPU us/request | RSS MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda s, d=1: f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"
    # Added CPU in no-op floors ("" when the floor was not measured).
    in_floors = lambda added, floor: f"{added / floor:.2f}" if floor == floor and floor > 0 else ""
    for name, per_conc in report["configs"].items():
        for conc, res in per_conc.items():
            for conns in conn_counts:
                r = res[conns]
                lines.append(f"| {name} | {conc} | {conns} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
                             f"{fmt(r['cpu_us_per_request'])} | {res['rss_mib']:.0f} |")
    lines += ["", "## Paired with router-only (same core, loaded at the same moment)", "",
              "CPU per request relative to router-only, median (min-max) of the paired runs; "
              "added = ratio - 1, and how many no-op floors that is.", "",
              "| config | CPU vs router | added vs router | in no-op floors | native equivalent's added |",
              "| --- | --- | --- | --- | --- |"]
    floor = report["paired"].get("noop-wasm", {}).get("median", float("nan")) - 1
    for name, s in report["paired"].items():
        added = s["median"] - 1
        native = NATIVE_OF.get(name)
        native_added = f"{report['paired'][native]['median'] - 1:+.1%} ({native})" if native in report["paired"] else ""
        lines.append(f"| {name} | {fmt(s, 3)} | {added:+.1%} | {in_floors(added, floor)} | {native_added} |")
    if report.get("paired_nginx"):
        lines += ["", "## nginx, paired with plain proxy_pass (same core, loaded at the same moment)", "",
                  "nginx 1.28.3 with ngx_wasm_module (Wasmtime), one worker pinned like Envoy, the same plugin "
                  "configurations. CPU per request relative to nginx with no filter; added, and in nginx no-op floors.", "",
                  "| config | CPU vs proxy_pass | added | in nginx no-op floors | the Envoy row's floors |",
                  "| --- | --- | --- | --- | --- |"]
        nfloor = report["paired_nginx"].get("nginx-noop-wasm", {}).get("median", float("nan")) - 1
        for name, s in report["paired_nginx"].items():
            added = s["median"] - 1
            envoy = report["paired"].get(name.removeprefix("nginx-"))
            envoy_floors = in_floors(envoy["median"] - 1, floor) if envoy else ""
            lines.append(f"| {name} | {fmt(s, 3)} | {added:+.1%} | {in_floors(added, nfloor)} | {envoy_floors} |")
    trio = [n for n in ("rate-limit", "rate-limit-global", "native-ratelimit-service") if n in report["configs"]]
    if "rate-limit" in trio and "rate-limit-global" in trio:
        lines += ["", "## A global limit next to the local limiter", "",
                  "The same never-refusing limit per client: counted in Envoy's shared data (rate-limit), by "
                  "ratelimit-engine and Redis through our filter over gRPC (rate-limit-global), and, when measured, "
                  "by the same service through Envoy's own ratelimit filter (native-ratelimit-service). The engine and "
                  "Redis share the load core with wrk. Median of the runs; values in the order of the header.", "",
                  f"| concurrency | conns | p50 ms ({' / '.join(trio)}) | p99 ms | Envoy CPU us/request | paired CPU vs router |",
                  "| --- | --- | --- | --- | --- | --- |"]
        ratio = " / ".join(f"{report['paired'][n]['median']:.2f}" if n in report["paired"] else "-" for n in trio)
        for conc in report["configs"]["rate-limit"]:
            for conns in conn_counts:
                cell = lambda key, d: " / ".join(f"{report['configs'][n][conc][conns][key]['median']:.{d}f}" for n in trio)
                lines.append(f"| {conc} | {conns} | {cell('p50_ms', 2)} | {cell('p99_ms', 2)} | "
                             f"{cell('cpu_us_per_request', 1)} | {ratio} |")
    if report["scenarios"]:
        lines += ["", "## Seed scenarios", "", "| scenario | expected | measured |", "| --- | --- | --- |"]
        lines += [f"| {s['scenario']} | {s['expected']} | {s['measured']} |" for s in report["scenarios"]]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    base = args.out or (("compose-" if CONTAINERS else "") + ("scenarios" if args.scenarios_only else "loadtest"))
    (OUT / f"{base}.md").write_text(text)
    (OUT / f"{base}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    chart_rows = [{"name": n, "cpu": c[1][conns0]["cpu_us_per_request"]["median"], "p99": c[1][conns0]["p99_ms"]["median"]}
                  for n, c in report["configs"].items() if 1 in c]
    chart = base.endswith("loadtest") and bool(chart_rows)
    if chart:
        svg_chart(chart_rows, OUT / f"{base}.svg")
    log(f"written: {OUT / (base + '.md')}, {OUT / (base + '.json')}" + (f", {OUT / (base + '.svg')}" if chart else ""))


def smoke():
    """The compose harness's smoke run (`make test`): the four filters
    chained behind Envoy with a backend killed halfway, and the rate-limit
    seed scenario under ab, all in containers. Exit 1 when either is off."""
    started = time.time()
    rows = scenario_kill_one_of_three(["a", "b", "c"])
    b = Backends(["a", "b", "c"])
    try:
        rows += scenario_rate_limit(b.addrs)[:1]
    finally:
        b.close()
    print("| scenario | expected | measured | |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenario']} | {r['expected']} | {r['measured']} | {'ok' if r['ok'] else 'OFF'} |")
    log(f"compose smoke run: {time.time() - started:.0f} s")
    if not all(r["ok"] for r in rows):
        sys.exit("compose smoke run: a scenario is off")


if __name__ == "__main__":
    main()
