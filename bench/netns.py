"""Two "hosts" on one machine for benchmarks: two network namespaces joined by a veth pair.

The ideas of tests/netns.py cut to what a link benchmark needs (bench may not import
tests/): no bridge, no Ray, no PID or mount namespaces; one veth pair, `eth0` in each
namespace, with .1 and .2 of a /24 picked at random from 10.214.0.0/16 that no route or
address of this machine overlaps. Traffic between the two crosses the veth pair; traffic
within one namespace stays on its own stack, as within a host. Both namespaces share this
machine's /dev/shm, as the ranks of one host do.

Names (dtbenchHEX-a and -b) carry a random suffix, so parallel runs never collide.
`close()` (or leaving the `with` block) SIGKILLs whatever still runs in either namespace
and deletes both; the veth pair goes with them. Needs root and `ip`.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import time


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


def unavailable() -> str | None:
    """Why two namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` tool (iproute2) to create network namespaces"
    return None


def namespace_pids(ns: str) -> list[int]:
    """Every process whose network namespace is ns."""
    done = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def kill_namespace(ns: str, timeout: float = 20) -> None:
    """SIGKILL every process in ns until none is left (new ones may be forking)."""
    deadline = time.monotonic() + timeout
    while (pids := namespace_pids(ns)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def free_subnet(second_octet: int = 214) -> ipaddress.IPv4Network:
    """A random 10.<second_octet>.X.0/24 that no route or address of this machine
    overlaps (the benchmark takes 10.214, tests/netns.py 10.213, so they never meet)."""
    taken = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines() + \
            _ip("-4", "-o", "addr", "show").stdout.splitlines():
        for word in line.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for x in random.sample(range(256), 256):
        net = ipaddress.ip_network(f"10.{second_octet}.{x}.0/24")
        if not any(net.overlaps(t) for t in taken if t.prefixlen > 0):
            return net
    raise RuntimeError(f"no free /24 in 10.{second_octet}.0.0/16")


class VethPair:
    """Namespaces `names[0]` and `names[1]`, addresses `ips[0]` and `ips[1]` on their eth0."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.names = [f"dtbench{tag}-a", f"dtbench{tag}-b"]
        self.ips: list[str] = []
        self._made: list[str] = []
        self._tag = tag

    def __enter__(self) -> VethPair:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _setup(self) -> None:
        subnet = free_subnet()
        for ns in self.names:
            _ip("netns", "add", ns)
            self._made.append(ns)
        ends = [f"v{self._tag}a", f"v{self._tag}b"]  # at most 15 characters
        _ip("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for i, (ns, end) in enumerate(zip(self.names, ends)):
            ip = str(subnet.network_address + 1 + i)
            _ip("link", "set", end, "netns", ns)
            self.run(i, "ip", "link", "set", end, "name", "eth0")
            self.run(i, "ip", "addr", "add", f"{ip}/{subnet.prefixlen}", "dev", "eth0")
            self.run(i, "ip", "link", "set", "eth0", "up")
            self.run(i, "ip", "link", "set", "lo", "up")
            self.ips.append(ip)

    def argv(self, side: int, *cmd: str) -> list[str]:
        """The argv that runs cmd inside namespace `side` (0 or 1)."""
        return ["ip", "netns", "exec", self.names[side], *cmd]

    def run(self, side: int, *cmd: str) -> None:
        """Run a setup command inside namespace `side`; raise with its stderr if it fails."""
        done = subprocess.run(self.argv(side, *cmd), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {self.names[side]}: {done.stderr.strip()}")

    def close(self) -> None:
        """Kill what still runs in the namespaces and delete them (and the veth pair)."""
        for ns in reversed(self._made):
            kill_namespace(ns, timeout=10)
            _ip("netns", "delete", ns, check=False)
        self._made.clear()
