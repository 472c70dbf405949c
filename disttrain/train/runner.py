"""The rank side of a job: one function every launcher calls (local, Ray, MPI).

    run_rank(spec, comm, state=..., on_record=..., on_checkpoint=..., should_stop=...)

Only rank 0 is handed the state to resume from (the driver read it from its run
directory); rank 0 shares it with the other ranks over the communicator, so no rank
reads the run directory and a cluster needs no shared disk. Rank 0's records and
checkpoints go to the callbacks, which lead back to the driver (driver.py), the one
writer of the run directory; every rank's timeline reaches it through rank 0.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from .checkpoint import TrainState
from .context import LoopContext
from .loop import Trainer


def run_rank(spec, comm, *, state: TrainState | None = None, on_record=None,
             on_checkpoint=None, should_stop=None, loop=None, datasets=None, held=None) -> dict:
    """Build this rank's replica over comm, resume from rank 0's state, train; the summary.

    Rank 0 emits a record of kind "start" (step, total_steps), then the Trainer's
    ("train", "eval", "trace") to on_record. loop: a user's train_loop(ctx), which builds
    its own model and optimizer and runs each step (context.py), instead of the job's.
    datasets: (train, val) to train on instead of the [data] table's (a Ray Dataset's).
    held: a dict that gets the Trainer as held["trainer"], so the caller can take the
    replica's state after a failed collective (an elastic job goes on from memory).
    """
    state = share_state(comm, state)
    on_record = on_record if comm.rank == 0 and on_record else (lambda record: None)
    # One BLAS pool per rank, sized to the CPUs it was given, so ranks sharing a machine
    # do not oversubscribe its cores.
    with threadpool_limits(spec.blas_threads()):
        built = time.perf_counter()
        trainer = Trainer(spec, comm, on_record=on_record, on_checkpoint=on_checkpoint,
                          build_replica=loop is None, datasets=datasets)
        built = time.perf_counter() - built
        if held is not None:
            held["trainer"] = trainer
        should_stop = should_stop or (lambda: False)
        try:
            on_record({"kind": "start", "step": int(state.meta["step"]) if state else 0,
                       "total_steps": trainer.total_steps, "build_s": built,
                       "time": time.time()})
            if loop is not None:
                context = LoopContext(trainer, state, should_stop)
                loop(context)
                return context.summary()
            if state is not None:
                trainer.load_state(*state)
            return trainer.run(should_stop=should_stop)
        finally:
            trainer.close()


def share_state(comm, state: TrainState | None) -> TrainState | None:
    """Rank 0's state (or None) on every rank: its layout and meta as plain data, then
    every array's bytes in one broadcast."""
    if comm.world_size == 1:
        return state
    layout = None
    if comm.rank == 0 and state is not None:
        layout = {"meta": state.meta,
                  "arrays": [[part, name, a.dtype.str, list(a.shape)]
                             for part in ("model", "optim")
                             for name, a in getattr(state, part).items()]}
    layout = comm.allgather(layout)[0]
    if layout is None:
        return None
    sizes = [int(np.dtype(dtype).itemsize * np.prod(shape, dtype=np.int64))
             for _, _, dtype, shape in layout["arrays"]]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    payload = np.empty(max(int(offsets[-1]), 1), np.uint8)  # never empty: one byte spare
    if comm.rank == 0:
        for (part, name, _, _), lo, hi in zip(layout["arrays"], offsets[:-1], offsets[1:]):
            payload[lo:hi] = np.ascontiguousarray(getattr(state, part)[name]).view(
                np.uint8).reshape(-1)
    comm.broadcast_(payload, root=0)
    if comm.rank == 0:
        return state
    parts = {"model": {}, "optim": {}}
    for (part, name, dtype, shape), lo, hi in zip(layout["arrays"], offsets[:-1], offsets[1:]):
        parts[part][name] = payload[lo:hi].copy().view(dtype).reshape(shape)
    return TrainState(parts["model"], parts["optim"], layout["meta"])
