"""Separate hosts on one machine: network namespaces on a private bridge, `ray start` in each.

Why: a Ray cluster whose nodes share one network stack hides what only separate hosts show
(a driver that must sit on a Ray node, ranks that advertise the wrong address, a listener
bound to the wrong interface, a run directory that only exists on the workers' disk).
Docker shows it too but costs minutes; namespaces cost seconds and run in `make test`.

The layout, every name carrying one random suffix HEX so parallel or crashed sessions
never collide:

    dtHEX-sw       the switch: a namespace holding the bridge dtbrHEX, so bridged traffic
                   never meets the machine's own iptables (Docker sets FORWARD to DROP,
                   and br_netfilter sends bridged frames through it)
    dtHEX-h0       the head: `ray start --head --num-cpus=0` at 10.213.X.10
    dtHEX-h1 ...   worker hosts, `--num-cpus=1` each, at .11, .12, ...
    dtHEX-d        the driver's host at .9: joins with `--num-cpus=0`, runs `disttrain train`
    /tmp/dtnsHEX/  h0/, h1/, ..., d/: each node's Ray temp dir (short: it holds unix
                   sockets); runs/: where drivers write run directories; logs/; owner

Each host has its loopback up and one veth (`eth0` inside, `vHEXhN` on the bridge) with an
address on a /24 picked at random from 10.213.0.0/16 and not routed on this machine. The
root namespace gets no address on that subnet: the hosts talk only to each other and to
their own loopback, and tests reach them only from inside (`NetnsCluster.run`).

A host is more than a network namespace: it has PID and mount namespaces of its own too,
held by a small PID 1 (`unshare --pid --fork --mount-proc`), and every command on it runs
through `nsenter -t PID1 -n -p -m`. Two reasons. Ray finds "the local raylet" of a driver
by listing processes: with one process table for every host, a driver on a host with no
Ray node silently attached to the head's node (through its unix socket on the shared
/tmp), hiding issue 8's bug; with its own table it finds only its host's node, or none.
And a host is lost whole by killing its PID 1: the kernel kills everything on it. Every
host but the driver's sees an empty tmpfs over runs/, so no directory is shared between
the driver and the nodes that run ranks. Ports need no free_port(): each host has a port
space of its own. All nodes share one Ray token (token auth stays on) through
RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, and the head declares a vanished host dead after
about 12 s of failed health checks (HEALTH_CHECKS) instead of a minute or more.

Cleanup, also after a failed test or a failed start (each step runs even if one before it
failed): every `ray start --block` runs in a process group of its own and is stopped with
SIGTERM then SIGKILL; each host's PID 1 is SIGKILLed, which kills whatever still runs on
it; whatever is left in a network namespace (`ip netns pids`) is SIGKILLed; then the
namespaces (taking their veths and the bridge with them) and /tmp/dtnsHEX are removed. A
session that died before it could clean up (SIGKILL, a timeout's os._exit) left
/tmp/dtnsHEX/owner naming its pid and namespaces; the next session removes what such a
dead owner left behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from disttrain.bench.netns import _ip, free_subnet, kill_namespace
from tests.docker.test_image import env as clean_env
from tests.launch.test_faults import wait_for
from tests.launch.test_no_shared_disk import _stop
from tests.train.helpers import REPO

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
DISTTRAIN = str(VENV_BIN / "disttrain")
HEAD_PORT = 6379  # each namespace has ports of its own: nothing else can hold this one
BASE_PREFIX = "dtns"
# A host that vanishes (no FIN, no RST) is declared dead by the head after its health
# checks fail: by default 5 checks of up to 10 s each, here 4 of up to 2 s, so a lost host
# frees its resources for a restart in about 12 s instead of a minute or more.
HEALTH_CHECKS = json.dumps({"health_check_period_ms": 1000, "health_check_timeout_ms": 2000,
                            "health_check_failure_threshold": 4})


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.213.X.0/24 that no route or address of this machine overlaps."""
    return free_subnet(213)


def reap_stale_sessions() -> None:
    """Remove namespaces and folders left by sessions whose owning process is gone."""
    for owner in Path("/tmp").glob(f"{BASE_PREFIX}*/owner"):
        try:
            record = json.loads(owner.read_text())
            os.kill(record["pid"], 0)
            continue  # its owner still runs
        except ProcessLookupError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or half written: leave it alone
        for ns in record.get("namespaces", []):
            kill_namespace(ns)
            _ip("netns", "delete", ns, check=False)
        shutil.rmtree(owner.parent, ignore_errors=True)


