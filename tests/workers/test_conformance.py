"""Every backend gives numpy's answer for every collective, world size, dtype and size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from disttrain.workers.comm.base import sum_in_rank_order
from tests.workers.helpers import DTYPES, SIZES, RankActor, digest, int_data, random_data

# coordinator-objstore: the coordinator backend with its shared-memory data path off, as
# when ranks are on different nodes (large buffers then go through Ray's object store).
RAY_BACKENDS = ("coordinator", "coordinator-objstore", "ring")
WORLD_SIZES = (1, 2, 3)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rank_pool(ray_session):
    """Three rank actors, reused by every group in this module (actor start-up is slow)."""
    actor = ray_session.remote(num_cpus=0)(RankActor)
    pool = [actor.remote() for _ in range(3)]
    yield pool
    for a in pool:
        ray_session.kill(a)


@pytest.fixture(scope="module")
def conformance_results(ray_session, rank_pool):
    """Run the conformance script once per (backend, world size); tests look results up."""
    from disttrain.workers.coordinator import create_coordinator

    cache = {}

    def results(backend: str, world_size: int) -> list:
        if (backend, world_size) not in cache:
            coordinator = create_coordinator(world_size, timeout_s=60.0)
            group = rank_pool[:world_size]
            name, kw = backend_and_options(backend)
            ray_session.get([a.build.remote(name, r, world_size, coordinator, "s3cret", 60.0,
                                            **kw)
                             for r, a in enumerate(group)])
            cache[(backend, world_size)] = ray_session.get(
                [a.conformance.remote() for a in group], timeout=300)
            ray_session.get([a.close.remote() for a in group])
            ray_session.kill(coordinator)
        return cache[(backend, world_size)]

    return results


def backend_and_options(backend: str) -> tuple:
    """make_communicator's backend name and extra options for a test backend name."""
    if backend == "coordinator-objstore":
        return "coordinator", {"shared_memory": False}
    return backend, {}


def expected_sum(kind: str, world_size: int, n: int, dtype: str) -> np.ndarray:
    make = int_data if kind == "ints" else random_data
    arrays = [make(r, n, dtype) for r in range(world_size)]
    return sum_in_rank_order(arrays, np.empty_like(arrays[0]))


def assert_close_to_sum(actual, expected, world_size: int, dtype: str) -> None:
    """Equal up to rounding: another order of additions may differ by ~eps * sum(|terms|)."""
    n = actual.size
    magnitude = sum(np.abs(random_data(r, n, dtype)).astype(np.float64)
                    for r in range(world_size))
    slack = 2 * world_size * np.finfo(dtype).eps * magnitude
    assert np.all(np.abs(actual.astype(np.float64) - expected) <= slack)


@pytest.mark.ray
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("backend", RAY_BACKENDS)
def test_allreduce_matches_numpy(conformance_results, backend, world_size, dtype, size):
    per_rank = conformance_results(backend, world_size)
    exact = expected_sum("ints", world_size, size, dtype)
    rounded = expected_sum("random", world_size, size, dtype)
    for out in per_rank:
        np.testing.assert_array_equal(out[("ints", dtype, size)], exact)
        assert_close_to_sum(out[("random", dtype, size)], rounded, world_size, dtype)
        # Every rank holds the very same bits.
        assert digest(out[("random", dtype, size)]) == digest(per_rank[0][("random", dtype, size)])
    if backend.startswith("coordinator"):  # sums in rank order, so it equals numpy's rank-order sum
        np.testing.assert_array_equal(per_rank[0][("random", dtype, size)], rounded)


@pytest.mark.ray
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("backend", RAY_BACKENDS)
def test_broadcast_from_every_root(conformance_results, backend, world_size, dtype, size):
    for out in conformance_results(backend, world_size):
        for root in range(world_size):
            assert out[("broadcast", dtype, size, root)] == digest(int_data(root, size, dtype))


@pytest.mark.ray
@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("backend", RAY_BACKENDS)
def test_allgather_and_barrier(conformance_results, backend, world_size):
    expected = [{"rank": r, "name": f"w{r}", "values": [r, 1.5, None]} for r in range(world_size)]
    for out in conformance_results(backend, world_size):
        assert out["allgather"] == expected
        assert out["after_barrier"] == list(range(world_size))


# --- MPI: real mpiexec jobs, checked against mpi4py's own Allreduce ----------------------

def run_mpi(world_size: int, scenario: str, tmp_path: Path, timeout_s: float = 120,
            clean_exit: bool = True) -> list:
    """Run tests/workers/mpi_main.py under mpiexec; each rank's JSON report."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(world_size),
           sys.executable, "-m", "tests.workers.mpi_main", scenario, str(tmp_path)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0 or not clean_exit, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]


@pytest.fixture(scope="module")
def mpi_results(tmp_path_factory):
    cache = {}

    def results(world_size: int) -> list:
        if world_size not in cache:
            cache[world_size] = run_mpi(world_size, "conformance",
                                        tmp_path_factory.mktemp(f"mpi{world_size}"))
        return cache[world_size]

    return results


@pytest.mark.mpi
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_mpi_matches_mpi4py_and_numpy(mpi_results, world_size, dtype, size):
    exact = digest(expected_sum("ints", world_size, size, dtype))
    for report in mpi_results(world_size):
        case = report[f"{dtype}/{size}"]
        assert case["ints"] == exact
        assert case["ints_mpi4py"] == exact
        assert case["random"] == case["random_mpi4py"]  # same MPI algorithm, same bits
        assert case["random_close_to_numpy"]
        assert case["broadcast_ok"] == [True] * world_size


@pytest.mark.mpi
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_mpi_allgather_and_barrier(mpi_results, world_size):
    expected = [{"rank": r, "name": f"w{r}", "values": [r, 1.5, None]} for r in range(world_size)]
    for report in mpi_results(world_size):
        assert report["allgather"] == expected
        assert report["after_barrier"] == list(range(world_size))
