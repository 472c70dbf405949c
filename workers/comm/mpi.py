"""MPICommunicator: the Communicator protocol on mpi4py's COMM_WORLD, for jobs under mpiexec.

MPI collectives cannot time out and know nothing of training steps, so every collective
starts with a small non-blocking allgather of (step, seq, kind) polled against a
deadline: it is the watchdog (a rank that never arrives gives CollectiveTimeout instead
of a hang) and the step check (every rank sees every rank's step, so a rank out of step
fails with both numbers). Once all ranks are known to be in the same collective, the
data moves with MPI's own blocking Allreduce / Bcast, at full MPI speed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from disttrain.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveError,
    CollectiveTimeout,
    StepMismatch,
)
from disttrain.workers.comm.base import (
    check_root,
    decode_plain,
    encode_plain,
    flat_view,
    step_mismatch,
)

_KINDS = {"allreduce": 1, "broadcast": 2, "allgather": 3, "barrier": 4}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}


class MPICommunicator:
    """A Communicator over mpi4py's COMM_WORLD (or another mpi4py communicator)."""

    def __init__(self, comm=None, timeout_s: float = DEFAULT_TIMEOUT_S):
        from mpi4py import MPI  # imported here so `import disttrain.workers` works without MPI

        self._MPI = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.world_size = self._comm.Get_size()
        self.timeout_s = timeout_s
        self.step = 0
        self._seq = 0
        self._broken: str | None = None

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` over all ranks, in place, with MPI_Allreduce(MPI_IN_PLACE)."""
        flat = flat_view(buf, "allreduce_")
        if self.world_size > 1:
            self._enter("allreduce", flat.size, flat.dtype.num)
            self._comm.Allreduce(self._MPI.IN_PLACE, flat, op=self._MPI.SUM)
        return buf

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite `buf` on every rank with root's `buf`, with MPI_Bcast."""
        flat = flat_view(buf, "broadcast_")
        check_root(root, self.world_size)
        if self.world_size > 1:
            self._enter("broadcast", flat.size, flat.dtype.num, root)
            self._comm.Bcast(flat, root=root)
        return buf

    def allgather(self, obj: Any) -> list:
        """Every rank's `obj` (plain data, sent as JSON), in rank order."""
        blob = np.frombuffer(encode_plain(obj), np.uint8)
        if self.world_size == 1:
            return [decode_plain(blob.tobytes())]
        sizes = self._enter("allgather", blob.size, 0)[:, 3]
        data = np.empty(int(sizes.sum()), np.uint8)
        self._wait(self._comm.Iallgatherv(blob, [data, sizes]), "allgather")
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        return [decode_plain(data[offsets[i]:offsets[i + 1]].tobytes())
                for i in range(self.world_size)]

    def barrier(self) -> None:
        """Return once every rank has entered the barrier (the entry check is one)."""
        if self.world_size > 1:
            self._enter("barrier", 0, 0)

    def close(self) -> None:
        """Nothing to release: COMM_WORLD belongs to mpi4py; safe to call twice."""

    # --- the watchdog and step check --------------------------------------------------

    def _enter(self, kind: str, size: int, dtype_num: int, root: int = 0) -> np.ndarray:
        """Allgather (step, seq, kind, size, dtype, root) with a deadline; check agreement."""
        if self._broken is not None:
            raise CollectiveError(f"MPI communicator is unusable after: {self._broken}")
        self._seq += 1
        mine = np.array([self.step, self._seq, _KINDS[kind], size, dtype_num, root], np.int64)
        table = np.empty((self.world_size, mine.size), np.int64)
        self._wait(self._comm.Iallgather(mine, table), kind)
        self._check_agreement(table, kind)
        return table

    def _check_agreement(self, table: np.ndarray, kind: str) -> None:
        what = f"{kind}, collective #{self._seq}"
        for other, row in enumerate(table):
            step, seq, kind_id, size, dtype_num, root = (int(x) for x in row)
            error = None
            if step != self.step:
                error = StepMismatch(step_mismatch(other, step, self.rank, self.step, what))
            elif kind_id != _KINDS[kind] or seq != self._seq:
                error = CollectiveError(
                    f"rank {other} is in {_KIND_NAMES.get(kind_id, '?')} (collective #{seq}) "
                    f"but rank {self.rank} is in {what}; every rank must make the same calls")
            elif kind != "allgather" and (size, dtype_num) != tuple(table[self.rank, 3:5]):
                error = CollectiveError(
                    f"rank {other} passed {size} elements of dtype #{dtype_num} but rank "
                    f"{self.rank} passed {table[self.rank, 3]} of #{table[self.rank, 4]} "
                    f"({what}); every rank must pass the same shape and dtype")
            elif root != table[self.rank, 5]:
                error = CollectiveError(
                    f"rank {other} broadcasts from root {root} but rank {self.rank} from root "
                    f"{table[self.rank, 5]}; pass the same root on every rank")
            if error is not None:
                self._broken = str(error)
                raise error

    def _wait(self, request, kind: str) -> None:
        """Poll a non-blocking request until done or the deadline; MPI itself never times out."""
        deadline = time.monotonic() + self.timeout_s
        spins, pause = 0, 0.0
        while not request.Test():
            spins += 1
            if spins > 2000:  # after a short spin, back off so a waiting rank yields its core
                pause = min(0.005, pause + 0.0001)
                time.sleep(pause)
            if time.monotonic() > deadline:
                self._broken = f"{kind} at step {self.step} timed out"
                raise CollectiveTimeout(
                    f"{kind} at step {self.step} (collective #{self._seq}) timed out after "
                    f"{self.timeout_s:.1f} s: not every rank arrived (MPI cannot tell which; "
                    "look for a rank that is stuck or slower than the timeout)")
