"""One rank of the sharded-collectives MPI test (run under mpiexec; writes rankN.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

from disttrain.distributed.comm import CollectiveError, chunk_bounds
from disttrain.workers.comm import make_communicator
from disttrain.workers.comm.base import sum_in_rank_order
from tests.workers.helpers import DTYPES, digest, int_data, random_data
from tests.workers.mpi_main import close_to_sum
from tests.workers.test_sharded_collectives import SIZES, gather_input


def theirs_reduce_scatter(data: np.ndarray, counts: list) -> np.ndarray:
    """mpi4py's own Reduce_scatter: this rank's summed chunk."""
    out = np.empty(counts[MPI.COMM_WORLD.Get_rank()], data.dtype)
    MPI.COMM_WORLD.Reduce_scatter(data, out, counts, op=MPI.SUM)
    return out


def theirs_allgather(data: np.ndarray, counts: list, displs: list) -> np.ndarray:
    """mpi4py's own Allgatherv of this rank's chunk into a fresh buffer."""
    rank = MPI.COMM_WORLD.Get_rank()
    out = np.empty_like(data)
    mine = np.ascontiguousarray(data[displs[rank]:displs[rank] + counts[rank]])
    MPI.COMM_WORLD.Allgatherv(mine, [out, (counts, displs)])
    return out


def conformance(comm) -> dict:
    report = {}
    for dtype in DTYPES:
        for n in SIZES:
            comm.step += 1
            bounds = chunk_bounds(n, comm.world_size)
            counts, displs = [hi - lo for lo, hi in bounds], [lo for lo, _ in bounds]
            lo, hi = bounds[comm.rank]
            ints = comm.reduce_scatter_(int_data(comm.rank, n, dtype))[lo:hi]
            rand = comm.reduce_scatter_(random_data(comm.rank, n, dtype))[lo:hi]
            arrays = [random_data(r, n, dtype) for r in range(comm.world_size)]
            numpy_sum = sum_in_rank_order(arrays, np.empty_like(arrays[0]))
            gather = comm.allgather_(gather_input(comm.rank, comm.world_size, n, dtype))
            report[f"{dtype}/{n}"] = {
                "ints": digest(ints),
                "ints_mpi4py": digest(theirs_reduce_scatter(int_data(comm.rank, n, dtype),
                                                            counts)),
                "random": digest(rand),
                "random_mpi4py": digest(theirs_reduce_scatter(
                    random_data(comm.rank, n, dtype), counts)),
                "random_close_to_numpy": close_to_sum(
                    rand, numpy_sum[lo:hi], [a[lo:hi] for a in arrays]),
                "gather": digest(gather),
                "gather_mpi4py": digest(theirs_allgather(
                    gather_input(comm.rank, comm.world_size, n, dtype), counts, displs)),
            }
    return report


def out_of_step(comm) -> dict:
    comm.step = 101 if comm.rank == 1 else 100
    try:
        comm.reduce_scatter_(np.ones(10))
    except CollectiveError as e:
        return {"reduce_scatter_": [type(e).__name__, str(e)]}
    return {"reduce_scatter_": None}


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    world = MPI.COMM_WORLD
    comm = make_communicator("mpi", rank=world.Get_rank(), world_size=world.Get_size(),
                             timeout_s=60.0)
    report = {"conformance": conformance, "out_of_step": out_of_step}[scenario](comm)
    (out_dir / f"rank{comm.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
