"""reduce_scatter_ and allgather_ (the sharded optimizer's collectives) on every backend.

Each rank's chunk is chunk_bounds(n, W)[rank]. After reduce_scatter_ a rank's chunk must
hold numpy's rank-order sum of every rank's buffer (exactly, for integer-valued floats);
after allgather_ every chunk must hold its owner's values, whatever the rest of the
buffer held before (NaN here). Sizes are odd and some smaller than the world, so chunks
are uneven and some empty. Under mpiexec the results are also compared with mpi4py's own
Reduce_scatter and Allgatherv on the same buffers.

The ring and shared memory run both natively, not as the base class's all-reduce: the
tests count the ring's bytes (a phase sends (W-1)/W of the buffer, not 2(W-1)/W) and the
coordinator's shared-memory collectives, and hold the native paths to every backend's
promises: a rank in another collective fails both with the error naming them, a silent
or killed rank ends the wait within the timeout, and the ring's integrity tags work.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from disttrain.distributed.comm import (
    CollectiveError,
    CollectiveTimeout,
    LocalCommunicator,
    PeerLost,
    StepMismatch,
    chunk_bounds,
)
from disttrain.workers.comm import shm
from disttrain.workers.comm.base import sum_in_rank_order
from disttrain.workers.comm.ring import RingCommunicator
from tests.workers.helpers import (
    DTYPES,
    LocalRendezvous,
    RankActor,
    digest,
    int_data,
    random_data,
)
from tests.workers.test_conformance import assert_close_to_sum, backend_and_options
from tests.workers.test_faults import in_thread, run_ring, start_group
from tests.workers.test_ring_waits import two_ranks
from tests.workers.test_shm import ProcessGroup, joined_groups, run_ranks

SIZES = (1, 2, 7, 1001, 100_003)
RAY_BACKENDS = ("coordinator", "coordinator-objstore", "ring")
WORLD_SIZES = (1, 2, 3)
REPO = Path(__file__).resolve().parents[2]


def gather_input(rank: int, world_size: int, n: int, dtype: str) -> np.ndarray:
    """This rank's own chunk of int_data, NaN everywhere else."""
    buf = np.full(n, np.nan, dtype=dtype)
    lo, hi = chunk_bounds(n, world_size)[rank]
    buf[lo:hi] = int_data(rank, n, dtype)[lo:hi]
    return buf


def gathered(world_size: int, n: int, dtype: str) -> np.ndarray:
    """What allgather_ must leave on every rank: chunk r from rank r."""
    out = np.empty(n, dtype=dtype)
    for r, (lo, hi) in enumerate(chunk_bounds(n, world_size)):
        out[lo:hi] = int_data(r, n, dtype)[lo:hi]
    return out


def run_script(comm) -> dict:
    """The collectives every backend runs; results keyed for the tests."""
    out = {}
    for dtype in DTYPES:
        for n in SIZES:
            comm.step += 1
            lo, hi = chunk_bounds(n, comm.world_size)[comm.rank]
            out[("ints", dtype, n)] = comm.reduce_scatter_(int_data(comm.rank, n, dtype))[lo:hi]
            out[("random", dtype, n)] = comm.reduce_scatter_(
                random_data(comm.rank, n, dtype))[lo:hi]
            out[("gather", dtype, n)] = comm.allgather_(gather_input(comm.rank, comm.world_size,
                                                                     n, dtype))
    # a 2-D buffer works on its flat view, as allreduce_
    grid = np.arange(12.0).reshape(3, 4) * (comm.rank + 1)
    out["grid"] = comm.reduce_scatter_(grid).reshape(-1)[
        slice(*chunk_bounds(12, comm.world_size)[comm.rank])]
    shm_path = getattr(comm, "_shm", None)  # the coordinator's: which went through shm
    out["shm_taken"] = dict(shm_path.taken) if shm_path is not None else None
    return out


SCRIPT_CALLS = {"reduce_scatter": 2 * len(DTYPES) * len(SIZES) + 1,
                "allgather_": len(DTYPES) * len(SIZES)}


