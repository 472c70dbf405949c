"""Helpers every backend shares: buffer checks, chunking, plain-data encoding, messages."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


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


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Split range(n) into `parts` contiguous pieces the way np.array_split does."""
    base, extra = divmod(n, parts)
    bounds, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


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


def step_mismatch(rank: int, step: int, other_rank: int, other_step: int, what: str) -> str:
    """The message for two ranks entering one collective at different steps."""
    return (
        f"rank {rank} is at step {step} but rank {other_rank} is at step {other_step} "
        f"({what}); every rank must run the same steps in the same order"
    )


def check_root(root: int, world_size: int) -> None:
    """A broadcast's root must be a rank of this world."""
    if not 0 <= root < world_size:
        raise ValueError(f"broadcast_ root={root} is not a rank of a world of size {world_size}")
