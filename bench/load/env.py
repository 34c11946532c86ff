"""What every part of the load test shares: where things are, and the run's
own settings (`Run`), made once by the command line and passed along.
Nothing here changes after import."""
import dataclasses
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
ENVOY = ROOT / ".venv" / "bin" / "envoy"
# The shipped modules (`make build`, scripts/wasm-opt.sh), and the no-op and
# probe modules copied there as built (`make loadtest`).
WASM = ROOT / "target" / "wasm"
# The native build (filters/native): one dynamic module for every policy
# (RESILIENCE_NATIVE_MODULE: another build of it, e.g. bench/native_breakdown.py's
# with symbols).
NATIVE_MODULE = pathlib.Path(os.environ.get("RESILIENCE_NATIVE_MODULE") or ROOT / "target" / "native" / "libresilience.so")
BACKEND = ROOT / "target" / "release" / "demo-backend"
ENGINE = ROOT / "target" / "release" / "ratelimit-engine"
OUT = ROOT / "bench" / "results"
SAMPLES = ROOT / "envoy"
COMPOSE = ROOT / "bench" / "compose"
ENVOY_CPU, LOAD_CPU = "0", "1"
# nginx with ngx_wasm_module for the nginx rows: NGINX_WASM_BIN, else the
# one beside the clone; without either the nginx rows are skipped.
NGINX = pathlib.Path(os.environ.get("NGINX_WASM_BIN") or ROOT.parent / "shared" / "nginx-wasm" / "nginx")
CLK = os.sysconf("SC_CLK_TCK")
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
COMPOSE_CMD = tuple(os.environ.get("DOCKER_COMPOSE", "docker-compose").split()) + (
    "-f", str(COMPOSE / "docker-compose.yml"), "-p", "resilience-bench")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run's settings. `containers`: every process runs in a container
    of bench/compose/docker-compose.yml (docker-compose run, host
    networking) on the daemon DOCKER_HOST names (bench/compose/harness.sh).
    `scratch`: this run's temporary directory. `wasm_seen`: where the .wasm
    files are, as the proxy sees them."""
    scratch: pathlib.Path
    containers: bool = False

    @property
    def wasm_seen(self):
        return "/wasm" if self.containers else str(WASM)


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
