"""CoordinatorCommunicator: the Communicator protocol on top of the coordinator actor.

Small buffers go to the coordinator, which sums them in rank order (one round trip).
Large buffers never pass through the coordinator: every rank `ray.put`s its buffer once
and the coordinator only swaps ObjectRefs. Then rank r sums slice r of all buffers,
reading them zero-copy from the object store in rank order, and the ranks swap their
summed slices the same way. Each element is still ((b0 + b1) + b2) + ..., so the bits
equal the star sum's, while the work is split W ways and the coordinator copies nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

from disttrain.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
)
from workers.collectives import (
    chunk_bounds,
    decode_plain,
    encode_plain,
    flat_view,
    sum_in_rank_order,
)

# Below this the star all-reduce (arrays in the call, one round trip) beats ray.put.
INLINE_BYTES = 256 * 1024
# The coordinator reports a timeout itself; give its answer this long to arrive.
GRACE_S = 10.0


class CoordinatorCommunicator:
    """A Communicator whose collectives go through the job's coordinator actor."""

    def __init__(self, coordinator, rank: int, world_size: int,
                 timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_interval_s: float = 1.0,
                 inline_bytes: int = INLINE_BYTES):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.step = 0
        self.inline_bytes = inline_bytes
        self._coord = coordinator
        self._seq = 0
        self._closed = threading.Event()
        self._heartbeats = None
        if world_size > 1:
            self._heartbeats = threading.Thread(
                target=self._send_heartbeats, args=(heartbeat_interval_s,),
                daemon=True, name=f"heartbeat-rank{rank}")
            self._heartbeats.start()

    # --- the protocol -----------------------------------------------------------------

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` over all ranks, in place, added in rank order."""
        flat = flat_view(buf, "allreduce_")
        if self.world_size == 1:
            return buf
        if flat.nbytes <= self.inline_bytes:
            total = self._call("allreduce", self._coord.allreduce, flat)
            self._check_like(total, flat, "allreduce_")
            np.copyto(flat, total)
            return buf
        self._allreduce_split(flat)
        return buf

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite `buf` on every rank with root's `buf`, in place."""
        flat = flat_view(buf, "broadcast_")
        if not 0 <= root < self.world_size:
            raise ValueError(
                f"broadcast_ root={root} is not a rank of a world of size {self.world_size}")
        if self.world_size == 1:
            return buf
        payload = None
        if self.rank == root:
            payload = flat if flat.nbytes <= self.inline_bytes else [ray.put(flat)]
        value = self._call("broadcast", self._coord.broadcast, payload, root)
        if self.rank != root:
            arr = value if isinstance(value, np.ndarray) else self._fetch([value], [root])[0]
            self._check_like(arr, flat, "broadcast_")
            np.copyto(flat, arr)
        return buf

    def allgather(self, obj: Any) -> list:
        """Every rank's `obj` (plain data), in rank order."""
        blob = encode_plain(obj)
        if self.world_size == 1:
            return [decode_plain(blob)]
        blobs = self._exchange("allgather", blob)
        return [decode_plain(b) for b in blobs]

    def barrier(self) -> None:
        """Return once every rank has entered the barrier."""
        if self.world_size > 1:
            self._call("barrier", self._coord.barrier)

    def close(self) -> None:
        """Stop heartbeating and tell the coordinator this rank left cleanly; safe twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self.world_size > 1:
            try:
                self._coord.leave.remote(self.rank)
            except Exception:  # the coordinator may already be gone at shutdown
                pass

    # --- the split all-reduce ---------------------------------------------------------

    def _allreduce_split(self, flat: np.ndarray) -> None:
        mine = ray.put(flat)
        refs = self._exchange("allreduce", [mine])
        bounds = chunk_bounds(flat.size, self.world_size)
        lo, hi = bounds[self.rank]
        arrays = self._fetch(refs, range(self.world_size))
        for a in arrays:
            self._check_like(a, flat, "allreduce_")
        sum_in_rank_order([a[lo:hi] for a in arrays], out=flat[lo:hi])
        del arrays  # unpin the peers' buffers before the second round
        part = ray.put(flat[lo:hi])
        parts = self._exchange("allreduce-parts", [part])
        others = [r for r in range(self.world_size) if r != self.rank]
        for r, arr in zip(others, self._fetch([parts[r] for r in others], others)):
            plo, phi = bounds[r]
            np.copyto(flat[plo:phi], arr)
        del mine

    # --- plumbing ---------------------------------------------------------------------

    def _call(self, what: str, method, *args):
        """One collective call to the coordinator, its errors turned into CollectiveErrors."""
        self._seq += 1
        ref = method.remote(self.rank, self.step, self._seq, *args, timeout_s=self.timeout_s)
        return self._get(ref, what)

    def _exchange(self, kind: str, payload: Any) -> list:
        """Every rank's payload, in rank order (ObjectRefs must sit inside a list)."""
        self._seq += 1
        ref = self._coord.exchange.remote(self.rank, kind, self.step, self._seq, payload,
                                          timeout_s=self.timeout_s)
        return self._get(ref, kind)

    def _get(self, ref, what: str):
        try:
            return ray.get(ref, timeout=self.timeout_s + GRACE_S)
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, CollectiveError):
                raise type(cause)(str(cause)) from None
            raise
        except GetTimeoutError:
            raise CollectiveTimeout(
                f"{what} at step {self.step}: the coordinator did not answer within "
                f"{self.timeout_s + GRACE_S:.1f} s") from None
        except RayActorError as e:
            raise CollectiveError(
                f"{what} at step {self.step}: the coordinator actor died ({e})") from None

    def _fetch(self, wrapped_refs, ranks) -> list:
        """Zero-copy arrays behind [[ref], ...]; a lost object names the rank that owned it."""
        out = []
        for rank, (ref,) in zip(ranks, wrapped_refs):
            try:
                out.append(ray.get(ref, timeout=self.timeout_s))
            except ObjectLostError:
                raise PeerLost(
                    f"rank {rank} died: its buffer for the collective at step {self.step} "
                    "is gone from the object store") from None
            except GetTimeoutError:
                raise CollectiveTimeout(
                    f"fetching rank {rank}'s buffer at step {self.step} took longer than "
                    f"{self.timeout_s:.1f} s") from None
        return out

    def _check_like(self, arr: np.ndarray, flat: np.ndarray, op: str) -> None:
        if arr.dtype != flat.dtype or arr.size != flat.size:
            raise CollectiveError(
                f"{op} at step {self.step}: rank {self.rank} has {flat.size} x {flat.dtype} "
                f"but a peer sent {arr.size} x {arr.dtype}; every rank must pass the same "
                "shape and dtype")

    def _send_heartbeats(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            try:
                self._coord.heartbeat.remote(self.rank)
            except Exception:  # a dead coordinator shows up in the next collective
                pass