def unavailable(reason: str):
    """Skip with reason, but fail under CI=true: CI never skips the hosts tests silently."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"network namespaces unavailable in CI: {reason}")
    pytest.skip(reason)


def check_prerequisites() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool} for network namespaces"
    return None


# PID 1 of a host's PID namespace: reaps every orphan (Ray's processes outlive their
# parents) and exits on SIGTERM, which makes the kernel SIGKILL the whole host.
INIT = """
import os, signal, time
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""


class Host:
    """One host: its network namespace, address, Ray temp dir, the PID 1 of its own PID and
    mount namespaces (`init`, an `unshare` whose child is that PID 1) and its `ray start`."""

    def __init__(self, key: str, ns: str, ip: str, temp_dir: Path):
        self.key, self.ns, self.ip, self.temp_dir = key, ns, ip, temp_dir
        self.init: subprocess.Popen | None = None
        self.init_pid: int | None = None  # PID 1 inside, as the machine numbers it
        self.ray: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"Host({self.key} {self.ns} {self.ip})"


class NetnsCluster:
    """A head, `workers` worker hosts and a driver host, each its own network, PID and
    mount namespace, forming one Ray cluster with token auth. Use as a context manager."""

    def __init__(self, workers: int = 3, mask_runs: bool = True):
        self.workers, self.mask_runs = workers, mask_runs
        self.hex = secrets.token_hex(3)
        self.base = Path(f"/tmp/{BASE_PREFIX}{self.hex}")
        self.runs, self.logs = self.base / "runs", self.base / "logs"
        self.token = secrets.token_hex(32)
        self.env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                             OPENBLAS_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
                             PYTHONPATH=str(REPO))
        self.switch = f"dt{self.hex}-sw"
        self.bridge = f"dtbr{self.hex}"
        self.hosts: dict[str, Host] = {}
        self.lost: set[str] = set()  # keys of hosts lost with lose_host
        self._made: list[str] = []  # namespaces, in the order made
        self.subnet: ipaddress.IPv4Network | None = None

    # --- the hosts ---------------------------------------------------------------------

    @property
    def head(self) -> Host:
        return self.hosts["h0"]

    @property
    def driver(self) -> Host:
        return self.hosts["d"]

    @property
    def worker_hosts(self) -> list[Host]:
        return [h for k, h in self.hosts.items() if k not in ("h0", "d", *self.lost)]

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{HEAD_PORT}"

    def host_of(self, ip: str) -> Host:
        return next(h for h in self.hosts.values() if h.ip == ip)

    def __enter__(self) -> NetnsCluster:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _setup(self) -> None:
        reap_stale_sessions()
        for folder in (self.base, self.runs, self.logs):
            folder.mkdir(mode=0o755)
        self.subnet = _free_subnet()
        self._add_namespace(self.switch)
        self._in(self.switch, "ip", "link", "add", self.bridge, "type", "bridge")
        self._in(self.switch, "ip", "link", "set", self.bridge, "up")
        keys = ["h0", *[f"h{i}" for i in range(1, self.workers + 1)], "d"]
        for key in keys:
            self._add_host(key)
        self._start_node(self.head)
        self.wait_nodes(1, what="the head node")
        with ThreadPoolExecutor(len(keys) - 1) as pool:  # join at once: each takes seconds
            list(pool.map(self._start_node, [self.hosts[k] for k in keys[1:]]))
        self.wait_nodes(len(keys), what=f"{len(keys)} nodes")

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        self.base.joinpath("owner").write_text(json.dumps(
            {"pid": os.getpid(), "namespaces": self._made}))
        self._in(ns, "ip", "link", "set", "lo", "up")

    def _add_host(self, key: str) -> Host:
        ns = f"dt{self.hex}-{key}"
        number = 9 if key == "d" else 10 + int(key[1:])
        ip = str(self.subnet.network_address + number)
        host = self.hosts[key] = Host(key, ns, ip, self.base / key)
        host.temp_dir.mkdir()
        self._add_namespace(ns)
        outside = f"v{self.hex}{key}"  # at most 15 characters, as every interface name
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", outside, "netns", self.switch)
        self._in(self.switch, "ip", "link", "set", outside, "master", self.bridge, "up")
        self._in(ns, "ip", "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        self._in(ns, "ip", "link", "set", "eth0", "up")
        self._start_init(host)
        return host

    def _start_init(self, host: Host) -> None:
        """PID and mount namespaces of the host's own: its `ps` sees only its processes
        (Ray finds "the local raylet" with ps: with one process table for all hosts, a
        driver would attach to another host's node), and, on every host but the driver's,
        an empty tmpfs over runs/, so they share no directory with the driver."""
        init = [sys.executable, "-c", INIT]
        if self.mask_runs and host.key != "d":
            init = ["sh", "-c", 'mount -t tmpfs dtns-mask "$1" && shift && exec "$@"', "sh",
                    str(self.runs), *init]
        host.init = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, "unshare", "--pid", "--fork", "--kill-child",
             "--mount-proc", "--propagation", "private", *init],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        children = Path(f"/proc/{host.init.pid}/task/{host.init.pid}/children")

        def child() -> int | None:
            text = children.read_text().split() if children.exists() else []
            return int(text[0]) if text else None

        host.init_pid = wait_for(child, 30, f"PID 1 of {host.ns}")
        # Ready once its /proc is the new one (mounted before init runs).
        wait_for(lambda: self._enter(host, "true").returncode == 0 and "python" in
                 self._enter(host, "cat", "/proc/1/cmdline").stdout, 30,
                 f"{host.ns} to start")

    def _enter(self, host: Host, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.on(host.key, *cmd), capture_output=True, text=True,
                              timeout=30)

    def on(self, key: str, *cmd: str) -> list[str]:
        """The argv that runs cmd on host key: inside its network, PID and mount namespaces."""
        return ["nsenter", "-t", str(self.hosts[key].init_pid), "-n", "-p", "-m",
                f"--wd={REPO}", "--", *cmd]

    def add_worker(self) -> Host:
        """One more worker host, joined to the cluster (e.g. to replace a lost one)."""
        key = f"h{max(int(k[1:]) for k in self.hosts if k != 'd') + 1}"
        host = self._add_host(key)
        self._start_node(host)
        return host

    def _in(self, ns: str, *cmd: str) -> None:
        done = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {ns}: {done.stderr.strip()}")

    def _start_node(self, host: Host) -> None:
        args = [RAY, "start", f"--node-ip-address={host.ip}", f"--temp-dir={host.temp_dir}",
                "--disable-usage-stats", "--object-store-memory=100000000", "--block"]
        if host.key == "h0":
            args += ["--head", f"--port={HEAD_PORT}", "--num-cpus=0",
                     "--include-dashboard=false", f"--system-config={HEALTH_CHECKS}"]
        else:
            args += [f"--address={self.address}",
                     "--num-cpus=0" if host.key == "d" else "--num-cpus=1"]
        with open(self.logs / f"{host.key}.log", "ab") as log:
            host.ray = subprocess.Popen(self.on(host.key, *args), env=self.env, cwd=REPO,
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    # --- using the hosts ---------------------------------------------------------------

    def run(self, key: str, *cmd: str, timeout: float = 120, **kwargs):
        """Run cmd on host key and wait (capture_output, text)."""
        return subprocess.run(self.on(key, *cmd), env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def popen(self, key: str, *cmd: str, **kwargs) -> subprocess.Popen:
        """Start cmd on host key (text pipes for stdout and stderr unless told)."""
        kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
                  **kwargs}
        return subprocess.Popen(self.on(key, *cmd), env=self.env, cwd=REPO, **kwargs)

    def train(self, job_file, run_dir, *args: str) -> subprocess.Popen:
        """`disttrain train` on the driver's host, joined to the cluster."""
        return self.popen("d", DISTTRAIN, "train", str(job_file), "--address", self.address,
                          "--run-dir", str(run_dir), "--quiet", *args)

    def alive_nodes(self) -> int:
        done = self.run("h0", RAY, "status", "--address", self.address, timeout=60)
        active = done.stdout.split("Active:")[-1].split("Pending:")[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def wait_nodes(self, n: int, timeout: float = 180, what: str = "", retries: int = 2):
        """Until the head counts n alive nodes. A host (not lost on purpose) whose `ray
        start` exited is started again up to `retries` times: on two busy cores a node can
        miss Ray's fixed 30 s to register; after that it fails at once."""
        left = {k: retries for k in self.hosts}

        def ready() -> bool:
            for host in self.hosts.values():
                if host.key in self.lost or host.ray is None or host.ray.poll() is None:
                    continue
                if left.get(host.key, 0) <= 0:
                    raise AssertionError(f"`ray start` exited on {host.key} ({host.ns})")
                left[host.key] -= 1
                _stop(host.ray)
                self._start_node(host)
            return self.alive_nodes() == n

        try:
            wait_for(ready, timeout, what or f"{n} alive nodes")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tails()}") from None

    def log_tails(self, chars: int = 1500) -> str:
        """The end of every node's `ray start` output, to say why a node is missing."""
        tails = []
        for log in sorted(self.logs.glob("*.log")):
            tails.append(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(tails)

    def node_ips(self) -> dict:
        """Ray node id -> node IP, for every node the head has known (dead ones too)."""
        script = (f"import json, ray; ray.init(address={self.address!r}, "
                  "logging_level='ERROR'); print('ANSWER', json.dumps({n['NodeID']: "
                  "n['NodeManagerAddress'] for n in ray.nodes()}))")
        done = self.run("d", sys.executable, "-c", script, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(_answer(done.stdout))

    def attached_node_ip(self, key: str = "d") -> str:
        """The IP of the Ray node a driver started on host key attaches to (Ray picks a
        raylet it finds with ps: its own host's, if the host has one)."""
        script = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                  "print('ANSWER', ray.util.get_node_ip_address())")
        done = self.run(key, sys.executable, "-c", script, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return _answer(done.stdout)

    def runs_on(self, key: str, title: str) -> bool:
        """Whether a process titled title (as `ray::Coordinator`) runs on host key."""
        return self.run(key, "pgrep", "-f", f"^{title}", timeout=30).returncode == 0

    def lose_host(self, key: str) -> None:
        """The whole host is lost: its network cut first (so no peer hears a goodbye: no
        FIN, no RST), then its PID 1 SIGKILLed, which kills every process on it at once."""
        host = self.hosts[key]
        self._in(host.ns, "ip", "link", "set", "eth0", "down")
        self.lost.add(key)
        os.kill(host.init_pid, signal.SIGKILL)
        kill_namespace(host.ns)  # what entered the namespace from outside (nsenter)
        for proc in (host.ray, host.init):
            if proc is not None:
                proc.wait(timeout=30)

    # --- cleanup -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every node, kill what is left on each host, remove every namespace (their
        veths and the bridge go with them) and the folder. Each step runs even if an
        earlier one failed."""
        hosts = list(self.hosts.values())
        try:
            with ThreadPoolExecutor(max(1, len(hosts))) as pool:  # Ray's own orderly stop
                list(pool.map(lambda h: h.ray is not None and _stop(h.ray), hosts))
        finally:
            for host in hosts:
                if host.init is not None and host.init.poll() is None:
                    try:  # PID 1 exits: the kernel kills whatever else runs on the host
                        os.kill(host.init_pid or host.init.pid, signal.SIGKILL)
                        host.init.wait(timeout=30)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        host.init.kill()
            for ns in reversed(self._made):
                kill_namespace(ns)
                _ip("netns", "delete", ns, check=False)
            shutil.rmtree(self.base, ignore_errors=True)


def netns_cluster_or_skip(workers: int):
    """Yield a NetnsCluster of a head, `workers` worker hosts and a driver host, or skip
    (fail in CI) when namespaces cannot be made here; for a module fixture to yield from."""
    reason = check_prerequisites()
    if reason:
        unavailable(reason)
    try:
        probe = f"dt{secrets.token_hex(3)}-probe"
        _ip("netns", "add", probe)
        _ip("netns", "delete", probe)
    except (subprocess.CalledProcessError, OSError) as e:
        unavailable(f"cannot create a network namespace: {getattr(e, 'stderr', e)}".strip())
    with NetnsCluster(workers=workers) as cluster:
        yield cluster


@pytest.fixture(scope="module", name="netns_cluster")
def netns_cluster_fixture():
    """A NetnsCluster of a head, three worker hosts and a driver host, for the module."""
    yield from netns_cluster_or_skip(3)


def _answer(stdout: str) -> str:
    """The line a helper script printed after `ANSWER `: Ray itself may print to stdout too
    (say, "raylet has lagging heartbeats" on a loaded machine), before or after it."""
    answers = [line[len("ANSWER "):] for line in stdout.splitlines() if line.startswith("ANSWER ")]
    assert len(answers) == 1, f"no single ANSWER line in:\n{stdout[-3000:]}"
    return answers[0].strip()
