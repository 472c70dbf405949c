"""CoordinatorCommunicator: the Communicator protocol on top of the coordinator actor.

The coordinator is the control plane: rendezvous, step and sequence checks, heartbeats
and abort. The data path depends on where the ranks are:

* Every rank on one node (the usual case): shared memory, for every all-reduce,
  broadcast, reduce-scatter and all-gather of chunks (workers/comm/shm.py: the segment,
  and ShmPath, which agrees on it with the peers through the coordinator on the first
  one). From then on the ranks synchronise through counters in the segment
  (microseconds, not an actor round trip of a millisecond or more). Rank r sums slice r
  of every rank's buffer in rank order; in a reduce-scatter that slice is its own chunk
  and nothing else is summed or copied back, and an all-gather moves only the chunks.
  While waiting, a rank watches its peers' processes, the deadline and (every half
  second) the coordinator's abort flag. `bucket_buffers` hands DDP memory in a pinned
  area of that segment for its gradient buckets, so backward writes each gradient where
  the all-reduce reads it and nothing is copied in.
* Ranks on several nodes: small buffers (up to `inline_bytes`) go to the coordinator,
  which sums them in rank order (the star path, one round trip). Large ones never pass
  through it. Where some node holds more than one rank they take the hierarchical path
  (workers/comm/hier.py's NodePath, as the ring backend's hierarchical mode): the ranks
  of a node sum in shared memory, each node's lowest rank runs a TCP ring with the other
  nodes' leaders (authenticated with the job's `secret`), and hands the result back
  through shared memory; broadcasts go the same way from any root. It is set up once,
  on the first large buffer after shared memory turned out to be off because the ranks
  are spread (the same point on every rank, so its setup exchanges, through the
  coordinator, line up). With one rank per node (nothing to share), or without the
  job's secret, they take the object store: every rank `ray.put`s its buffer once and
  the coordinator only swaps ObjectRefs; rank r sums slice r of all buffers, read
  zero-copy in rank order, and the ranks swap the summed slices the same way.
* `shared_memory=False`: the star and object-store paths, wherever the ranks are.

Reduce-scatter and all-gather of chunks (the sharded optimizer's) off shared memory:
small buffers take the base class's exact fallbacks (an all-reduce each, on the star
path); large ones take the hierarchical path's own (one phase of the leaders' ring each,
whatever the placement: hier.py), or the object store's, which are the two halves of its
split all-reduce (rank r sums chunk r of every rank's buffer; the ranks swap their
chunks), so each moves half an all-reduce's bytes.

The star, shared-memory and object-store paths add each element as ((b0 + b1) + b2) +
..., so their bits are the star sum's. The hierarchical path adds in another fixed
order (each node's sum in local rank order, then the leaders' ring's chunk order): the
same bits on every rank and every run, different from rank order only in rounding.

Failures on the hierarchical path: the rank whose part failed breaks every part (its
node's group is marked failed, the leaders' ring gets an abort frame and closes) and
aborts the coordinator, so ranks waiting in shared memory, on the ring or on the
coordinator all fail with the first cause; a SIGKILLed rank is seen by its node
(pidfd) or its ring neighbours (connection reset), leader or not, within the timeout.
`path` and `paths_taken` say which path a communicator's collectives took.
"""

from __future__ import annotations

import collections
import threading

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

from disttrain.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
)
from disttrain.workers.comm.base import (
    Call,
    CommunicatorBase,
    check_same_call,
    chunk_bounds,
    sum_in_rank_order,
)
from disttrain.workers.comm.hier import NodePath, plain_error
from disttrain.workers.comm.shm import ShmPath, carve
from disttrain.workers.coordinator import start_heartbeats

# Below this the star all-reduce (arrays in the call, one round trip) beats ray.put.
INLINE_BYTES = 256 * 1024
# The coordinator reports a timeout itself; give its answer this long to arrive.
GRACE_S = 10.0


