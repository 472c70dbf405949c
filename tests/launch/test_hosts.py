"""Separate hosts: jobs on a Ray cluster whose nodes are network namespaces (tests/netns.py).

One cluster for the module: a head with no CPUs, three worker hosts with one CPU each and
a driver host that joins with no CPUs and runs `disttrain train`, every one with its own
address, and no shared directory between the driver and the rest. Each job's ranks land
on two different worker hosts, the run directory is written on the driver's host alone,
a worker host lost whole (network cut, every process killed) is recovered as a lost
worker is, and the ring's listener answers only on the address it advertises.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.launch.test_faults import (
    assert_bit_identical,
    checkpoints,
    long_job,
    losses,
    status,
    wait_for,
)
from tests.netns import netns_cluster_fixture  # noqa: F401 - the module's cluster
from tests.train.helpers import final_params, run_local
from tests.train.test_equivalence import assert_params_close

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BACKENDS = ["coordinator", "ring"]
RUN_FILES = ("job.toml", "status.json", "metrics.jsonl", "timeline.json", "final/model.npz")


def two_host_job(backend: str) -> dict:
    return long_job(**{"distributed.backend": backend, "distributed.workers": 2,
                       "distributed.heartbeat_s": 1.0})


def write_job(cluster, job: dict, name: str):
    """The job file, beside (not inside) the runs folder the worker hosts cannot see."""
    path = cluster.base / f"{name}.toml"
    path.write_text(dump_job(spec_from_dict(job)))
    return path


def train(cluster, backend: str, name: str, timeout: float = 240):
    """Run the two-host job from the driver's host to the end; its run directory."""
    run_dir = cluster.runs / name
    proc = cluster.train(write_job(cluster, two_host_job(backend), name), run_dir)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def clean_runs(netns_cluster):
    """backend -> the run directory of one uninterrupted two-host run, trained once."""
    runs: dict = {}

    def get(backend: str):
        if backend not in runs:
            runs[backend] = train(netns_cluster, backend, f"clean-{backend}")
        return runs[backend]

    return get


def rank_ips(cluster, run_dir) -> dict:
    """rank -> the IP of the Ray node it ran on (status.json's node_id, Ray's node table)."""
    ips = cluster.node_ips()
    return {w["rank"]: ips[w["node_id"]] for w in status(run_dir)["workers"]}


@pytest.mark.timeout(420)
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_host_job_runs_its_ranks_on_two_ips_and_matches_one_process(
        netns_cluster, clean_runs, tmp_path, backend):
    run_dir = clean_runs(backend)
    final = status(run_dir)
    assert final["state"] == "done" and final["world_size"] == 2, final
    ips = rank_ips(netns_cluster, run_dir)
    workers = {h.ip for h in netns_cluster.worker_hosts}
    assert sorted(ips) == [0, 1] and ips[0] != ips[1], ips
    assert set(ips.values()) <= workers, (ips, workers)  # not the head's, not the driver's
    got = final_params(run_dir)
    assert_params_close(got, run_local(long_job(), tmp_path / "one-process"), atol=1e-9)
    # and training moved the parameters: an untrained run would not pass a looser check
    assert max(np.abs(got[k] - v).max() for k, v in run_local(
        long_job(**{"job.max_steps": 1}), tmp_path / "one-step").items()) > 1e-3


@pytest.mark.timeout(420)
def test_driver_on_a_third_host_writes_the_whole_run_directory_alone(netns_cluster,
                                                                     clean_runs):
    run_dir = clean_runs("coordinator")
    final = status(run_dir)
    assert final["state"] == "done" and final["step"] == 240, final
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert checkpoints(run_dir)[-1] == "step-00000240"
    assert len(losses(run_dir)) > 0
    events = json.loads((run_dir / "timeline.json").read_text())["traceEvents"]
    assert {e["pid"] for e in events} == {"rank 0", "rank 1"}
    # The driver sits on a Ray node of its own host (joined with no CPUs), not the head's,
    # and the ranks ran on other hosts.
    driver = netns_cluster.driver
    assert netns_cluster.attached_node_ip(driver.key) == driver.ip
    assert driver.ip not in rank_ips(netns_cluster, run_dir).values()
    seen = netns_cluster.run(driver.key, "find", str(netns_cluster.runs), "-mindepth", "1")
    assert str(run_dir / "final" / "model.npz") in seen.stdout.split()
    for host in [netns_cluster.head, *netns_cluster.worker_hosts]:
        # Their view of the runs folder is still the empty tmpfs: nothing reached it.
        seen = netns_cluster.run(host.key, "find", str(netns_cluster.runs), "-mindepth", "1")
        assert seen.returncode == 0 and seen.stdout == "", (host, seen.stdout, seen.stderr)
        # ... and no run file landed anywhere else on their side (their Ray temp dirs).
        found = subprocess.run(["find", str(host.temp_dir), "-name", "model.npz", "-o",
                                "-name", "metrics.jsonl", "-o", "-name", "status.json"],
                               capture_output=True, text=True, timeout=30)
        assert found.stdout == "", (host, found.stdout)


