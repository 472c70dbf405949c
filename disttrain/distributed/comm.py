"""The Communicator protocol every backend implements, and the one-process communicator.

A backend (coordinator actor, TCP ring, MPI) lives in workers/; disttrain only knows
this protocol, so the library never imports Ray or mpi4py.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_TIMEOUT_S = 300.0


class CollectiveError(RuntimeError):
    """A collective could not complete: a peer died, timed out, or is out of step."""


class CollectiveTimeout(CollectiveError, TimeoutError):
    """A collective waited longer than its timeout."""


class CollectiveAborted(CollectiveError):
    """The job was aborted (a rank died, or the supervisor gave up); the message says why."""


class StepMismatch(CollectiveError):
    """Ranks entered the same collective at different training steps."""


class PeerLost(CollectiveError):
    """A peer's process died or its connection closed in the middle of a collective."""


@runtime_checkable
class Communicator(Protocol):
    """What DistributedDataParallel and the train loop need from a backend.

    Every call is collective: all ranks make the same calls in the same order. `step`
    is the training step the caller is in; it travels with every collective so a rank
    out of step fails with both step numbers instead of hanging.

    Optional, looked up with getattr: `bucket_buffers(sizes) -> list | None`, collective,
    given [(numel, dtype), ...] the same on every rank: zeroed flat buffers in memory the
    backend's collectives read where it is (the coordinator's pinned shared memory), or
    None for plain arrays. DistributedDataParallel puts its gradient buckets there, so
    backward writes each gradient where the all-reduce reads it: no copy in.
    """

    rank: int
    world_size: int
    timeout_s: float
    step: int

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` over all ranks, in place; every rank gets the same result."""

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite `buf` on every rank with root's `buf`, in place."""

    def reduce_scatter_(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` over all ranks into this rank's chunk of it (chunk_bounds(buf.size,
        world_size)[rank]), in place; the rest of `buf` is left undefined."""

    def allgather_(self, buf: np.ndarray) -> np.ndarray:
        """Fill every rank's chunk of `buf` (chunk_bounds) from the rank that owns it, in
        place; this rank's own chunk is what it sends."""

    def allgather(self, obj: Any) -> list:
        """Every rank's `obj` (plain data: numbers, strings, lists, dicts), in rank order."""

    def barrier(self) -> None:
        """Return once every rank has entered the barrier."""

    def close(self) -> None:
        """Release sockets and threads; safe to call twice."""


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Split range(n) into `parts` contiguous pieces the way np.array_split does: the
    chunks of reduce_scatter_ and allgather_ (rank r owns piece r; the first n % parts
    pieces are one longer, and a buffer smaller than the world leaves the last empty)."""
    base, extra = divmod(n, parts)
    bounds, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


class LocalCommunicator:
    """The communicator of a one-process job: every collective is the identity."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.rank = 0
        self.world_size = 1
        self.timeout_s = timeout_s
        self.step = 0

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        if root != 0:
            raise ValueError(f"broadcast_ root={root} is not a rank of a world of size 1")
        return buf

    def reduce_scatter_(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def allgather_(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def allgather(self, obj: Any) -> list:
        return [obj]

    def barrier(self) -> None:
        return None

    def close(self) -> None:
        return None