class CoordinatorCommunicator(CommunicatorBase):
    """A Communicator whose collectives go through the job's coordinator actor."""

    noun = "coordinator communicator"

    def __init__(self, coordinator, rank: int, world_size: int,
                 timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_interval_s: float | None = 1.0,
                 inline_bytes: int = INLINE_BYTES, shared_memory: bool = True,
                 shm_min_bytes: int = 0, secret: bytes | str | None = None):
        """`shared_memory=False` (the same on every rank) keeps the star and object-store
        paths wherever the ranks are; buffers under `shm_min_bytes` take the star path
        anyway. `secret`, the job's, lets ranks on several nodes take the hierarchical
        path (its leaders' ring authenticates with it); without it they take the object
        store. `heartbeat_interval_s=None`: the caller heartbeats for this rank (a
        RankActor does, for every backend)."""
        super().__init__(rank, world_size, timeout_s)
        self.inline_bytes = inline_bytes
        self._coord = coordinator
        self._secret = secret
        self._shm = ShmPath(rank, world_size, coordinator, self._exchange,
                            enabled=shared_memory, min_bytes=shm_min_bytes)
        self._node_path: NodePath | None = None
        self._hier_state = None if (secret and shared_memory) else "off"
        self.paths_taken: collections.Counter = collections.Counter()  # by path name
        self._stop = threading.Event()
        if world_size > 1 and heartbeat_interval_s is not None:
            start_heartbeats(coordinator, rank, heartbeat_interval_s, self._stop)

    @property
    def shm_names(self) -> list:
        """Every shared-memory segment this rank created or mapped (diagnostics)."""
        return self._shm.names

    @property
    def _shm_state(self) -> str | None:
        return self._shm.state

    @property
    def path(self) -> str | None:
        """Where buffers above `inline_bytes` go: "shm", "hier" (shared memory per node and
        a ring of node leaders), "object store", or None until the first one decided it."""
        if self._shm.state == "on":
            return "shm"
        if self._hier_state == "hier":
            return "hier"
        if self._shm.state == "off" and (self._hier_state == "off" or not self._shm.spread):
            return "object store"
        return None

    def bucket_buffers(self, sizes: list) -> list | None:
        """Zeroed flat buffers, one per (numel, dtype), cut from this rank's part of a
        pinned shared-memory area, so a collective on one of them copies nothing in (see
        disttrain/distributed/comm.py); None, on every rank, off shared memory."""
        if self.world_size == 1 or not self._shm.ready("bucket buffers", self.timeout_s):
            return None
        return carve(sizes, lambda nbytes: self._shm.pin(
            nbytes, step=self.step, seq=self._next_seq("bucket buffers"),
            timeout_s=self.timeout_s))

    # --- the collectives --------------------------------------------------------------

    def _allreduce(self, flat: np.ndarray) -> None:
        if self._shm.takes(flat, "allreduce_", self.timeout_s) and self._shm.allreduce_(
                flat, step=self.step, seq=self._next_seq("allreduce"),
                timeout_s=self.timeout_s):
            self.paths_taken["shm"] += 1
        elif flat.nbytes <= self.inline_bytes:  # the coordinator checks sizes and sums
            np.copyto(flat, self._request("allreduce", self._coord.allreduce, flat))
            self.paths_taken["star"] += 1
        elif self._hierarchical():
            self._across_nodes("allreduce", lambda seq: self._node_path.allreduce_(
                flat, self.step, seq))
        else:
            self._allreduce_split(flat)
            self.paths_taken["object store"] += 1

    def _broadcast(self, flat: np.ndarray, root: int) -> None:
        if self._shm.takes(flat, "broadcast_", self.timeout_s) and self._shm.broadcast_(
                flat, root, step=self.step, seq=self._next_seq("broadcast"),
                timeout_s=self.timeout_s):
            self.paths_taken["shm"] += 1
            return
        if flat.nbytes > self.inline_bytes and self._hierarchical():
            self._across_nodes("broadcast", lambda seq: self._node_path.broadcast_(
                flat, root, self.step, seq))
            return
        self.paths_taken["star" if flat.nbytes <= self.inline_bytes else "object store"] += 1
        payload = None
        if self.rank == root:
            payload = flat if flat.nbytes <= self.inline_bytes else [ray.put(flat)]
        value = self._request("broadcast", self._coord.broadcast, payload, root)
        if self.rank != root:
            arr = value if isinstance(value, np.ndarray) else self._fetch([value], [root])[0]
            self._check_arrived(root, "broadcast", arr, flat)
            np.copyto(flat, arr)

    def _reduce_scatter(self, flat: np.ndarray) -> None:
        self._in_chunks(flat, "reduce_scatter", "reduce_scatter_", super()._reduce_scatter,
                        self._sum_own_chunk)

    def _allgather_chunks(self, flat: np.ndarray) -> None:
        self._in_chunks(flat, "allgather_", "allgather_", super()._allgather_chunks,
                        self._swap_chunks)

    def _in_chunks(self, flat: np.ndarray, kind: str, op: str, fallback, through_store) -> None:
        """A collective of chunks (`op` of ShmPath and NodePath) on the first path that takes
        it: shared memory; the base class's all-reduce fallback (star) for small buffers;
        the hierarchical path; else its half of the object store's split all-reduce."""
        if self._shm.takes(flat, op, self.timeout_s) and getattr(self._shm, op)(
                flat, step=self.step, seq=self._next_seq(kind), timeout_s=self.timeout_s):
            self.paths_taken["shm"] += 1
        elif flat.nbytes <= self.inline_bytes:
            fallback(flat)
        elif self._hierarchical():
            self._across_nodes(kind, lambda seq: getattr(self._node_path, op)(
                flat, self.step, seq))
        else:
            through_store(flat, kind)
            self.paths_taken["object store"] += 1

    def _allgather(self, blob: bytes) -> list:
        return self._exchange("allgather", blob)

    def _barrier(self) -> None:
        self._request("barrier", self._coord.barrier)

    def _release(self) -> None:
        """Stop heartbeating and tell the coordinator this rank left cleanly."""
        self._stop.set()
        if self._node_path is not None:
            self._node_path.close()
        self._shm.close()
        if self.world_size > 1:
            try:
                self._coord.leave.remote(self.rank)
            except Exception:  # the coordinator may already be gone at shutdown
                pass

    @property
    def leaders_bytes_sent(self) -> int:
        """Bytes this rank sent on the hierarchical path's leaders' ring so far (0 off that
        path, or for a rank that leads no node): what a collective costs on the network."""
        return 0 if self._node_path is None else self._node_path.leaders_bytes_sent

    # --- across nodes: shared memory per node, a ring of node leaders ----------------

    def _hierarchical(self) -> bool:
        """Whether a buffer above inline_bytes goes through NodePath: once shared memory is
        off because the ranks are on several nodes, the first such buffer (the same point
        on every rank) sets it up, and its mode decides for good."""
        if self._hier_state is None and self._shm.state == "off" and self._shm.spread:
            try:
                path = NodePath(self.rank, self.world_size,
                                lambda obj: self._exchange("hierarchical setup", obj),
                                self._secret, self.timeout_s, hierarchical="auto",
                                on_wait=self._watch_abort)
            except CollectiveError as e:
                self._fail_across_nodes(plain_error(e))
            except BaseException as e:
                self._fail_across_nodes(CollectiveError(f"{type(e).__name__}: {e}"), e)
            if path.mode == "hier":
                self._node_path, self._hier_state = path, "hier"
            else:  # one rank per node: nothing to share, the object store it is
                path.close()
                self._hier_state = "off"
        return self._hier_state == "hier"

    def _watch_abort(self, waited_s: float, pending: list) -> None:
        """While NodePath waits in shared memory: end the wait if the job was aborted.
        (Its local ranks are not the job's, so only the abort flag is read here.)"""
        self._shm.poll_status(waited_s, Call(self.rank, self.step, self._seq,
                                             "a collective across nodes"))

    def _across_nodes(self, kind: str, run) -> None:
        """run(seq), one NodePath collective; a failure breaks every part and the job."""
        seq = self._next_seq(kind)
        try:
            run(seq)
        except CollectiveError as e:
            self._fail_across_nodes(plain_error(e))
        except BaseException as e:
            self._fail_across_nodes(CollectiveError(f"{type(e).__name__}: {e}"), e)
        self.paths_taken["hier"] += 1

    def _fail_across_nodes(self, error: CollectiveError, cause: BaseException | None = None):
        """Wake every rank: those in shared memory on this node (the group fails), the other
        nodes (the leaders' ring gets an abort frame and closes), and those waiting on the
        coordinator (it aborts the job, as a missed heartbeat would); then raise."""
        reason = str(error)
        self._broken = self._broken or reason
        if self._node_path is not None:
            self._node_path.break_(reason, type(error).__name__)
        try:
            self._coord.abort.remote(f"rank {self.rank} failed across nodes: {reason}")
        except Exception:  # noqa: BLE001 - the coordinator may be gone: nothing to wake
            pass
        if cause is not None:
            raise cause
        raise error from None

    # --- the split all-reduce: a reduce-scatter, then an all-gather, through the store ---

    def _allreduce_split(self, flat: np.ndarray) -> None:
        self._sum_own_chunk(flat, "allreduce")
        self._swap_chunks(flat, "allreduce-parts")

    def _sum_own_chunk(self, flat: np.ndarray, kind: str) -> None:
        """Every rank `ray.put`s its buffer; rank r sums chunk r of all of them, read
        zero-copy, in rank order, into its own: the reduce-scatter, and the all-reduce's
        first half. A peer's buffer of another size or dtype is refused before it is read."""
        mine = ray.put(flat)
        rows = self._exchange(kind, [mine, flat.nbytes, flat.dtype.char])
        self._check_rows(kind, rows, flat.nbytes, flat.dtype.char)
        lo, hi = chunk_bounds(flat.size, self.world_size)[self.rank]
        arrays = self._fetch([row[:1] for row in rows], range(self.world_size))
        sum_in_rank_order([a[lo:hi] for a in arrays], out=flat[lo:hi])
        del arrays  # unpin the peers' buffers before the next round

    def _swap_chunks(self, flat: np.ndarray, kind: str) -> None:
        """Every rank `ray.put`s its own chunk and copies the others' into place: the
        all-gather of chunks, and the all-reduce's second half."""
        bounds = chunk_bounds(flat.size, self.world_size)
        lo, hi = bounds[self.rank]
        part = ray.put(flat[lo:hi])
        rows = self._exchange(kind, [part, flat.nbytes, flat.dtype.char])
        self._check_rows(kind, rows, flat.nbytes, flat.dtype.char)
        others = [r for r in range(self.world_size) if r != self.rank]
        for r, arr in zip(others, self._fetch([rows[r][:1] for r in others], others)):
            plo, phi = bounds[r]
            np.copyto(flat[plo:phi], arr)

    def _check_rows(self, kind: str, rows: list, nbytes: int, dtype: str) -> None:
        """Each rank's [ref, nbytes, dtype] names the buffer it passed: the same as ours."""
        mine = self._my_call(kind, nbytes=nbytes, dtype=dtype)
        for r, (_, their_nbytes, their_dtype) in enumerate(rows):
            check_same_call(Call(r, self.step, self._seq, kind, their_nbytes, their_dtype), mine)

    # --- plumbing ---------------------------------------------------------------------

    def _request(self, what: str, method, *args):
        """One collective call to the coordinator, its errors turned into CollectiveErrors."""
        seq = self._next_seq(what)
        ref = method.remote(self.rank, self.step, seq, *args, timeout_s=self.timeout_s)
        return self._get(ref, what)

    def _exchange(self, kind: str, payload) -> list:
        """Every rank's payload, in rank order (ObjectRefs must sit inside a list)."""
        seq = self._next_seq(kind)
        ref = self._coord.exchange.remote(self.rank, kind, self.step, seq, payload,
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

    def _check_arrived(self, rank: int, kind: str, arr: np.ndarray, flat: np.ndarray) -> None:
        """Rank `rank`'s buffer, seen only once it arrived, must be the size of ours."""
        theirs = Call(rank, self.step, self._seq, kind, arr.nbytes, arr.dtype.char)
        check_same_call(theirs, self._my_call(kind, nbytes=flat.nbytes, dtype=flat.dtype.char))
