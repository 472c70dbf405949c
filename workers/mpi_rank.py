"""The rank main under MPI: `mpiexec -n W python -m disttrain.workers.mpi_rank JOB --run-dir RUN`.

Every rank runs disttrain.train.run_rank over an MPICommunicator; rank 0 is the driver
and the only writer of RUN (as the `disttrain train` process is for local and Ray jobs).
MPI jobs have no restarts: a lost rank ends the job with an error naming what failed
(within the collective timeout), and `--resume` continues it from RUN's checkpoints.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from disttrain.distributed import CollectiveError
from disttrain.train import SpecError, run_rank
from disttrain.train.driver import Driver
from disttrain.train.progress import Progress
from disttrain.train.spec import load_job
from disttrain.workers.comm.mpi import MPICommunicator


def main(argv=None) -> int:
    """Run this MPI rank of the job; the exit code (2 bad input, 1 failed)."""
    parser = argparse.ArgumentParser(prog="python -m disttrain.workers.mpi_rank")
    parser.add_argument("job")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        spec = load_job(args.job)
    except SpecError as error:
        print(f"disttrain: error: {error}", file=sys.stderr)
        return 2
    comm = MPICommunicator(timeout_s=spec.distributed.timeout_s)
    if comm.world_size != spec.distributed.workers:
        print(f"disttrain: error: {args.job}: [distributed] workers = "
              f"{spec.distributed.workers} but mpiexec started {comm.world_size} ranks; "
              "make them equal", file=sys.stderr)
        return 2
    driver = Driver(args.run_dir, spec, Progress(quiet=args.quiet)) if comm.rank == 0 else None
    # mpiexec hands each rank the SIGINT/SIGTERM it gets: every rank then agrees to stop
    # within about a second, with a checkpoint (the CLI kills the group on a second one).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        where = comm.allgather({"rank": comm.rank, "node": socket.gethostname(),
                                "pid": os.getpid()})
        if driver is None:
            run_rank(spec, comm, should_stop=stop.is_set)
            return 0
        driver.set_workers(where)
        summary = run_rank(spec, comm, state=driver.resume_state() if args.resume else None,
                           on_record=driver.on_record, on_checkpoint=driver.on_checkpoint,
                           should_stop=stop.is_set)
        driver.finish(summary)
        return 0
    except (CollectiveError, OSError, ValueError) as error:
        if driver is not None:
            driver.fail(error)
        print(f"disttrain: rank {comm.rank} failed: {error}", file=sys.stderr)
        return 1
    finally:
        comm.close()


if __name__ == "__main__":
    sys.exit(main())
