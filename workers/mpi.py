"""Rank main under MPI: `mpiexec -n N python -m disttrain.workers.mpi JOB --run-dir DIR [--resume]`.

Every rank runs the same Trainer as a Ray worker, over an MPICommunicator. Rank 0
writes the run directory. MPI jobs have no restarts: a lost rank ends the job (with
an error naming it, within the collective timeout), and `--resume` continues it.
"""

from __future__ import annotations

import argparse
import sys
import tomllib

from disttrain.workers.mpi_comm import MPICommunicator
from threadpoolctl import threadpool_limits

from disttrain.train import SpecError, Trainer, latest_valid_checkpoint, spec_from_dict
from disttrain.train.rundir import RunDir


def main(argv=None) -> int:
    """Run this MPI rank of the job; returns the exit code (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m disttrain.workers.mpi")
    parser.add_argument("job")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    try:
        with open(args.job, "rb") as f:
            spec = spec_from_dict(tomllib.load(f), source=args.job)
    except (OSError, tomllib.TOMLDecodeError, SpecError) as error:
        print(f"disttrain: error: {error}", file=sys.stderr)
        return 2
    comm = MPICommunicator(timeout_s=spec.distributed.timeout_s)
    if comm.world_size != spec.distributed.workers:
        print(f"disttrain: error: {args.job}: [distributed] workers = "
              f"{spec.distributed.workers} but mpiexec started {comm.world_size} ranks; "
              "make them equal", file=sys.stderr)
        return 2
    run = RunDir(args.run_dir, spec) if comm.rank == 0 else None
    with threadpool_limits(spec.blas_threads()):
        trainer = Trainer(spec, comm, run_dir=args.run_dir,
                          on_log=(lambda r: run.append_metrics([r])) if run else None)
        if args.resume:
            found = latest_valid_checkpoint(args.run_dir)
            if found:
                trainer.load_state(*found[1:])
        if run:
            if args.resume:
                run.forget_metrics_after(trainer.step)
            run.write_status(state="running", world_size=comm.world_size)
        summary = trainer.run()
        trainer.close()
    if run:
        run.write_status(state="done", step=summary["step"])
        run.write_timeline(trainer.times.trace)
        print(f"done at step {summary['step']}: val_loss {summary['val_loss']:.4f}  "
              f"val_accuracy {summary['val_accuracy']:.2%}  run directory: {args.run_dir}")
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