class ShardedRankActor(RankActor):
    """A conformance rank that also runs the sharded collectives."""

    def sharded(self) -> dict:
        return run_script(self.comm)

    def step_check(self) -> dict:
        """Rank 1 one step ahead in a reduce_scatter_, then in an allgather_."""
        out = {}
        for op in ("reduce_scatter_", "allgather_"):
            self.comm.step = 100 + (1 if self.comm.rank == 1 else 0)
            try:
                getattr(self.comm, op)(np.ones(10))
                out[op] = None
            except CollectiveError as e:
                out[op] = [type(e).__name__, str(e)]
                break  # the communicator is broken now, as after any failed collective
        return out

    def kind_check(self, ops: list, steps: list) -> list | None:
        """After one all-reduce that works (it sets up shared memory), rank r calls ops[r]
        at steps[r]; the error, or None."""
        self.comm.allreduce_(np.ones(100_000))
        self.comm.step = steps[self.comm.rank]
        try:
            getattr(self.comm, ops[self.comm.rank])(np.ones(100_000))
        except CollectiveError as e:
            return [type(e).__name__, str(e)]
        return None

    def reduce_scatter_at(self, step: int, data: np.ndarray) -> np.ndarray:
        self.comm.step = step
        return self.comm.reduce_scatter_(data.copy())

    def shm_taken(self) -> dict:
        return dict(self.comm._shm.taken)


@pytest.fixture(scope="module")
def sharded_pool(ray_session):
    actor = ray_session.remote(num_cpus=0)(ShardedRankActor)
    pool = [actor.remote() for _ in range(3)]
    yield pool
    for a in pool:
        ray_session.kill(a)


def build_group(ray_session, pool, backend: str, world_size: int):
    from disttrain.workers.coordinator import create_coordinator

    coordinator = create_coordinator(world_size, timeout_s=60.0)
    group = pool[:world_size]
    name, kw = backend_and_options(backend)
    ray_session.get([a.build.remote(name, r, world_size, coordinator, "s3cret", 60.0, **kw)
                     for r, a in enumerate(group)])
    return group, coordinator


@pytest.fixture(scope="module")
def sharded_results(ray_session, sharded_pool):
    cache = {}

    def results(backend: str, world_size: int) -> list:
        if (backend, world_size) not in cache:
            group, coordinator = build_group(ray_session, sharded_pool, backend, world_size)
            cache[(backend, world_size)] = ray_session.get(
                [a.sharded.remote() for a in group], timeout=300)
            ray_session.get([a.close.remote() for a in group])
            ray_session.kill(coordinator)
        return cache[(backend, world_size)]

    return results


def check_rank_results(per_rank: list, world_size: int, exact_order: bool) -> None:
    """Every rank's chunk of every reduce-scatter, and every rank's whole all-gather."""
    for rank, out in enumerate(per_rank):
        for dtype in DTYPES:
            for n in SIZES:
                lo, hi = chunk_bounds(n, world_size)[rank]
                ints = [int_data(r, n, dtype) for r in range(world_size)]
                np.testing.assert_array_equal(
                    out[("ints", dtype, n)], sum_in_rank_order(ints, np.empty_like(ints[0]))[lo:hi])
                rand = [random_data(r, n, dtype) for r in range(world_size)]
                want = sum_in_rank_order(rand, np.empty_like(rand[0]))
                got = out[("random", dtype, n)]
                if exact_order:
                    np.testing.assert_array_equal(got, want[lo:hi])
                else:
                    full = want.copy()
                    full[lo:hi] = got
                    assert_close_to_sum(full, want, world_size, dtype)
                np.testing.assert_array_equal(out[("gather", dtype, n)],
                                              gathered(world_size, n, dtype))
        grid = sum((np.arange(12.0) * (r + 1) for r in range(world_size)), np.zeros(12))
        np.testing.assert_array_equal(out["grid"],
                                      grid[slice(*chunk_bounds(12, world_size)[rank])])


