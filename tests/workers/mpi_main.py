"""One rank of an MPI test job (run by the tests under mpiexec; writes rankN.json)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from disttrain.distributed.comm import CollectiveError, CollectiveTimeout
from disttrain.workers.comm import make_communicator
from disttrain.workers.comm.base import sum_in_rank_order
from tests.workers.helpers import DTYPES, SIZES, digest, int_data, random_data


def close_to_sum(actual, expected, arrays) -> bool:
    """Equal up to rounding: another order of additions may differ by ~eps * sum(|terms|)."""
    magnitude = sum(np.abs(a).astype(np.float64) for a in arrays)
    slack = 2 * len(arrays) * np.finfo(actual.dtype).eps * magnitude
    return bool(np.all(np.abs(actual.astype(np.float64) - expected) <= slack))


def conformance(comm) -> dict:
    world, report = MPI.COMM_WORLD, {}
    for dtype in DTYPES:
        for n in SIZES:
            comm.step += 1
            ints, theirs = int_data(comm.rank, n, dtype), int_data(comm.rank, n, dtype)
            comm.allreduce_(ints)
            world.Allreduce(MPI.IN_PLACE, theirs, op=MPI.SUM)
            rand, rand_theirs = random_data(comm.rank, n, dtype), random_data(comm.rank, n, dtype)
            comm.allreduce_(rand)
            world.Allreduce(MPI.IN_PLACE, rand_theirs, op=MPI.SUM)
            arrays = [random_data(r, n, dtype) for r in range(comm.world_size)]
            numpy_sum = sum_in_rank_order(arrays, np.empty_like(arrays[0]))
            broadcast_ok = []
            for root in range(comm.world_size):
                buf = int_data(comm.rank, n, dtype)
                comm.broadcast_(buf, root)
                broadcast_ok.append(bool(np.array_equal(buf, int_data(root, n, dtype))))
            report[f"{dtype}/{n}"] = {
                "ints": digest(ints), "ints_mpi4py": digest(theirs),
                "random": digest(rand), "random_mpi4py": digest(rand_theirs),
                "random_close_to_numpy": close_to_sum(rand, numpy_sum, arrays),
                "broadcast_ok": broadcast_ok}
    report["allgather"] = comm.allgather({"rank": comm.rank, "name": f"w{comm.rank}",
                                          "values": [comm.rank, 1.5, None]})
    comm.barrier()
    report["after_barrier"] = comm.allgather(comm.rank)
    return report


def out_of_step(comm) -> dict:
    """Rank 1 runs one step ahead: every rank must fail naming both steps."""
    comm.step = 7 if comm.rank == 1 else 6
    try:
        comm.allreduce_(np.ones(10))
    except CollectiveError as e:
        return {"error": type(e).__name__, "message": str(e)}
    return {"error": None}


def missing_rank(comm) -> dict:
    """The last rank never enters the collective: the others time out instead of hanging."""
    if comm.rank == comm.world_size - 1:
        time.sleep(comm.timeout_s + 3)  # stay alive (mpiexec ends a job whose rank exits)
        return {"skipped": True}
    try:
        comm.allreduce_(np.ones(10))
    except CollectiveTimeout as e:
        return {"error": type(e).__name__, "message": str(e)}
    return {"error": None}


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    world = MPI.COMM_WORLD
    timeout_s = 2.0 if scenario == "missing_rank" else 60.0
    comm = make_communicator("mpi", rank=world.Get_rank(), world_size=world.Get_size(),
                             timeout_s=timeout_s)
    report = {"conformance": conformance, "out_of_step": out_of_step,
              "missing_rank": missing_rank}[scenario](comm)
    (out_dir / f"rank{comm.rank}.json").write_text(json.dumps(report))
    if scenario == "missing_rank":
        # The abandoned request can never complete, so MPI_Finalize would wait forever,
        # and the first rank to leave without it makes mpiexec kill the rest: leave
        # only once every rank's report is written.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                (out_dir / f"rank{r}.json").exists() for r in range(comm.world_size)):
            time.sleep(0.1)
        os._exit(0)


if __name__ == "__main__":
    main()
