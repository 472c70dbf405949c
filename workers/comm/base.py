"""What every communicator shares: bookkeeping, the one "same collective?" check, helpers.

Bookkeeping: `CommunicatorBase` validates the rank, keeps `step` (set by the train
loop) and `seq` (this rank's count of collectives so far), refuses every collective
once the communicator is closed or broken by a failed one, checks buffers and roots,
and answers on its own in a world of one. A backend supplies `_allreduce(flat)`,
`_broadcast(flat, root)`, `_allgather(blob) -> [blob, ...]` and `_barrier()`, called
only when world_size > 1, with the arguments checked. `_reduce_scatter(flat)` and
`_allgather_chunks(flat)` (the sharded optimizer's, chunks as `chunk_bounds`) have
exact fallbacks on `_allreduce`: a reduce-scatter is an all-reduce whose other chunks
are not read, and an all-gather is an all-reduce of the buffer zeroed outside this
rank's chunk (x + 0 == x). A backend overrides them where it has something cheaper
(MPI: Reduce_scatter and Allgatherv), and inherits the fallback's step and sequence
checks and timeouts otherwise.

The check: before any data moves, each backend learns what its peers are doing as a
`Call` (rank, step, seq, kind, and for data the size, dtype and root) — from a
coordinator slot, a shared-memory header, a ring frame header or an MPI allgather — and
hands pairs to `check_same_call`. Steps that differ raise StepMismatch, anything else
that differs CollectiveError; both with one text that names both ranks, both steps and
both calls.

Helpers: 1-D views of the caller's buffer, np.array_split-style chunks, the rank-order
sum (so results never depend on arrival order), and JSON for allgather (nothing that
comes off the network is unpickled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from disttrain.distributed.comm import (  # noqa: F401 - chunk_bounds: the backends' too
    DEFAULT_TIMEOUT_S,
    CollectiveError,
    StepMismatch,
    chunk_bounds,
)

# Collective kinds as they travel in shared-memory headers, ring frames and MPI tables.
# "allgather" is allgather(obj), plain data; "allgather_" fills a buffer's chunks in place.
# "scatter" and "gather" are a shared-memory group's, inside the hierarchical reduce-scatter
# and all-gather: a root's chunks to their ranks, and the ranks' chunks to a root.
KINDS = {"allreduce": 1, "broadcast": 2, "allgather": 3, "barrier": 4, "reduce_scatter": 5,
         "allgather_": 6, "bucket_buffers": 7, "abort": 9, "scatter": 10, "gather": 11}
KIND_NAMES = {v: k for k, v in KINDS.items()}
# Kinds whose ranks must pass buffers of one size and dtype.
DATA_KINDS = ("allreduce", "broadcast", "reduce_scatter", "allgather_", "bucket_buffers",
              "scatter", "gather")

ROOTED_KINDS = ("broadcast", "scatter", "gather")


@dataclass(frozen=True)
class Call:
    """One rank's collective, as its peers see it; None where a path does not know."""

    rank: int
    step: int
    seq: int
    kind: str
    nbytes: int | None = None
    dtype: str | None = None  # numpy's one-character code
    root: int | None = None

    def where(self) -> str:
        """'allreduce at step 4 (collective #9)': the place a rank is at."""
        return f"{self.kind} at step {self.step} (collective #{self.seq})"

    def __str__(self) -> str:
        text = f"{self.kind} #{self.seq}"
        if self.kind in ROOTED_KINDS and self.root is not None:
            text += f" {'to' if self.kind == 'gather' else 'from'} root {self.root}"
        if self.nbytes is not None and self.kind in DATA_KINDS:
            text += f" on {self.nbytes} bytes of {dtype_name(self.dtype)}"
        return text

    def to_row(self) -> tuple:
        """Six integers (step, seq, kind, nbytes, dtype, root) for a shared table."""
        return (self.step, self.seq, KINDS[self.kind], self.nbytes or 0,
                ord(self.dtype) if self.dtype else 0, -1 if self.root is None else self.root)

    @classmethod
    def from_row(cls, rank: int, row) -> Call:
        """Inverse of to_row, for the rank whose row it is."""
        step, seq, kind, nbytes, dtype, root = (int(x) for x in row[:6])
        return cls(rank, step, seq, KIND_NAMES.get(kind, "?"), nbytes,
                   chr(dtype) if dtype else None, None if root < 0 else root)


ROW_FIELDS = 6  # len(Call.to_row())


def check_same_call(call: Call, reference: Call) -> None:
    """Raise if `call` is not the collective `reference` is in (StepMismatch on steps)."""
    if call.step != reference.step:
        raise StepMismatch(mismatch_text(call, reference))
    same = call.kind == reference.kind and call.seq == reference.seq
    if same and call.kind in ROOTED_KINDS and None not in (call.root, reference.root):
        same = call.root == reference.root
    if same and call.kind in DATA_KINDS and None not in (call.nbytes, reference.nbytes):
        same = (call.nbytes, call.dtype) == (reference.nbytes, reference.dtype)
    if not same:
        raise CollectiveError(mismatch_text(call, reference))


def mismatch_text(a: Call, b: Call) -> str:
    """The one message for two ranks in different collectives."""
    at = "but" if a.step != b.step else "and"
    return (f"rank {a.rank} is at step {a.step} {at} rank {b.rank} is at step {b.step}: "
            f"rank {a.rank} called {a}, rank {b.rank} called {b}; every rank must make the "
            "same calls in the same order, with the same root and the same shape and dtype")


