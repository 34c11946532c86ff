"""The processes a load test runs: demo backends, Redis and the engine,
Envoy, nginx, each as a plain process pinned to a core or as a container of
the compose file (`Run.containers`)."""
import http.client
import json
import pathlib
import subprocess
import time
import urllib.request

from .configs import RATE_LIMIT_SERVICE_LIMITS
from .env import BACKEND, CLK, COMPOSE_CMD, DOCKER, ENGINE, ENVOY, ENVOY_CPU, LOAD_CPU, NATIVE_MODULE, NGINX, ROOT, free_port, pinned


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


class Container:
    """One container of the compose file's `service`, run with `args` (its
    command) by docker-compose on the harness's daemon; the host sees its
    processes, so CPU and memory are read from /proc as for a process."""

    def __init__(self, service, args, volumes=()):
        self.name = f"lt-{service}-{free_port()}"
        cmd = list(COMPOSE_CMD) + ["run", "-d", "--no-deps", "--name", self.name]
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


def load_cmd(run, cmd):
    """A load generator's command line: pinned to the load core here, or in
    the loadgen container (which has bench/ at /bench)."""
    if run.containers:
        return list(COMPOSE_CMD) + ["run", "--rm", "--no-deps", "-T", "-v", f"{ROOT / 'bench'}:/bench:ro", "loadgen", *cmd]
    return pinned(LOAD_CPU, cmd)


def stop(run, procs):
    """Stops processes (or removes containers) a run started."""
    for p in procs:
        if run.containers:
            p.close()
            continue
        p.kill()
        p.wait()


class Backends:
    """Demo backends, one process each so that one can be killed."""

    def __init__(self, run, names, extra=()):
        self.run = run
        self.procs, self.addrs = {}, {}
        for n in names:
            if run.containers:
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
        if not self.run.containers:
            self.procs[name].wait()

    def set(self, name, query):
        urllib.request.urlopen(f"http://{self.addrs[name]}/_demo/set?{query}", timeout=5).read()

    def requests(self, name):
        return json.loads(urllib.request.urlopen(f"http://{self.addrs[name]}/_demo/stats", timeout=5).read())["requests"]

    def close(self):
        stop(self.run, self.procs.values())


class RateLimitService:
    """Redis and one ratelimit-engine on the load core, for the global-limit row.
    The limit (1e9 per second per client) never refuses: what is measured is
    the cost of asking."""

    LIMITS = RATE_LIMIT_SERVICE_LIMITS

    def __init__(self, run):
        self.run = run
        self.redis_port = free_port()
        if run.containers:
            self._containers()
            return
        self.redis = subprocess.Popen(pinned(LOAD_CPU, ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                                                        "--save", "", "--appendonly", "no"]), stdout=subprocess.DEVNULL)
        cfg = run.scratch / "limits.yaml"
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
        (self.run.scratch / "limits.yaml").write_text(self.LIMITS)
        self.grpc_port, self.http_port = free_port(), free_port()
        time.sleep(0.5)
        self.engine = Container("ratelimit-engine", [
            "--config", "/loadtest/limits.yaml", "--redis", f"redis://127.0.0.1:{self.redis_port}",
            "--grpc", f"127.0.0.1:{self.grpc_port}", "--http", f"127.0.0.1:{self.http_port}", "--algorithm", "gcra"],
            volumes=[f"{self.run.scratch}:/loadtest:ro"])
        wait_http(f"http://127.0.0.1:{self.http_port}/metrics", "ratelimit-engine", self.engine.running)

    def close(self):
        stop(self.run, (self.engine, self.redis))


class Envoy:
    """One Envoy serving `bootstrap` (with __LISTENER__ and __ADMIN__ for its
    ports), pinned to the Envoy core."""

    def __init__(self, run, bootstrap, concurrency, cpu=ENVOY_CPU):
        self.run = run
        scratch = run.scratch
        self.port, admin = free_port(), free_port()
        text = json.dumps(bootstrap).replace('"__LISTENER__"', str(self.port)).replace('"__ADMIN__"', str(admin))
        text = text.replace("__WASM__", run.wasm_seen).replace("__NATIVE_MODULE__", str(NATIVE_MODULE))
        cfg = scratch / f"envoy-{self.port}.json"
        cfg.write_text(text)
        self.admin = f"127.0.0.1:{admin}"
        if run.containers:
            self.proc = None
            self.container = Container("envoy-chain", ["-c", f"/loadtest/envoy-{self.port}.json", "--concurrency",
                                                       str(concurrency), "--disable-hot-restart", "--log-level", "warn"],
                                       volumes=[f"{scratch}:/loadtest:ro"])
            alive, logs = self.container.running, self.container.logs
        else:
            self.logf = open(scratch / f"envoy-{self.port}.log", "w")
            self.proc = subprocess.Popen(
                pinned(cpu, [str(ENVOY), "-c", str(cfg), "--concurrency", str(concurrency), "--disable-hot-restart",
                             "--log-level", "warn"]),
                stdout=subprocess.DEVNULL, stderr=self.logf)
            alive = lambda: self.proc.poll() is None
            logs = lambda: (scratch / f"envoy-{self.port}.log").read_text()[-2000:]
        try:
            wait_http(f"http://{self.admin}/ready", "Envoy", alive)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {logs()}") from None

    @property
    def pid(self):
        return self.container.pid if self.run.containers else self.proc.pid

    def cpu_seconds(self):
        fields = pathlib.Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime

    def rss_mib(self):
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def close(self):
        if self.run.containers:
            self.container.close()
            return
        self.proc.kill()
        self.proc.wait()
        self.logf.close()


class Nginx:
    """One nginx process (master_process off, one worker), pinned like Envoy,
    serving `conf` (an nginx.conf with __LISTENER__ for its port)."""

    def __init__(self, run, conf, cpu=ENVOY_CPU):
        self.port = free_port()
        d = run.scratch / f"nginx-{self.port}"
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