# The ring's listener, opened on a worker host the way a rank opens it under Ray (the
# address it advertises is Ray's node IP): it prints what it published and a control
# port bound to every address (it answers "CTRL"), then holds the listener open until
# stdin says go.
LISTENER = """
import json, socket, sys, threading
import ray
from disttrain.workers.comm.ring import RingCommunicator

ray.init(address=sys.argv[1], logging_level="ERROR")

class Rendezvous:
    def publish_address(self, rank, host, port):
        self.control = socket.create_server(("0.0.0.0", 0))
        threading.Thread(target=self.answer, daemon=True).start()
        print(json.dumps({"host": host, "port": port, "node_ip": ray.util.get_node_ip_address(),
                          "control": self.control.getsockname()[1]}), flush=True)

    def answer(self):
        while True:
            self.control.accept()[0].sendall(b"CTRL")

    def addresses(self, timeout_s=None):
        sys.stdin.readline()
        raise SystemExit(0)

RingCommunicator(1, 2, Rendezvous(), secret="s" * 64, timeout_s=120)
"""

# Connect to each (host, port); the first 4 bytes the listener sends, or the error's name.
PROBE = """
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            out.append(s.recv(4).decode(errors="replace"))
    except OSError as e:
        out.append(type(e).__name__)
print(json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_ring_listener_answers_only_on_the_advertised_address(netns_cluster):
    listener_host, other_host = netns_cluster.worker_hosts[:2]
    second_ip = str(netns_cluster.subnet.network_address + 200)
    netns_cluster.run(listener_host.key, "ip", "addr", "add",
                      f"{second_ip}/{netns_cluster.subnet.prefixlen}", "dev", "eth0")
    listener = netns_cluster.popen(listener_host.key, sys.executable, "-c", LISTENER,
                                   netns_cluster.address, stdin=subprocess.PIPE)
    try:
        line = listener.stdout.readline()
        assert line, listener.stderr.read()[-3000:] if listener.poll() is not None else ""
        published = json.loads(line)
        assert published["host"] == published["node_ip"] == listener_host.ip, published
        port, control = published["port"], published["control"]

        def probe(key: str, targets: list) -> list:
            done = netns_cluster.run(key, sys.executable, "-c", PROBE, json.dumps(targets),
                                     timeout=60)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        # From another host: the advertised address answers with the ring's hello; the
        # host's second address is reachable (the control port answers there) but the
        # ring's port is not open on it.
        assert probe(other_host.key, [[listener_host.ip, port], [second_ip, control],
                                      [second_ip, port]]) == [
            "DTR1", "CTRL", "ConnectionRefusedError"]
        # On the host itself, loopback does not reach it either.
        assert probe(listener_host.key, [["127.0.0.1", control], ["127.0.0.1", port],
                                         [listener_host.ip, port]]) == [
            "CTRL", "ConnectionRefusedError", "DTR1"]
        listener.stdin.write("go\n")
        listener.stdin.flush()
        assert listener.wait(timeout=60) == 0, listener.stderr.read()[-3000:]
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        netns_cluster.run(listener_host.key, "ip", "addr", "del",
                          f"{second_ip}/{netns_cluster.subnet.prefixlen}", "dev", "eth0")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_host_lost_whole_is_recovered_bit_identical(netns_cluster, clean_runs,
                                                             backend):
    while len(netns_cluster.worker_hosts) < 3:  # a spare for the ranks to move to
        netns_cluster.add_worker()
    netns_cluster.wait_nodes(len(netns_cluster.hosts) - len(netns_cluster.lost))
    uninterrupted = clean_runs(backend)
    node_ips = netns_cluster.node_ips()  # asked before the job: it takes a second or two
    run_dir = netns_cluster.runs / f"host-lost-{backend}"
    proc = netns_cluster.train(write_job(netns_cluster, two_host_job(backend),
                                         f"host-lost-{backend}"), run_dir)
    try:
        wait_for(lambda: checkpoints(run_dir), 180, "the first checkpoint")
        # The host of a rank, not the one the coordinator actor (no CPU: any node) sits on:
        # losing that is another failure (the supervisor waits 30 s for it to answer).
        hosts = {w["rank"]: netns_cluster.host_of(node_ips[w["node_id"]])
                 for w in status(run_dir)["workers"]}
        rank = next(r for r in (1, 0) if not netns_cluster.runs_on(hosts[r].key,
                                                                    "ray::Coordinator"))
        victim, lost = status(run_dir)["workers"][rank], hosts[rank]
        assert victim["rank"] == rank and lost in netns_cluster.worker_hosts, (victim, lost)
        assert not (run_dir / "final").exists(), "the job ended before the host was lost"
        netns_cluster.lose_host(lost.key)
        out, err = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] >= 1, final
    assert f"rank {rank} (pid {victim['pid']}" in final["failures"][0], final["failures"]
    ips = rank_ips(netns_cluster, run_dir)
    assert lost.ip not in ips.values() and len(set(ips.values())) == 2, (lost, ips)
    assert_bit_identical(final_params(run_dir), final_params(uninterrupted))
    assert losses(run_dir) == losses(uninterrupted)  # each step once, with the same loss