def test_chunks_are_array_split():
    for n in (0, 1, 2, 7, 1001):
        for parts in (1, 2, 3, 5):
            pieces = np.array_split(np.arange(n), parts)
            assert [(int(p[0]), int(p[-1]) + 1) if p.size else None for p in pieces] == [
                (lo, hi) if hi > lo else None for lo, hi in chunk_bounds(n, parts)]


def test_local_communicator_is_the_identity():
    out = run_script(LocalCommunicator())
    check_rank_results([out], 1, exact_order=True)


@pytest.mark.ray
@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("backend", RAY_BACKENDS)
def test_ray_backends_match_numpy(sharded_results, backend, world_size):
    # the coordinator sums in rank order (as numpy's rank-order sum); the ring in its own
    per_rank = sharded_results(backend, world_size)
    check_rank_results(per_rank, world_size, exact_order=backend.startswith("coordinator"))
    if backend == "coordinator" and world_size > 1:  # each one natively through shm
        assert [out["shm_taken"] for out in per_rank] == [SCRIPT_CALLS] * world_size
    elif backend == "coordinator-objstore":  # the fallback: all-reduces on its own paths
        assert [out["shm_taken"] for out in per_rank] == [{}] * world_size


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
def test_ray_backends_check_steps(ray_session, sharded_pool, backend):
    group, coordinator = build_group(ray_session, sharded_pool, backend, 2)
    try:
        outs = ray_session.get([a.step_check.remote() for a in group], timeout=120)
    finally:
        ray_session.get([a.close.remote() for a in group])
        ray_session.kill(coordinator)
    for out in outs:
        kind, message = out["reduce_scatter_"]
        assert kind == StepMismatch.__name__, message
        assert "step 100" in message and "step 101" in message


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
def test_ray_rank_in_another_collective_fails_naming_both(ray_session, sharded_pool, backend):
    # Same step, so the kinds are what differs: a CollectiveError, from the shared-memory
    # headers on the coordinator and from the first ring frame, never a hang.
    group, coordinator = build_group(ray_session, sharded_pool, backend, 2)
    try:
        outs = ray_session.get([a.kind_check.remote(["reduce_scatter_", "allreduce_"],
                                                    [200, 200]) for a in group], timeout=120)
    finally:
        ray_session.get([a.close.remote() for a in group])
        ray_session.kill(coordinator)
    for out in outs:
        assert out is not None and out[0] == "CollectiveError", out
        assert "rank 0 called reduce_scatter" in out[1] and "rank 1 called allreduce" in out[1]


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
def test_ray_rank_killed_before_a_reduce_scatter_is_named_within_the_timeout(ray_session,
                                                                             backend):
    # Heartbeats would notice only after 60 s: the native path must find the dead rank.
    coordinator, group, _ = start_group(ray_session, backend, 3, timeout_s=10.0,
                                        rank_actor=ShardedRankActor, heartbeat_timeout_s=60.0)
    try:
        data = np.arange(300_000, dtype=np.float64)
        ray_session.get([a.reduce_scatter_at.remote(0, data) for a in group])
        if backend == "coordinator":
            assert ray_session.get(group[0].shm_taken.remote()) == {"reduce_scatter": 1}
        pid = ray_session.get(group[2].pid.remote())
        os.kill(pid, signal.SIGKILL)
        errors = []
        for ref in [a.reduce_scatter_at.remote(1, data) for a in group[:2]]:
            with pytest.raises(CollectiveError) as info:  # 40 s: only if it hung
                ray_session.get(ref, timeout=40)
            errors.append(info.value)
    finally:
        for handle in (*group, coordinator):
            ray_session.kill(handle)
    assert all("rank 2" in str(e) for e in errors), errors
    assert any(isinstance(e, PeerLost) for e in errors), errors
    if backend == "coordinator":
        assert all(f"rank 2 (pid {pid}) died during reduce_scatter" in str(e) for e in errors)


# --- the ring's native phases: ranks as threads over loopback ---------------------------

