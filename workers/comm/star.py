"""CoordinatorCommunicator: the Communicator protocol on top of the coordinator actor.

The coordinator is the control plane: rendezvous, step and sequence checks, heartbeats
and abort. The data path depends on where the ranks are:

* Every rank on one node (the usual case): shared memory (workers/comm/shm.py), for every
  all-reduce and broadcast. On the first one the ranks agree through the coordinator on
  a segment whose name holds a fresh secret, map it, and from then on synchronise
  through counters in the segment (microseconds, not an actor round trip of a
  millisecond or more). Rank r sums slice r of every rank's buffer in rank order.
  While waiting, a rank watches its peers' processes, the deadline and (every half
  second) the coordinator's abort flag.
* Ranks on several nodes, or `shared_memory=False`: small buffers go to the
  coordinator, which sums them in rank order (the star path, one round trip). Large
  ones never pass through it: every rank `ray.put`s its buffer once and the coordinator
  only swaps ObjectRefs; rank r sums slice r of all buffers, read zero-copy in rank
  order, and the ranks swap the summed slices the same way.

Every path adds each element as ((b0 + b1) + b2) + ..., so the bits are the star sum's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

from disttrain.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveAborted,
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
)
from disttrain.workers.comm import shm
from disttrain.workers.comm.base import (
    check_root,
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
# While waiting on shared memory, ask the coordinator whether the job was aborted (or a
# peer went elsewhere) after this long, and then this often.
STATUS_AFTER_S = 0.25
STATUS_EVERY_S = 0.5


class CoordinatorCommunicator:
    """A Communicator whose collectives go through the job's coordinator actor."""

    def __init__(self, coordinator, rank: int, world_size: int,
                 timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_interval_s: float = 1.0,
                 inline_bytes: int = INLINE_BYTES, shared_memory: bool = True,
                 shm_min_bytes: int = 0):
        """`shared_memory=False` (the same on every rank) keeps the star and object-store
        paths even when all ranks share a node; buffers under `shm_min_bytes` take the
        star path anyway."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.step = 0
        self.inline_bytes = inline_bytes
        self.shm_min_bytes = shm_min_bytes
        self._coord = coordinator
        self._seq = 0
        self._closed = threading.Event()
        # None: not decided yet (decided with the peers on the first large collective).
        self._shm: shm.ShmGroup | None = None
        self._shm_state = None if (shared_memory and world_size > 1) else "off"
        self._status_ref = None
        self._status_due = 0.0
        self.shm_names: list = []  # every segment this rank created or mapped (diagnostics)
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
        if self._use_shm(flat, "allreduce_"):
            self._seq += 1
            if self._shm.allreduce_(flat, step=self.step, seq=self._seq,
                                    timeout_s=self.timeout_s, on_wait=self._on_shm_wait):
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
        check_root(root, self.world_size)
        if self.world_size == 1:
            return buf
        if self._use_shm(flat, "broadcast_"):
            self._seq += 1
            if self._shm.broadcast_(flat, root, step=self.step, seq=self._seq,
                                    timeout_s=self.timeout_s, on_wait=self._on_shm_wait):
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
        if self._shm is not None:
            self._shm.close()
        if self.world_size > 1:
            try:
                self._coord.leave.remote(self.rank)
            except Exception:  # the coordinator may already be gone at shutdown
                pass

    # --- the shared-memory data path -------------------------------------------------

    def _use_shm(self, flat: np.ndarray, op: str) -> bool:
        """Whether this collective goes through shared memory (set up on the first)."""
        if flat.nbytes < self.shm_min_bytes:
            return False
        if self._shm_state is None:
            self._setup_shm(flat, op)
        return self._shm_state == "on" and flat.nbytes < self._shm.too_big

    def _setup_shm(self, flat: np.ndarray, op: str) -> None:
        """Agree with every rank, through the coordinator, on a node-local group or none.

        Run by the first all-reduce or broadcast, which every rank makes at the same
        point, so every rank reaches the same decision. Rank 0 creates the segment
        before the first exchange: two coordinator round trips, once per communicator.
        """
        group, token = None, None
        if self.rank == 0 and shm.supported():
            try:
                token = shm.new_token(_job_id())
                group = shm.ShmGroup(0, self.world_size, token, create=True)
                self.shm_names = group.names
            except (OSError, CollectiveError):
                group, token = None, None
        try:
            info = {"node": _node_key(), "supported": shm.supported(), "token": token}
            infos = self._exchange(f"{op} (shared-memory setup)", info)
            usable = (infos[0]["token"] is not None
                      and all(i["supported"] and i["node"] == infos[0]["node"] for i in infos))
            if usable and self.rank != 0:
                try:
                    group = shm.ShmGroup(self.rank, self.world_size, infos[0]["token"],
                                         create=False)
                    self.shm_names = group.names
                except (OSError, CollectiveError, ValueError):
                    group = None
            oks = self._exchange(f"{op} (shared-memory attach)", usable and group is not None)
            if all(oks):
                group.join(self.timeout_s)  # then the names are unlinked
                self._shm, self._shm_state = group, "on"
                return
        except BaseException:
            if group is not None:
                group.close()  # unlinks what rank 0 created
            raise
        if group is not None:
            group.close()
        self._shm_state = "off"

    def _on_shm_wait(self, waited_s: float, pending: list) -> None:
        """Called every few ms while a shared-memory collective waits for `pending`.

        Polls the coordinator (without blocking) for an abort, and for a pending rank
        that went into another collective at this sequence number or later: that rank
        will never arrive, so fail now rather than at the timeout.
        """
        if waited_s < STATUS_AFTER_S:
            return
        now = time.monotonic()
        if self._status_ref is None:
            if now >= self._status_due:
                self._status_ref = self._coord.status.remote()
            return
        ready, _ = ray.wait([self._status_ref], timeout=0)
        if not ready:
            return
        ref, self._status_ref = self._status_ref, None
        self._status_due = now + STATUS_EVERY_S
        try:
            status = ray.get(ref, timeout=1.0)
        except RayActorError as e:
            raise CollectiveError(f"collective #{self._seq} at step {self.step}: the "
                                  f"coordinator actor died ({e})") from None
        except Exception:  # a slow or odd answer: ask again later
            return
        if status.get("aborted"):
            raise CollectiveAborted(status["aborted"])
        for w in status.get("workers", []):
            pos = w.get("position")
            if w["rank"] in pending and pos is not None and pos[2] >= self._seq:
                raise CollectiveError(
                    f"rank {w['rank']} called {pos[0]} at step {pos[1]} (collective "
                    f"#{pos[2]}) but rank {self.rank} is in a shared-memory collective at "
                    f"step {self.step} (collective #{self._seq}); every rank must make the "
                    "same calls")

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


def _node_key() -> str:
    """Which machine (and /dev/shm) this process is on: Ray's node id, host and boot."""
    parts = [socket.gethostname()]
    try:
        if ray.is_initialized():
            parts.append(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - the host name alone will do
        pass
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    except OSError:
        pass
    return "/".join(parts)


def _job_id() -> str:
    try:
        if ray.is_initialized():
            return ray.get_runtime_context().get_job_id()
    except Exception:  # noqa: BLE001 - only salt for the segment name
        pass
    return str(os.getpid())
