"""MPICommunicator: the Communicator protocol on mpi4py's COMM_WORLD, for jobs under mpiexec.

MPI collectives cannot time out and know nothing of training steps, so every collective
starts with a small non-blocking allgather of every rank's Call (step, seq, kind, size,
dtype, root; workers/comm/base.py) polled against a deadline: it is the watchdog (a
rank that never arrives gives CollectiveTimeout instead of a hang) and the step check
(every rank sees every rank's step, so a rank out of step fails with both numbers).
Once all ranks are known to be in the same collective, the data moves with MPI's own
blocking Allreduce / Bcast / Reduce_scatter / Allgatherv, at full MPI speed (the last two
with the chunks of `chunk_bounds`, as every backend's reduce_scatter_ and allgather_).
"""

from __future__ import annotations

import time

import numpy as np

from disttrain.distributed.comm import DEFAULT_TIMEOUT_S, CollectiveError, CollectiveTimeout
from disttrain.workers.comm.base import (
    ROW_FIELDS,
    Call,
    CommunicatorBase,
    check_same_call,
    chunk_bounds,
)


class MPICommunicator(CommunicatorBase):
    """A Communicator over mpi4py's COMM_WORLD (or another mpi4py communicator)."""

    noun = "MPI communicator"

    def __init__(self, comm=None, timeout_s: float = DEFAULT_TIMEOUT_S):
        from mpi4py import MPI  # imported here so `import disttrain.workers` works without MPI

        self._MPI = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        super().__init__(self._comm.Get_rank(), self._comm.Get_size(), timeout_s)

    def _allreduce(self, flat: np.ndarray) -> None:
        self._enter("allreduce", flat.nbytes, flat.dtype.char)
        self._comm.Allreduce(self._MPI.IN_PLACE, flat, op=self._MPI.SUM)

    def _broadcast(self, flat: np.ndarray, root: int) -> None:
        self._enter("broadcast", flat.nbytes, flat.dtype.char, root)
        self._comm.Bcast(flat, root=root)

    def _reduce_scatter(self, flat: np.ndarray) -> None:
        self._enter("reduce_scatter", flat.nbytes, flat.dtype.char)
        counts, _ = self._chunks(flat.size)
        lo, hi = chunk_bounds(flat.size, self.world_size)[self.rank]
        # IN_PLACE would leave this rank's sum at the front of flat, not at its chunk
        mine = np.empty(hi - lo, flat.dtype)
        self._comm.Reduce_scatter(flat, mine, counts, op=self._MPI.SUM)
        flat[lo:hi] = mine

    def _allgather_chunks(self, flat: np.ndarray) -> None:
        self._enter("allgather_", flat.nbytes, flat.dtype.char)
        counts, displs = self._chunks(flat.size)
        self._comm.Allgatherv(self._MPI.IN_PLACE, [flat, (counts, displs)])

    def _chunks(self, n: int) -> tuple[list, list]:
        """Every rank's chunk as MPI wants it: (counts, displacements)."""
        bounds = chunk_bounds(n, self.world_size)
        return [hi - lo for lo, hi in bounds], [lo for lo, _ in bounds]

    def _allgather(self, blob: bytes) -> list:
        mine = np.frombuffer(blob, np.uint8)
        sizes = np.array([c.nbytes for c in self._enter("allgather", mine.size)], np.int64)
        data = np.empty(int(sizes.sum()), np.uint8)
        self._wait(self._comm.Iallgatherv(mine, [data, sizes]), "allgather")
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        return [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(self.world_size)]

    def _barrier(self) -> None:
        self._enter("barrier")  # the entry check is a barrier

    # --- the watchdog and step check --------------------------------------------------

    def _enter(self, kind: str, nbytes: int | None = None, dtype: str | None = None,
               root: int | None = None) -> list:
        """Allgather every rank's Call with a deadline; check each is ours; the Calls."""
        self._next_seq(kind)
        mine = self._my_call(kind, nbytes=nbytes, dtype=dtype, root=root)
        table = np.empty((self.world_size, ROW_FIELDS), np.int64)
        self._wait(self._comm.Iallgather(np.array(mine.to_row(), np.int64), table), kind)
        calls = [Call.from_row(r, row) for r, row in enumerate(table)]
        try:
            for call in calls:
                check_same_call(call, mine)
        except CollectiveError as error:
            self._broken = str(error)
            raise
        return calls

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
                    f"{self._my_call(kind).where()} timed out after {self.timeout_s:.1f} s: "
                    "not every rank arrived (MPI cannot tell which; look for a rank that is "
                    "stuck or slower than the timeout)")