def ring_scatter_order_sum(arrays: list) -> np.ndarray:
    """Each chunk summed as the ring's reduce-scatter does: from its owner's successor round
    the ring to its owner, ((x_c+1 + x_c+2) + ...) + x_c."""
    w = len(arrays)
    out = np.empty_like(arrays[0])
    for c, (lo, hi) in enumerate(chunk_bounds(out.size, w)):
        out[lo:hi] = arrays[(c + 1) % w][lo:hi]
        for k in range(2, w + 1):
            out[lo:hi] += arrays[(c + k) % w][lo:hi]
    return out


def phases_and_allreduce(n: int, dtype: str):
    """reduce_scatter_, allgather_, allreduce_: results and the bytes each one sent."""
    def run(comm):
        lo, hi = chunk_bounds(n, comm.world_size)[comm.rank]
        sent = [comm.bytes_sent]
        summed = comm.reduce_scatter_(random_data(comm.rank, n, dtype))[lo:hi].copy()
        sent.append(comm.bytes_sent)
        filled = comm.allgather_(gather_input(comm.rank, comm.world_size, n, dtype))
        sent.append(comm.bytes_sent)
        comm.allreduce_(random_data(comm.rank, n, dtype))
        sent.append(comm.bytes_sent)
        return summed, filled, np.diff(sent).tolist(), dict(comm.integrity_on)
    return run