def timeout_text(call: Call, timeout_s: float, missing: list, last: list) -> str:
    """The message for `missing` ranks that never came to `call`; `last`: their last Calls."""
    where = "; ".join(f"rank {c.rank} last entered {c.where()}" for c in last)
    return (f"{call.where()} timed out after {timeout_s:.1f} s: ranks {missing} never "
            "arrived" + (f"; {where}" if where else ""))


class Breakable:
    """The closed and broken states: after a collective fails, no other may start."""

    noun = "communicator"
    _closed = False
    _broken: str | None = None

    def _check_usable(self, what: str) -> None:
        if self._closed:
            raise CollectiveError(f"{what} on a closed {self.noun}")
        if self._broken is not None:
            raise CollectiveError(
                f"the {self.noun} is broken by an earlier error: {self._broken}")


class CommunicatorBase(Breakable):
    """The Communicator protocol around a backend's four collectives (see the module doc)."""

    def __init__(self, rank: int, world_size: int, timeout_s: float = DEFAULT_TIMEOUT_S):
        check_rank(rank, world_size)
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.step = 0
        self._seq = 0

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` over all ranks, in place; every rank gets the same result."""
        flat = flat_view(buf, "allreduce_")
        if self.world_size > 1:
            self._allreduce(flat)
        return buf

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite `buf` on every rank with root's `buf`, in place."""
        flat = flat_view(buf, "broadcast_")
        check_root(root, self.world_size)
        if self.world_size > 1:
            self._broadcast(flat, root)
        return buf

    def reduce_scatter_(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` over all ranks into this rank's chunk of it (chunk_bounds), in place;
        the other chunks are left undefined."""
        flat = flat_view(buf, "reduce_scatter_")
        if self.world_size > 1:
            self._reduce_scatter(flat)
        return buf

    def allgather_(self, buf: np.ndarray) -> np.ndarray:
        """Fill every rank's chunk of `buf` (chunk_bounds) from its owner, in place."""
        flat = flat_view(buf, "allgather_")
        if self.world_size > 1:
            self._allgather_chunks(flat)
        return buf

    def _reduce_scatter(self, flat: np.ndarray) -> None:
        self._allreduce(flat)  # every chunk summed: this rank's among them

    def _allgather_chunks(self, flat: np.ndarray) -> None:
        lo, hi = chunk_bounds(flat.size, self.world_size)[self.rank]
        flat[:lo] = 0
        flat[hi:] = 0
        self._allreduce(flat)  # each chunk: its owner's values plus zeros, exactly

    def allgather(self, obj: Any) -> list:
        """Every rank's `obj` (plain data, sent as JSON), in rank order."""
        blob = encode_plain(obj)
        if self.world_size == 1:
            return [decode_plain(blob)]
        return [decode_plain(b) for b in self._allgather(blob)]

    def barrier(self) -> None:
        """Return once every rank has entered the barrier."""
        if self.world_size > 1:
            self._barrier()

    def close(self) -> None:
        """Release what the backend holds; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._release()

    def _next_seq(self, what: str) -> int:
        """Number this rank's next collective; refused once closed or broken."""
        self._check_usable(what)
        self._seq += 1
        return self._seq

    def _my_call(self, kind: str, **data) -> Call:
        """This rank's current collective as a Call."""
        return Call(self.rank, self.step, self._seq, kind, **data)

    def _release(self) -> None:
        """Backend hook for close(): sockets, threads, segments."""


# --- helpers ----------------------------------------------------------------------------

def check_rank(rank: int, world_size: int) -> None:
    """A rank must be one of 0 .. world_size - 1."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")


def check_root(root: int, world_size: int) -> None:
    """A broadcast's root must be a rank of this world."""
    if not 0 <= root < world_size:
        raise ValueError(f"broadcast_ root={root} is not a rank of a world of size {world_size}")


def flat_view(buf: Any, op: str) -> np.ndarray:
    """A 1-D view of `buf` that shares its memory; a clear error if there is none."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{op} takes a numpy array, got {type(buf).__name__}")
    if not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError(
            f"{op} works in place and needs a writeable C-contiguous array; "
            "pass np.ascontiguousarray(buf) and copy the result back"
        )
    return buf.reshape(-1)


def dtype_name(code: str | None) -> str:
    """numpy's name for a one-character dtype code; '?' for none or garbage."""
    try:
        return np.dtype(code).name if code else "?"
    except TypeError:
        return "?"


def sum_in_rank_order(arrays: list, out: np.ndarray) -> np.ndarray:
    """out = ((a0 + a1) + a2) + ...: one fixed order, so the bits never depend on arrival."""
    if len(arrays) == 1:
        np.copyto(out, arrays[0])
        return out
    np.add(arrays[0], arrays[1], out=out)
    for a in arrays[2:]:
        np.add(out, a, out=out)
    return out


def encode_plain(obj: Any) -> bytes:
    """JSON bytes of `obj`; collectives never unpickle what comes off the network."""
    try:
        return json.dumps(obj, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"allgather takes plain data (numbers, strings, lists, dicts, None); {e}"
        ) from None


def decode_plain(data: bytes | bytearray | memoryview) -> Any:
    """Inverse of encode_plain."""
    return json.loads(bytes(data).decode())
