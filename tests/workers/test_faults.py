"""Failures end in a CollectiveError that names the culprit, never in a hang."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from disttrain.distributed.comm import (
    CollectiveAborted,
    CollectiveError,
    CollectiveTimeout,
    StepMismatch,
)
from disttrain.workers.comm.base import sum_in_rank_order
from disttrain.workers.comm.ring import RingCommunicator
from disttrain.workers.coordinator import Coordinator, create_coordinator
from tests.workers.helpers import LocalRendezvous, RankActor, random_data
from tests.workers.test_conformance import backend_and_options, run_mpi

RAY_BACKENDS = ("coordinator", "coordinator-objstore", "ring")


def start_group(ray, backend: str, world_size: int, timeout_s: float, rank_actor=RankActor,
                **coordinator_kw):
    """Fresh rank actors (these tests may kill them) with communicators built."""
    coordinator = create_coordinator(world_size, timeout_s=timeout_s, **coordinator_kw)
    actor = ray.remote(num_cpus=0, max_restarts=0)(rank_actor)
    group = [actor.remote() for _ in range(world_size)]
    name, kw = backend_and_options(backend)
    addresses = ray.get([a.build.remote(name, r, world_size, coordinator, "s3cret", timeout_s,
                                        **kw)
                         for r, a in enumerate(group)])
    return coordinator, group, addresses


def error_of(ray, ref, timeout_s: float) -> BaseException:
    """The CollectiveError a remote call raised; fails (does not hang) if it raised none."""
    with pytest.raises(CollectiveError) as info:
        ray.get(ref, timeout=timeout_s)
    return info.value


@pytest.mark.ray
@pytest.mark.parametrize("backend", RAY_BACKENDS)
def test_rank_out_of_step_fails_with_both_steps(ray_session, backend):
    coordinator, group, _ = start_group(ray_session, backend, 2, timeout_s=20.0)
    data = np.ones(1000)
    refs = [group[0].allreduce_at.remote(6, data), group[1].allreduce_at.remote(7, data)]
    for ref in refs:
        message = str(error_of(ray_session, ref, 60))
        assert "step 6" in message and "step 7" in message, message
        assert "rank 0" in message and "rank 1" in message, message
    for handle in (*group, coordinator):
        ray_session.kill(handle)


@pytest.mark.ray
@pytest.mark.parametrize("backend", RAY_BACKENDS)
def test_killed_worker_fails_the_others_naming_it(ray_session, backend):
    coordinator, group, _ = start_group(ray_session, backend, 3, timeout_s=10.0,
                                        heartbeat_timeout_s=3.0)
    data = np.arange(100_000, dtype=np.float64)
    ray_session.get([a.allreduce_at.remote(0, data) for a in group])  # the ring works
    os.kill(ray_session.get(group[2].pid.remote()), signal.SIGKILL)
    survivors = [a.allreduce_at.remote(1, data) for a in group[:2]]
    for ref in survivors:  # the collective timeout is 10 s; 40 s means it hung
        message = str(error_of(ray_session, ref, 40))
        assert "rank 2" in message, message
    for handle in (*group, coordinator):
        ray_session.kill(handle)


@pytest.mark.ray
def test_ring_refuses_connections_without_the_secret(ray_session):
    coordinator, group, addresses = start_group(ray_session, "ring", 2, timeout_s=20.0)
    host, port = addresses[0]
    # The ring stands, so its listeners are closed: a stranger is refused by the kernel.
    # Strangers (garbage, a wrong HMAC) who come while it forms are refused by the
    # handshake: tests/workers/test_ring_security.py.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=10).close()
    data = np.arange(1001, dtype=np.float64)
    results = ray_session.get([a.allreduce_at.remote(0, data) for a in group], timeout=60)
    for out in results:
        np.testing.assert_array_equal(out, 2 * data)
    for handle in (*group, coordinator):
        ray_session.kill(handle)


@pytest.mark.ray
def test_coordinator_sum_is_bit_identical_whatever_the_arrival_order(ray_session):
    world_size, n = 3, 5000
    arrays = [random_data(r, n, "float32") for r in range(world_size)]
    in_rank_order = sum_in_rank_order(arrays, np.empty_like(arrays[0]))
    other_order = sum_in_rank_order([arrays[2], arrays[0], arrays[1]], np.empty_like(arrays[0]))
    assert not np.array_equal(in_rank_order, other_order)  # the data makes order visible
    coordinator = create_coordinator(world_size, timeout_s=30.0)
    for seq, order in enumerate(itertools.permutations(range(world_size))):
        refs = {}
        for rank in order:
            refs[rank] = coordinator.allreduce.remote(rank, 0, seq, arrays[rank])
            time.sleep(0.05)
        for rank in range(world_size):
            result = ray_session.get(refs[rank], timeout=60)
            assert result.tobytes() == in_rank_order.tobytes(), f"arrival order {order}"
    ray_session.kill(coordinator)


# --- the coordinator's logic, in-process (no Ray needed) ------------------------------

def in_thread(fn, *args):
    """Run fn in a thread; returns a function that gives its exception (or None)."""
    box = {}

    def run():
        try:
            fn(*args)
            box["error"] = None
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout_s=30):
        thread.join(timeout_s)
        assert not thread.is_alive(), "the call hung"
        return box["error"]

    return result


def test_coordinator_timeout_names_the_missing_ranks():
    coordinator = Coordinator(3, timeout_s=0.5)
    waits = [in_thread(coordinator.barrier, r, 4, 1) for r in (0, 2)]
    for wait in waits:
        error = wait()
        assert isinstance(error, CollectiveTimeout)
        assert "barrier at step 4" in str(error) and "ranks [1] never arrived" in str(error)


def test_abort_wakes_every_waiting_rank_with_the_reason():
    coordinator = Coordinator(2, timeout_s=30)
    wait = in_thread(coordinator.exchange, 0, "allgather", 0, 1, b"x")
    time.sleep(0.2)
    coordinator.abort("rank 1 (pid 1234 on node X) died: no heartbeat for 10.0 s")
    error = wait()
    assert isinstance(error, CollectiveAborted) and "rank 1 (pid 1234" in str(error)
    with pytest.raises(CollectiveAborted):
        coordinator.barrier(0, 0, 2)


def test_silent_rank_aborts_the_job():
    coordinator = Coordinator(2, timeout_s=30, heartbeat_timeout_s=0.4)
    ranks = [in_thread(coordinator.register, w, "node-a", 100 + w) for w in (0, 1)]
    assert [r() for r in ranks] == [None, None]
    coordinator.heartbeat(1)  # rank 1 heartbeats once, then goes silent
    with pytest.raises(CollectiveAborted, match=r"rank 1 \(pid 101 on node node-a\) died"):
        coordinator.barrier(0, 0, 1)


def test_register_assigns_ranks_by_worker_id():
    coordinator = Coordinator(3, timeout_s=10)
    ranks = {}

    def join(worker_id):
        ranks[worker_id] = coordinator.register(worker_id, "n", worker_id)

    waits = [in_thread(join, w) for w in (2, 0, 1)]
    assert [w() for w in waits] == [None] * 3
    assert ranks == {0: 0, 1: 1, 2: 2}
    with pytest.raises(CollectiveError, match="world_size is fixed"):
        coordinator.register(3, "n", 3)


# --- the ring without Ray: ranks as threads -------------------------------------------

def run_ring(world_size: int, fn, **kw) -> list:
    rendezvous, out = LocalRendezvous(world_size), [None] * world_size

    def rank_main(rank):
        comm = RingCommunicator(rank, world_size, rendezvous, "s3cret", timeout_s=20,
                                host="127.0.0.1", bind_host="127.0.0.1", **kw)
        try:
            out[rank] = fn(comm)
        finally:
            comm.close()

    waits = [in_thread(rank_main, r) for r in range(world_size)]
    errors = [w() for w in waits]
    return [e if e is not None else o for e, o in zip(errors, out)]


def test_ring_is_deterministic_run_to_run():
    def allreduce(comm):
        return comm.allreduce_(random_data(comm.rank, 300_001, "float32")).tobytes()

    first, second = run_ring(3, allreduce), run_ring(3, allreduce, segment_bytes=64 * 1024)
    assert len(set(first) | set(second)) == 1


def test_ring_out_of_step_in_threads():
    def allreduce(comm):
        comm.step = 3 + comm.rank
        comm.allreduce_(np.ones(10))

    for error in run_ring(2, allreduce):
        assert isinstance(error, StepMismatch), error
        assert "step 3" in str(error) and "step 4" in str(error)


# --- MPI faults under a real mpiexec --------------------------------------------------

@pytest.mark.mpi
def test_mpi_rank_out_of_step_fails_with_both_steps(tmp_path):
    for report in run_mpi(2, "out_of_step", tmp_path):
        assert report["error"] == "StepMismatch"
        assert "rank 1 is at step 7" in report["message"] or \
            "rank 0 is at step 6" in report["message"], report["message"]
        assert "step 6" in report["message"] and "step 7" in report["message"]


@pytest.mark.mpi
def test_mpi_missing_rank_times_out(tmp_path):
    # Its ranks leave with os._exit (a request MPI cannot cancel is pending), which
    # mpiexec reports as a bad exit: only the reports count here.
    reports = run_mpi(3, "missing_rank", tmp_path, clean_exit=False)
    for report in reports[:2]:
        assert report["error"] == "CollectiveTimeout", report
        assert "allreduce at step 0" in report["message"]