@pytest.mark.parametrize("integrity", [False, True], ids=["plain", "integrity"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ring_phases_each_send_half_an_allreduce(world_size, integrity):
    n, dtype = 1_000_003, "float32"
    results = run_ring(world_size, phases_and_allreduce(n, dtype), integrity=integrity)
    expected = ring_scatter_order_sum([random_data(r, n, dtype) for r in range(world_size)])
    bounds = chunk_bounds(n, world_size)
    for rank, out in enumerate(results):
        assert not isinstance(out, BaseException), out
        summed, filled, (scatter, gather, allreduce), on = out
        lo, hi = bounds[rank]
        assert summed.tobytes() == expected[lo:hi].tobytes()  # the ring's own fixed order
        np.testing.assert_array_equal(filled, gathered(world_size, n, dtype))
        assert on == {"next": integrity, "prev": integrity}
        # Payload: every chunk but one (the reduce-scatter keeps its own, the all-gather
        # does not pass on the next rank's); headers and tags add well under 4 KB.
        for sent, skipped in ((scatter, rank), (gather, (rank + 1) % world_size)):
            payload = (n - (bounds[skipped][1] - bounds[skipped][0])) * 4
            assert payload <= sent < payload + 4096, (rank, sent, payload)
        assert allreduce > scatter + gather - 4096  # the all-reduce: both phases' bytes


@pytest.mark.parametrize("n", [1, 2, 7])
def test_ring_phases_with_empty_chunks(n):
    # n < W: some chunks are empty, and their frames are headers alone.
    results = run_ring(3, phases_and_allreduce(n, "float64"))
    expected = ring_scatter_order_sum([random_data(r, n, "float64") for r in range(3)])
    for rank, out in enumerate(results):
        assert not isinstance(out, BaseException), out
        lo, hi = chunk_bounds(n, 3)[rank]
        assert out[0].tobytes() == expected[lo:hi].tobytes()
        np.testing.assert_array_equal(out[1], gathered(3, n, "float64"))


CALLED = {"reduce_scatter_": "reduce_scatter", "allgather_": "allgather_",
          "allreduce_": "allreduce"}
MIXED = [("reduce_scatter_", "allreduce_"), ("allgather_", "allreduce_"),
         ("reduce_scatter_", "allgather_")]


def check_mixed_calls(errors: list, ops: tuple, steps: tuple) -> None:
    """Both ranks failed with the error that names both (StepMismatch if steps differ)."""
    for error in errors:
        if steps[0] != steps[1]:
            assert isinstance(error, StepMismatch), error
        else:
            assert isinstance(error, CollectiveError), error
        message = str(error)
        assert f"rank 0 called {CALLED[ops[0]]} #" in message, message
        assert f"rank 1 called {CALLED[ops[1]]} #" in message, message


@pytest.mark.parametrize("steps", [(3, 3), (3, 4)], ids=["same-step", "other-step"])
@pytest.mark.parametrize("ops", MIXED, ids=["-".join(o) for o in MIXED])
def test_ring_rank_in_another_collective_fails_naming_both(ops, steps):
    def run(comm):
        comm.step = steps[comm.rank]
        getattr(comm, ops[comm.rank])(np.ones(1001))

    check_mixed_calls(run_ring(2, run), ops, steps)


@pytest.mark.parametrize("op", ["reduce_scatter_", "allgather_"])
def test_ring_phase_with_a_silent_rank_times_out_naming_it(op):
    def silent(comm, rank0_done):
        rank0_done.wait(30)  # connected, but never calls the collective

    error, _ = two_ranks(lambda comm: getattr(comm, op)(np.ones(1000, np.float32)), silent)
    assert isinstance(error, CollectiveTimeout), error
    assert "rank 1 sent nothing for 1.0 s" in str(error)


@pytest.mark.parametrize("op", ["reduce_scatter_", "allgather_"])
def test_ring_rank_that_closes_mid_phase_is_peer_lost(op):
    # As tests/workers/test_ring_waits.py: rank 2 takes part once, then closes its ring
    # while the others start a second; a SIGKILL closes its sockets the same way.
    world_size = 3
    rendezvous, first_done = LocalRendezvous(world_size), threading.Barrier(world_size)

    def main(rank):
        comm = RingCommunicator(rank, world_size, rendezvous, "s3cret", timeout_s=10.0,
                                host="127.0.0.1")
        try:
            getattr(comm, op)(np.ones(100_000, np.float32))
            first_done.wait(10)
            if rank != world_size - 1:
                getattr(comm, op)(np.ones(2**22, np.float32))
        finally:
            comm.close()

    errors = [w(60) for w in [in_thread(main, r) for r in range(world_size)]]
    assert errors[-1] is None
    assert all(isinstance(e, CollectiveError) for e in errors[:-1]), errors
    assert any(isinstance(e, PeerLost) and "rank 2" in str(e) for e in errors[:-1]), errors


# --- shared memory's native forms: ranks as threads, or processes to SIGKILL ------------

needs_shm = pytest.mark.skipif(not shm.supported(), reason="shared-memory path is x86-64 Linux")


def shm_round(groups, op: str, inputs: list, seq: int, step: int = 0) -> list:
    """op on every rank of joined groups, each on a copy of its input; the buffers."""
    def call(g):
        buf = inputs[g.rank].copy()
        assert getattr(g, op)(buf, step=step, seq=seq, timeout_s=30)
        return buf

    outs = run_ranks(groups, call)
    for out in outs:
        assert not isinstance(out, Exception), out
    return outs


@needs_shm
def test_shm_reduce_scatter_is_the_allreduce_bit_for_bit_and_allgather_fills_chunks():
    world_size, seq = 3, itertools.count(1)
    # Small blocks (the all-reduce's pipeline); each size new to the reduce-scatter
    # (float32) and then to the all-gather (float64), so both grow the segment.
    with joined_groups(world_size, block_bytes=64 * 1024 + 8) as groups:
        for n in (1, 2, 7, 1001, 300_001, 3_000_001):
            arrays = [random_data(r, n, "float32") for r in range(world_size)]
            scattered = shm_round(groups, "reduce_scatter_", arrays, next(seq))
            owned = [gather_input(r, world_size, n, "float64") for r in range(world_size)]
            filled = shm_round(groups, "allgather_", owned, next(seq))
            summed = shm_round(groups, "allreduce_", arrays, next(seq))
            star = sum_in_rank_order(arrays, np.empty_like(arrays[0]))
            for r in range(world_size):
                lo, hi = chunk_bounds(n, world_size)[r]
                assert scattered[r][lo:hi].tobytes() == summed[r][lo:hi].tobytes(), (n, r)
                assert summed[r].tobytes() == star.tobytes()
                np.testing.assert_array_equal(filled[r], gathered(world_size, n, "float64"))
        assert len(groups[0].names) == 6  # control + five data generations


@needs_shm
@pytest.mark.parametrize("steps", [(3, 3), (3, 4)], ids=["same-step", "other-step"])
@pytest.mark.parametrize("ops", MIXED, ids=["-".join(o) for o in MIXED])
def test_shm_rank_in_another_collective_fails_naming_both(ops, steps):
    with joined_groups(2) as groups:
        def call(g):
            getattr(g, ops[g.rank])(np.ones(1001), step=steps[g.rank], seq=1, timeout_s=30)

        check_mixed_calls(run_ranks(groups, call), ops, steps)


@needs_shm
@pytest.mark.parametrize("op", ["reduce_scatter_", "allgather_"])
def test_shm_phase_with_a_rank_that_never_comes_times_out_naming_it(op):
    with joined_groups(3) as groups:
        def call(g):
            if g.rank != 1:
                getattr(g, op)(np.ones(1000), step=4, seq=1, timeout_s=1.0)

        errors = run_ranks(groups, call)
        for r in (0, 2):
            assert isinstance(errors[r], CollectiveTimeout), errors[r]
            assert f"{CALLED[op]} at step 4" in str(errors[r]) and "ranks [1]" in str(errors[r])


@needs_shm
def test_shm_reduce_scatter_names_a_sigkilled_rank():
    with ProcessGroup(3, timeout_s=10.0) as group:
        assert all(r[0] == "ok" for r in group.call(range(3), "join"))
        assert all(r[0] == "ok" for r in group.call(range(3), "reduce_scatter", 200_000, 0, 1))
        os.kill(group.pids[2], signal.SIGKILL)
        for reply in group.call([0, 1], "reduce_scatter", 200_000, 1, 2):
            assert reply[0] == "error" and reply[1] == "PeerLost", reply
            assert f"rank 2 (pid {group.pids[2]}) died during reduce_scatter at step 1" in \
                reply[2]


@needs_shm
@pytest.mark.parametrize("op", ["reduce_scatter_", "allgather_"])
def test_shm_phase_too_big_for_shared_memory_declines_on_every_rank(monkeypatch, op):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with joined_groups(2) as groups:
        bufs = [np.full(100_000, float(r)) for r in range(2)]
        results = run_ranks(groups, lambda g: getattr(g, op)(bufs[g.rank], step=0, seq=1,
                                                              timeout_s=30))
        assert results == [False, False]  # the communicator then takes its fallback
        for r in range(2):
            np.testing.assert_array_equal(bufs[r], np.full(100_000, float(r)))  # untouched


# --- MPI: real mpiexec, against mpi4py's own Reduce_scatter and Allgatherv ---------------

def run_mpi(world_size: int, scenario: str, tmp_path: Path) -> list:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(world_size),
           sys.executable, "-m", "tests.workers.mpi_sharded_main", scenario, str(tmp_path)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]


@pytest.mark.mpi
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_mpi_matches_mpi4py_and_numpy(tmp_path, world_size):
    for rank, report in enumerate(run_mpi(world_size, "conformance", tmp_path)):
        for dtype in DTYPES:
            for n in SIZES:
                case = report[f"{dtype}/{n}"]
                lo, hi = chunk_bounds(n, world_size)[rank]
                ints = [int_data(r, n, dtype) for r in range(world_size)]
                assert case["ints"] == digest(
                    sum_in_rank_order(ints, np.empty_like(ints[0]))[lo:hi])
                assert case["ints"] == case["ints_mpi4py"]
                assert case["random"] == case["random_mpi4py"]  # MPI's own algorithm, same bits
                assert case["random_close_to_numpy"]
                assert case["gather"] == digest(gathered(world_size, n, dtype))
                assert case["gather"] == case["gather_mpi4py"]


@pytest.mark.mpi
def test_mpi_checks_steps(tmp_path):
    for report in run_mpi(2, "out_of_step", tmp_path):
        kind, message = report["reduce_scatter_"]
        assert kind == "StepMismatch", message
        assert "step 100" in message and "step 101" in message
