"""reduce_scatter_ and allgather_ (the sharded optimizer's collectives) on every backend.

Each rank's chunk is chunk_bounds(n, W)[rank]. After reduce_scatter_ a rank's chunk must
hold numpy's rank-order sum of every rank's buffer (exactly, for integer-valued floats);
after allgather_ every chunk must hold its owner's values, whatever the rest of the
buffer held before (NaN here). Sizes are odd and some smaller than the world, so chunks
are uneven and some empty. Under mpiexec the results are also compared with mpi4py's own
Reduce_scatter and Allgatherv on the same buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from disttrain.distributed.comm import (
    CollectiveError,
    LocalCommunicator,
    StepMismatch,
    chunk_bounds,
)
from disttrain.workers.comm.base import sum_in_rank_order
from tests.workers.helpers import DTYPES, RankActor, digest, int_data, random_data
from tests.workers.test_conformance import assert_close_to_sum, backend_and_options

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
    return out


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
    check_rank_results(sharded_results(backend, world_size), world_size,
                       exact_order=backend.startswith("coordinator"))


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
