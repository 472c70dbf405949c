"""ShmGroup: the shared-memory data plane for ranks of one job on one node; ShmPath: how
a coordinator communicator's ranks agree on one.

The coordinator actor stays the control plane (rendezvous, ranks, heartbeats, abort);
the ranks' buffers move through two POSIX shared-memory segments they all map:

    control  one 128-byte row per rank: a barrier counter, then the rank's position
             (its Call: step, seq, kind, nbytes, dtype, root), a failed flag, pid and pid
             namespace; then a 512-byte reason text per rank. Fixed size.
    data     W input slots and one result area, `capacity` bytes each. Replaced by a
             bigger one (a new generation, made by rank 0) when a buffer does not fit.
    pinned   made by `pin` (DDP asks for one through the communicator's bucket_buffers):
             the same W parts and a result area, never replaced, each rank's part handed
             out as memory for its buffers. A buffer lying in this rank's part, at the
             same offset on every rank (its header says where), *is* the rank's slot:
             the collective reads it where backward wrote it and copies nothing in. If
             any rank's buffer is elsewhere, every rank takes the data segment instead
             (the pinned ones copying in after the first barrier), so a mix is only slower.

All-reduce: every rank writes its header and copies the first block of its buffer into
its slot (all but its own share of the block, which it reads from its own buffer), then
reaches the first barrier. There every rank checks the headers (same seq, step, kind,
size and dtype, else a StepMismatch / CollectiveError naming both ranks). Then, block
by block (BLOCK_BYTES, so a block stays in cache from one rank's copy to another's
read): after barrier k every rank sums its share of block k from all slots, in rank
order, into the result area, copies block k-1 of the result out and block k+1 in, and
reaches barrier k+1; after the last it copies the last block out. Each element is
((b0 + b1) + b2) + ..., as in the coordinator's star sum: the same bits, whatever the
order in which ranks arrive. Slot regions are written only before the barrier that
precedes their sum and result regions read only after the barrier that follows it;
what the next collective writes before its first barrier is its own slot: so 1 + the
number of blocks barriers suffice.

Reduce-scatter (the sharded optimizer's, chunks as `chunk_bounds`): every rank writes its
header and copies its buffer into its slot, and reaches the first barrier (headers
checked as above); then each rank sums exactly its own chunk from all slots, in rank
order, straight into its own buffer (the same ((b0 + b1) + b2) + ... per element, so
the bits of the all-reduce's), and reaches a second barrier, after which no rank reads
a peer's slot: nothing of the other chunks is summed or copied out. All-gather: each
rank copies only its own chunk into the same place of its slot, first barrier, every
rank copies the peers' chunks out of their slots, second barrier. Broadcast: the root
copies its buffer into its slot, first barrier, the others copy it out, second barrier.
Scatter and gather (the hierarchical reduce-scatter's and all-gather's, on a node): a
broadcast in which each rank copies only its own chunk out, and an all-gather whose
chunks only the root copies out. In these, as in the all-reduce, a rank writes nothing
but its own slot before the first barrier and reads peers' slots only between the first
and the last, so the next collective's writes never meet this one's reads. A buffer
that does not fit grows the segment after the header check, before anything is read,
in every collective alike.

Waiting: poll the peers' counters in a short spin, then os.sched_yield(), then sleeps
growing to 0.5 ms. While waiting the rank checks, every few milliseconds, whether a
peer's process is gone (pidfd, or /proc), the peers' failed flags (a rank that fails
writes its error so the others fail with it), the collective's deadline, and an
optional `on_wait` callback (the communicator uses it to poll the coordinator's abort
flag). A dead peer yields a PeerLost naming it, a missing one a CollectiveTimeout
naming it; never a hang.

In place (every buffer pinned) the schedules are the same without the copies in, but
for the all-reduce, which has nothing to pipeline: it is the reduce-scatter, a barrier
and the all-gather, each rank's chunk summed in its own buffer and read from there by
the others (three barriers, not one per block; the same sums in rank order, the same
bits). What the rank writes after returning (its next backward) lands in its own slot
only after the last barrier, when no peer reads it any more. The reduce-scatter sums this
rank's chunk from every slot into that chunk of its own slot; rank 0 or 1 may do so
directly (numpy's add reads both operands of an element before writing it), a higher
rank's own part would be overwritten before it is added, so it sums into the result area
and copies back.

Memory ordering: in every collective a rank writes its data and header with numpy, then
stores its counter (one aligned 8-byte store); a reader loads the counter first, then the
header and data. That is correct under x86-64's total store order (stores are not
reordered with older stores, loads not with older loads) and the numpy calls are opaque
to the compiler. The second barrier of the reduce-scatter, all-gather and broadcast is
the same publication the other way round: a rank's loads from a peer's slot come before
its counter store (x86 does not reorder a store with older loads), and the peer
overwrites its slot only after loading that counter.
Weaker architectures (arm64) would need fences Python cannot issue, so `supported()`
is False there and the communicator keeps its star and object-store paths.

Names and lifetime: segment names are "dt" + 24 hex digits (96 bits) hashed from the
job id and fresh random bytes, + "c" or "d<generation>"; they are created mode 0600 and
unlinked by their creator (rank 0) as soon as every rank has mapped them (or at once if
the collective fails), so nothing is left in /dev/shm even if a process is SIGKILLed
later, and nobody can attach afterwards. Should rank 0 die in the few milliseconds
between creating a segment and everyone mapping it, its resource tracker unlinks it.

Negotiation (ShmPath, for the coordinator communicator in star.py): on the first
all-reduce or broadcast, which every rank makes at the same point, rank 0 creates a
group whose name holds a fresh secret; the ranks exchange (node, supported, token)
through the coordinator, attach if all are on rank 0's node, exchange whether that
worked, and all join, or all close: two coordinator round trips, once per
communicator, and every rank reaches the same decision. Off, the communicator keeps its
star and object-store paths, except where the ranks turned out to be on several nodes
(`spread`): then, given the job's secret, it sets up the hierarchical path on its first
large buffer (star.py; workers/comm/hier.py's NodePath: a ShmGroup per node of this
module, a ring of node leaders) and takes it if some node holds more than one rank.
While a shared-memory collective of ShmPath waits, it polls the coordinator (without
blocking) for an abort, or for a pending rank that went into another collective at this
sequence number or later: that rank will never arrive here.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import mmap
import os
import platform
import select
import socket
import sys
import time
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.shared_memory import _posixshmem  # type: ignore[attr-defined]

import numpy as np

from disttrain.distributed.comm import (
    CollectiveAborted,
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
    StepMismatch,
)
from disttrain.workers.comm.base import (
    ROW_FIELDS,
    Breakable,
    Call,
    check_rank,
    check_same_call,
    chunk_bounds,
    sum_in_rank_order,
    timeout_text,
)

MAGIC = 0x314D5354_44  # "DTSM1"
ROW = 16  # int64 fields per row (128 bytes: no two ranks' counters share a cache line)
REASON_BYTES = 512
CAPACITY_QUANTUM = 1 << 20  # data slots grow in whole MiB
BLOCK_BYTES = 2 << 20  # all-reduce pipeline block: stays in cache, amortises a barrier
# group header row
_G_MAGIC, _G_WORLD, _G_GROWN, _G_PINNED = 0, 1, 2, 3
# rank rows
_COUNTER, _CALL = 0, 1  # then the rank's Call.to_row(), ROW_FIELDS wide
_FAILED, _PID, _PIDNS = _CALL + ROW_FIELDS, _CALL + ROW_FIELDS + 1, _CALL + ROW_FIELDS + 2
_PIN_AREA, _PIN_OFFSET = _PIDNS + 1, _PIDNS + 2  # where the rank's buffer is pinned, if it is
PIN_ALIGN = 64  # buffers carved from a pinned area start on a cache line
# A failed rank's error class travels with its reason, so its peers raise the same kind.
_ERRORS = {c.__name__: c for c in (CollectiveAborted, CollectiveError, CollectiveTimeout,
                                   PeerLost, StepMismatch)}

SPINS = 200  # counter polls before yielding the core
YIELD_S = 0.001  # then sched_yield for this long (releases the GIL: DDP reduces in a thread)
MAX_SLEEP_S = 0.0005  # then sleeps growing to this
CHECK_EVERY_S = 0.005  # peer liveness, deadline and on_wait, this often while waiting


def supported() -> bool:
    """True where the shared-memory path is correct: Linux-like POSIX shm on x86-64."""
    return (os.name == "posix" and sys.platform != "darwin"
            and platform.machine().lower() in ("x86_64", "amd64"))


def new_token(job_id: str = "") -> str:
    """A fresh, unguessable segment-name stem for one group of the job `job_id`."""
    return hashlib.blake2b(job_id.encode() + os.urandom(32), digest_size=12).hexdigest()


def segment_name(token: str, part: str) -> str:
    """The POSIX shm name of one segment (short enough for macOS's 31 characters)."""
    return f"dt{token}{part}"


def _open(name: str, size: int = 0, create: bool = False):
    """Create (rank 0) or map an existing segment."""
    if create:
        # Registered with this process's resource tracker, which unlinks it should the
        # process die before every rank has mapped it (and unlinked it itself).
        return shared_memory.SharedMemory(name=name, create=True, size=size)
    return _Mapped(name)


PIN_SHARE = 0.25  # a pinned area may take at most this share of /dev/shm's free space


def _room_for(size: int) -> bool:
    """Whether a pinned area of `size` bytes leaves /dev/shm room for everyone else: it
    holds its pages for the job's life, on top of the data segment."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return True  # shm_open lives elsewhere here; creating it will tell
    return size <= PIN_SHARE * st.f_bavail * st.f_frsize


def _segment(name: str, size: int, create: bool) -> mmap.mmap:
    """A data or pinned segment, created (rank 0) or mapped. Never closed here: the numpy
    arrays made from the mmap keep it mapped, and it is unmapped when they are gone (a
    pinned area's buffers may outlive the group)."""
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
    try:
        if create:
            # As SharedMemory does: unlinked by the tracker should we die before the peers
            # have mapped it (ShmGroup._unlink unregisters it once they have).
            resource_tracker.register("/" + name, "shared_memory")
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)  # an over-full tmpfs fails here, not later
        elif os.fstat(fd).st_size < size:
            raise CollectiveError(f"shared-memory segment {name} is smaller than agreed")
        return mmap.mmap(fd, size)
    except OSError:
        if create:
            _unlink_name(name)
        raise
    finally:
        os.close(fd)


class _Mapped:
    """A segment another rank created, mapped without the resource tracker: Python <
    3.13 would register it and unlink or warn about it when this process exits."""

    def __init__(self, name: str):
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            self.size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        self.buf.release()
        self._mmap.close()


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class ShmGroup(Breakable):
    """One rank's view of a node-local group; rank 0 creates the segments.

    Every rank constructs one (rank 0 with create=True first, so it can hand `token` to
    the others), then all call `join`. Collectives are then called on every rank in the
    same order, as with any communicator.
    """

    noun = "shared-memory group"

    def __init__(self, rank: int, world_size: int, token: str, *, create: bool,
                 block_bytes: int = BLOCK_BYTES):
        check_rank(rank, world_size)
        if create != (rank == 0):
            raise ValueError("rank 0 creates the segments; the other ranks attach")
        self.rank = rank
        self.world_size = world_size
        self.token = token
        self.block_bytes = block_bytes
        self.names: list[str] = []  # every segment this group ever used (for tests)
        self._row = rank + 1
        self._count = 0  # barriers this rank has arrived at
        self._gen = 0
        self._capacity = 0
        self.too_big = sys.maxsize  # smallest size the node's shared memory could not hold
        self._slots: np.ndarray | None = None  # (world_size + 1, capacity) uint8
        self._pins: list = []  # pinned areas, each (world_size + 1, capacity) uint8
        self.in_place = 0  # collectives that found every rank's buffer pinned (for tests)
        self._pidfds: dict = {}
        self._pids: dict = {}
        self._deadline = 0.0
        self._call = Call(rank, 0, 0, "join")  # the collective in progress
        self._on_wait = None
        self._started = 0.0
        size = (world_size + 1) * ROW * 8 + world_size * REASON_BYTES
        name = segment_name(token, "c")
        self._ctl = _open(name, size, create=create)
        self.names.append(name)
        self._linked = [name] if create else []
        self._table = np.ndarray((world_size + 1, ROW), np.int64, self._ctl.buf)
        self._reasons = np.ndarray((world_size, REASON_BYTES), np.uint8, self._ctl.buf,
                                   offset=(world_size + 1) * ROW * 8)
        if create:
            self._table[0, _G_WORLD] = world_size
            self._table[0, _G_MAGIC] = MAGIC
        elif self._table[0, _G_MAGIC] != MAGIC or self._table[0, _G_WORLD] != world_size:
            self.close()
            raise CollectiveError(f"shared-memory segment {name} is not this job's group")

    # --- setup ------------------------------------------------------------------------

    def join(self, timeout_s: float) -> None:
        """Wait until every rank has mapped the group; then its name is unlinked."""
        self._begin("join", 0, 0, timeout_s, None)
        self._table[self._row, _PID] = os.getpid()
        self._table[self._row, _PIDNS] = _pid_namespace()
        self._guarded(self._barrier)
        mine = _pid_namespace()
        for p in self._peers():
            pid, ns = int(self._table[p + 1, _PID]), int(self._table[p + 1, _PIDNS])
            if mine and ns == mine:  # pids mean something only in the same namespace
                self._pids[p] = pid
                with contextlib.suppress(OSError, AttributeError):
                    self._pidfds[p] = os.pidfd_open(pid)
        self._unlink()

    def pin(self, nbytes: int, *, step: int, seq: int, timeout_s: float,
            on_wait=None) -> np.ndarray | None:
        """Memory the group's collectives read where it is: this rank's part (uint8,
        zeroed) of a new pinned area, or None on every rank if the node's shared memory
        cannot hold one.

        Collective. Rank 0 creates a segment of world_size + 1 parts of `nbytes` (whole
        MiB): every rank's own, then a result area. A buffer lying wholly inside a rank's
        part, at the same offset on every rank, is that rank's slot in every collective,
        so nothing is copied in (DDP's gradient buckets, which backward fills in place).
        The mapping lives as long as an array made from it, not as long as the group: a
        buffer may outlive its communicator (a job that recovers in memory keeps its
        model), and then simply takes the copying path of the next group.
        """
        self._begin("bucket_buffers", step, seq, timeout_s, on_wait)
        return self._guarded(self._pin_area, nbytes, step, seq)

    def _pin_area(self, nbytes: int, step: int, seq: int) -> np.ndarray | None:
        self._call = Call(self.rank, step, seq, "bucket_buffers", nbytes, "B")
        self._table[self._row, _CALL:_CALL + ROW_FIELDS] = self._call.to_row()
        self._barrier()
        self._check_headers()
        capacity = max(1, -(-nbytes // CAPACITY_QUANTUM)) * CAPACITY_QUANTUM
        index = len(self._pins) + 1
        area = self._new_area(f"p{index}", _G_PINNED, index, capacity,
                              room=_room_for((self.world_size + 1) * capacity))
        if area is None:
            return None
        self._pins.append(area)
        return area[self.rank]

    # --- collectives ------------------------------------------------------------------

    def allreduce_(self, flat: np.ndarray, *, step: int, seq: int, timeout_s: float,
                   on_wait=None) -> bool:
        """Sum the 1-D `flat` over all ranks in place, in rank order.

        False (on every rank, `flat` untouched) if the node's shared memory cannot hold
        it; `too_big` then remembers the size, so callers can skip straight to their
        other path.
        """
        self._begin("allreduce", step, seq, timeout_s, on_wait)
        return self._guarded(self._allreduce, flat, step, seq)

    def broadcast_(self, flat: np.ndarray, root: int, *, step: int, seq: int,
                   timeout_s: float, on_wait=None) -> bool:
        """Overwrite the 1-D `flat` on every rank with root's; False as in allreduce_."""
        self._begin("broadcast", step, seq, timeout_s, on_wait)
        return self._guarded(self._broadcast, flat, root, step, seq)

    def reduce_scatter_(self, flat: np.ndarray, *, step: int, seq: int, timeout_s: float,
                        on_wait=None) -> bool:
        """Sum the 1-D `flat` over all ranks into this rank's chunk of it (chunk_bounds), in
        rank order, in place; the other chunks keep this rank's values. False as in
        allreduce_."""
        self._begin("reduce_scatter", step, seq, timeout_s, on_wait)
        return self._guarded(self._reduce_scatter, flat, step, seq)

    def allgather_(self, flat: np.ndarray, *, step: int, seq: int, timeout_s: float,
                   on_wait=None) -> bool:
        """Fill every rank's chunk of the 1-D `flat` (chunk_bounds) from its owner, in place;
        False as in allreduce_."""
        self._begin("allgather_", step, seq, timeout_s, on_wait)
        return self._guarded(self._allgather_chunks, flat, step, seq)

    def scatter_(self, flat: np.ndarray, root: int, *, step: int, seq: int, timeout_s: float,
                 on_wait=None) -> bool:
        """Overwrite this rank's chunk of the 1-D `flat` (chunk_bounds) with root's; the other
        chunks keep this rank's values. A broadcast in which each rank copies only its
        chunk. False as in allreduce_."""
        self._begin("scatter", step, seq, timeout_s, on_wait)
        return self._guarded(self._broadcast, flat, root, step, seq, "scatter")

    def gather_(self, flat: np.ndarray, root: int, *, step: int, seq: int, timeout_s: float,
                on_wait=None) -> bool:
        """Fill root's `flat` with every rank's chunk of it (chunk_bounds); the others'
        buffers are only read. An all-gather whose result only root copies out. False as
        in allreduce_."""
        self._begin("gather", step, seq, timeout_s, on_wait)
        return self._guarded(self._gather, flat, root, step, seq)

    def _allreduce(self, flat, step, seq) -> bool:
        # Pipelined in blocks that stay in cache between the copy in, the peer's sum and
        # the copy out: after barrier k every rank has copied block k in and summed its
        # share of block k-1, so it sums block k, copies block k-1 out and block k+1 in.
        blocks = self._blocks(flat)
        slots, in_place = self._publish("allreduce", step, seq, flat,
                                        lambda f: self._reduce_in(f, blocks[0]))
        if slots is None:
            return False
        if in_place:
            # Every buffer is its own slot: nothing to copy in, so no pipeline to keep in
            # cache. Each rank sums its chunk into its own buffer (the reduce-scatter) and
            # copies the others' chunks from theirs (the all-gather): three barriers, not
            # one per block, and no result area to copy out of (7.4 MB on 2 ranks: 0.8 ms
            # against the pipeline's 1.9-2.8). The same sums in rank order: the same bits.
            self._sum_own_chunk(flat, slots, in_place)
            self._barrier()  # every chunk is summed where its owner's buffer is
            self._copy_peers_chunks(flat, slots)
            self._barrier()  # every peer is done reading this rank's chunk
            return True
        result = slots[self.world_size]
        for k, (a, b) in enumerate(blocks):
            lo, hi = self._share(a, b)
            parts = [flat[lo:hi] if p == self.rank else s[lo:hi]
                     for p, s in enumerate(slots[:self.world_size])]
            sum_in_rank_order(parts, out=result[lo:hi])
            if k:
                np.copyto(flat[blocks[k - 1][0]:a], result[blocks[k - 1][0]:a])
            if k + 1 < len(blocks) and not in_place:
                self._reduce_in(flat, blocks[k + 1])
            self._barrier()
        a, b = blocks[-1]
        np.copyto(flat[a:b], result[a:b])
        return True

    def _blocks(self, flat) -> list:
        step = max(1, self.block_bytes // flat.itemsize)
        return [(a, min(a + step, flat.size)) for a in range(0, flat.size, step)] or [(0, 0)]

    def _share(self, a: int, b: int) -> tuple:
        """This rank's part of block [a, b): the one it sums."""
        lo, hi = chunk_bounds(b - a, self.world_size)[self.rank]
        return a + lo, a + hi

    def _reduce_in(self, flat, block) -> None:
        """Copy block of flat into this rank's slot, except its own share (read in place)."""
        a, b = block
        lo, hi = self._share(a, b)
        slot = self._slot(self.rank, flat)
        if lo > a:
            np.copyto(slot[a:lo], flat[a:lo])
        if hi < b:
            np.copyto(slot[hi:b], flat[hi:b])

    def _reduce_scatter(self, flat, step, seq) -> bool:
        # Two barriers, not pipelined: a pipeline like the all-reduce's (band k of every
        # chunk in, then each rank sums band k of its own) measured no faster at 16 MB on
        # 2 ranks (10 vs 8-9 ms) and 12% faster at 64 MB, for 1 + size/BLOCK_BYTES
        # barriers, which are what a loaded machine makes slow.
        slots, in_place = self._publish("reduce_scatter", step, seq, flat, self._slot_in)
        if slots is None:
            return False
        self._sum_own_chunk(flat, slots, in_place)
        self._barrier()  # every peer is done reading this rank's slot
        return True

    def _sum_own_chunk(self, flat, slots, in_place: bool) -> None:
        """This rank's chunk of every slot, summed in rank order, into its chunk of flat."""
        lo, hi = self._chunk(flat)
        parts = [s[lo:hi] for s in slots[:self.world_size]]
        if in_place and self.rank >= 2:
            # flat is this rank's slot: summing into it would overwrite its part before
            # adding it (ranks 0 and 1 are safe: the first add reads both operands first).
            sum_in_rank_order(parts, out=slots[self.world_size][lo:hi])
            np.copyto(flat[lo:hi], slots[self.world_size][lo:hi])
        else:
            sum_in_rank_order(parts, out=flat[lo:hi])

    def _allgather_chunks(self, flat, step, seq) -> bool:
        slots, _ = self._publish("allgather_", step, seq, flat, self._chunk_in)
        if slots is None:
            return False
        self._copy_peers_chunks(flat, slots)
        self._barrier()  # every peer is done reading this rank's slot
        return True

    def _copy_peers_chunks(self, flat, slots) -> None:
        """Every other rank's chunk of flat from the same place of its slot."""
        for p in self._peers():
            lo, hi = chunk_bounds(flat.size, self.world_size)[p]
            np.copyto(flat[lo:hi], slots[p][lo:hi])

    def _gather(self, flat, root, step, seq) -> bool:
        write = _nothing if self.rank == root else self._chunk_in
        slots, _ = self._publish("gather", step, seq, flat, write, root)
        if slots is None:
            return False
        if self.rank == root:
            for p in self._peers():
                lo, hi = chunk_bounds(flat.size, self.world_size)[p]
                np.copyto(flat[lo:hi], slots[p][lo:hi])
        self._barrier()  # root is done reading its peers' slots
        return True

    def _publish(self, kind, step, seq, flat, write, root=-1) -> tuple:
        """Announce, write(flat) into this rank's slot, and meet at the first barrier
        (checked headers); then every rank's slot holds what it wrote. (slots, in_place):
        the slots to read, every rank's then the result area's, in the pinned area when
        every rank's buffer is pinned at the same place (in_place: nothing was written,
        each buffer is its slot), else in the data segment, grown first if `flat` did not
        fit, with the ranks that had not written yet (all after growing, the pinned ones
        otherwise) writing before one more barrier. (None, False), on every rank, if no
        segment can hold `flat`."""
        fits, pin = self._announce(kind, step, seq, flat, root)
        if fits and not pin[0]:
            write(flat)
        self._barrier()
        self._check_headers()
        if pin[0] and all(tuple(self._table[p + 1, _PIN_AREA:_PIN_OFFSET + 1]) == pin
                          for p in self._peers()):
            self.in_place += 1
            area, offset = self._pins[pin[0] - 1], pin[1]
            return [area[p, offset:offset + flat.nbytes].view(flat.dtype)
                    for p in range(self.world_size + 1)], True
        if not fits or self._table[1:, _PIN_AREA].any():
            if not fits and not self._grow(flat.nbytes):
                return None, False
            if not fits or pin[0]:
                write(flat)
            self._barrier()
        return [self._slot(p, flat) for p in range(self.world_size + 1)], False

    def _chunk(self, flat) -> tuple:
        return chunk_bounds(flat.size, self.world_size)[self.rank]

    def _slot_in(self, flat) -> None:
        """All of flat into this rank's slot (its own chunk too: the sum goes into flat)."""
        np.copyto(self._slot(self.rank, flat), flat)

    def _chunk_in(self, flat) -> None:
        """This rank's chunk of flat into the same place of its slot."""
        lo, hi = self._chunk(flat)
        np.copyto(self._slot(self.rank, flat)[lo:hi], flat[lo:hi])

    def _broadcast(self, flat, root, step, seq, kind="broadcast") -> bool:
        """Root's buffer to every rank: all of it, or (kind "scatter") each rank's chunk."""
        write = self._slot_in if self.rank == root else _nothing
        slots, _ = self._publish(kind, step, seq, flat, write, root)
        if slots is None:
            return False
        if self.rank != root:
            lo, hi = self._chunk(flat) if kind == "scatter" else (0, flat.size)
            np.copyto(flat[lo:hi], slots[root][lo:hi])
        self._barrier()  # every peer is done reading root's slot
        return True

    # --- pieces -----------------------------------------------------------------------

    def _announce(self, kind, step, seq, flat, root) -> tuple:
        """Write this rank's header (its counter follows at the barrier): the call and
        where its buffer is pinned, if it is. (whether flat fits the data segment, the
        pinned place: _pin_of's)."""
        self._call = Call(self.rank, step, seq, kind, flat.nbytes, flat.dtype.char,
                          None if root < 0 else root)
        pin = self._pin_of(flat)
        self._table[self._row, _CALL:_CALL + ROW_FIELDS] = self._call.to_row()
        self._table[self._row, _PIN_AREA:_PIN_OFFSET + 1] = pin
        return flat.nbytes <= self._capacity, pin

    def _pin_of(self, flat: np.ndarray) -> tuple:
        """(area + 1, byte offset) of flat inside this rank's part of a pinned area, else
        (0, 0). flat is 1-D and contiguous (flat_view made it so)."""
        start = flat.__array_interface__["data"][0]
        for i, area in enumerate(self._pins):
            mine = area[self.rank]
            base = mine.__array_interface__["data"][0]
            if base <= start and start + flat.nbytes <= base + mine.size:
                return (i + 1, start - base)
        return (0, 0)

    def _slot(self, index: int, flat: np.ndarray) -> np.ndarray:
        return self._slots[index, : flat.nbytes].view(flat.dtype)

    def _check_headers(self) -> None:
        """After the first barrier: everyone is in the same call with the same buffer."""
        calls = [self._peer_call(p) for p in range(self.world_size)]
        for call in calls[1:]:  # everyone compares with the lowest rank: one message for all
            check_same_call(call, calls[0])

    def _peer_call(self, p: int) -> Call:
        return Call.from_row(p, self._table[p + 1, _CALL:_CALL + ROW_FIELDS])

    def _grow(self, nbytes: int) -> bool:
        """Every rank moves to a bigger data segment (rank 0 creates it; all map it).

        False, on every rank, if rank 0 could not get the memory (a small /dev/shm, as
        in a default Docker container): the caller then takes the object-store path.
        """
        capacity = -(-nbytes // CAPACITY_QUANTUM) * CAPACITY_QUANTUM
        gen = self._gen + 1
        area = self._new_area(f"d{gen}", _G_GROWN, gen, capacity)
        if area is None:
            self.too_big = min(self.too_big, nbytes)
            return False
        self._slots, self._gen, self._capacity = area, gen, capacity  # the old one unmaps
        return True

    def _new_area(self, part: str, field: int, index: int, capacity: int,
                  room: bool = True) -> np.ndarray | None:
        """A new segment of world_size + 1 parts of `capacity` bytes, as a (world_size + 1,
        capacity) uint8 array on every rank: rank 0 creates it (if `room`) and says in
        header field `field` whether it could (index, or -index); the others map it; its
        name is unlinked once every rank has. None, on every rank, if rank 0 could not."""
        name = segment_name(self.token, part)
        size = (self.world_size + 1) * capacity
        mapped = None
        if self.rank == 0:
            if room:
                with contextlib.suppress(OSError):
                    mapped = _segment(name, size, create=True)
                    self._linked.append(name)
            self._table[0, field] = index if mapped is not None else -index
        self._barrier()  # created (or not)
        if int(self._table[0, field]) != index:
            return None
        if mapped is None:
            mapped = _segment(name, size, create=False)
        self.names.append(name)
        area = np.ndarray((self.world_size + 1, capacity), np.uint8, mapped)
        self._barrier()  # mapped everywhere
        self._unlink()
        return area

    # --- synchronisation --------------------------------------------------------------

    def _peers(self) -> list:
        return [p for p in range(self.world_size) if p != self.rank]

    def _begin(self, what, step, seq, timeout_s, on_wait) -> None:
        self._check_usable(what)
        self._started = time.monotonic()
        self._deadline = self._started + timeout_s
        self._timeout_s = timeout_s
        self._call = Call(self.rank, step, seq, what)
        self._on_wait = on_wait

    def _guarded(self, fn, *args):
        try:
            return fn(*args)
        except BaseException as e:
            self._fail(f"{type(e).__name__}|{e}")
            raise

    def _barrier(self) -> None:
        self._count += 1
        self._table[self._row, _COUNTER] = self._count  # written last: publishes the rest
        self._wait_for(self._count)

    def _wait_for(self, target: int) -> None:
        t = self._table
        pending = [p for p in range(self.world_size) if t[p + 1, _COUNTER] < target]
        spins = 0
        sleep = 0.00002
        yield_until = next_check = 0.0
        while pending:
            spins += 1
            if spins > SPINS:
                now = time.monotonic()
                if not yield_until:
                    yield_until = now + YIELD_S
                    next_check = now + CHECK_EVERY_S
                if now < yield_until:
                    os.sched_yield()
                else:
                    time.sleep(sleep)
                    sleep = min(sleep * 2, MAX_SLEEP_S)
                if now >= next_check:
                    next_check = now + CHECK_EVERY_S
                    self._check_peers(pending, now)
            pending = [p for p in pending if t[p + 1, _COUNTER] < target]

    def _check_peers(self, pending: list, now: float) -> None:
        for p in pending:
            if self._peer_dead(p):
                raise PeerLost(f"rank {p} (pid {self._pids[p]}) died during {self._call.where()}; "
                               "it left the shared-memory group")
        for p in range(self.world_size):
            if p != self.rank and self._table[p + 1, _FAILED]:
                raw = bytes(self._reasons[p]).rstrip(b"\0").decode(errors="replace")
                kind, _, reason = raw.partition("|")
                error = _ERRORS.get(kind, CollectiveAborted)
                raise error(f"rank {p} failed in {self._call.where()}: {reason}")
        if now > self._deadline:
            last = [c for c in map(self._peer_call, pending) if c.kind != "?"]
            raise CollectiveTimeout(timeout_text(self._call, self._timeout_s, pending, last))
        if self._on_wait is not None:
            self._on_wait(now - self._started, pending)

    def _peer_dead(self, p: int) -> bool:
        fd = self._pidfds.get(p)
        if fd is not None:  # readable once the process has exited (zombie included)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        pid = self._pids.get(p)
        if pid is None:  # another pid namespace: the deadline and on_wait must do
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            return state in (b"Z", b"X")
        except FileNotFoundError:
            return True
        except (OSError, IndexError):
            return False

    def _fail(self, reason: str) -> None:
        """Mark this rank failed with `reason`, so waiting peers fail with it too."""
        self._broken = reason.partition("|")[2]
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._unlink()  # nobody may attach any more; leave nothing behind
        with contextlib.suppress(Exception):
            data = reason.encode()[: REASON_BYTES - 1]
            self._reasons[self.rank, :] = 0
            self._reasons[self.rank, : len(data)] = np.frombuffer(data, np.uint8)
            self._table[self._row, _FAILED] = 1

    def fail(self, reason: str, kind: str = "CollectiveAborted") -> None:
        """Mark this rank failed with `reason`, so the group's ranks waiting on it (or
        entering a collective later) raise `kind` with it; once only, never when closed."""
        if not self._closed and self._broken is None:
            self._fail(f"{kind}|{reason}")

    # --- teardown ---------------------------------------------------------------------

    def _unlink(self) -> None:
        while self._linked:
            name = self._linked.pop()
            with contextlib.suppress(FileNotFoundError):
                _unlink_name(name)

    def close(self) -> None:
        """Unmap the segments and unlink any name still linked; safe twice."""
        if self._closed:
            return
        self._closed = True
        for fd in self._pidfds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pidfds.clear()
        self._unlink()
        self._slots = None  # unmapped once no view of it is left
        self._pins = []  # the arrays made from them keep their mappings
        self._table = self._reasons = None
        with contextlib.suppress(BufferError):
            self._ctl.close()


def _nothing(flat) -> None:
    """What a rank that is not the root writes before a broadcast's first barrier."""


def _unlink_name(name: str) -> None:
    """shm_unlink `name` (created here) and drop it from this process's resource tracker."""
    try:
        _posixshmem.shm_unlink("/" + name)
    finally:
        with contextlib.suppress(Exception):
            resource_tracker.unregister("/" + name, "shared_memory")


# --- negotiation: the coordinator communicator's shared-memory path ---------------------

# While waiting on shared memory, ask the coordinator whether the job was aborted (or a
# peer went elsewhere) after this long, and then this often.
STATUS_AFTER_S = 0.25
STATUS_EVERY_S = 0.5


class ShmPath:
    """A coordinator communicator's shared-memory path, agreed with its peers on first use.

    `exchange(kind, payload)` is the communicator's: every rank's payload, in rank order,
    through the coordinator actor. `state` is None until decided, then "on" or "off".
    """

    def __init__(self, rank: int, world_size: int, coordinator, exchange, *,
                 enabled: bool = True, min_bytes: int = 0):
        self.rank = rank
        self.world_size = world_size
        self.min_bytes = min_bytes
        self.state = None if (enabled and world_size > 1) else "off"
        self.spread = False  # the ranks turned out to be on several nodes
        self.names: list = []  # every segment this rank created or mapped (diagnostics)
        self.taken: collections.Counter = collections.Counter()  # collectives done, by kind
        self._coord = coordinator
        self._exchange = exchange
        self._group: ShmGroup | None = None
        self._call = Call(rank, 0, 0, "")  # the shared-memory collective in progress
        self._status_ref = None
        self._status_due = 0.0

    def takes(self, flat: np.ndarray, op: str, timeout_s: float) -> bool:
        """Whether this collective goes through shared memory (set up on the first)."""
        if flat.nbytes < self.min_bytes:
            return False
        return self.ready(op, timeout_s) and flat.nbytes < self._group.too_big

    def ready(self, op: str, timeout_s: float) -> bool:
        """Whether the path is on, setting it up if this is its first use."""
        if self.state is None:
            self._setup(op, timeout_s)
        return self.state == "on"

    def pin(self, nbytes: int, *, step: int, seq: int, timeout_s: float) -> np.ndarray | None:
        """ShmGroup.pin, watching the coordinator while it waits (the path is on)."""
        self._call = Call(self.rank, step, seq, "bucket buffers (shared memory)")
        return self._group.pin(nbytes, step=step, seq=seq, timeout_s=timeout_s,
                               on_wait=self._on_wait)

    def allreduce_(self, flat: np.ndarray, *, step: int, seq: int, timeout_s: float) -> bool:
        """ShmGroup.allreduce_, watching the coordinator while it waits."""
        return self._run("allreduce", flat, step=step, seq=seq, timeout_s=timeout_s)

    def broadcast_(self, flat: np.ndarray, root: int, *, step: int, seq: int,
                   timeout_s: float) -> bool:
        """ShmGroup.broadcast_, watching the coordinator while it waits."""
        return self._run("broadcast", flat, root, step=step, seq=seq, timeout_s=timeout_s)

    def reduce_scatter_(self, flat: np.ndarray, *, step: int, seq: int,
                        timeout_s: float) -> bool:
        """ShmGroup.reduce_scatter_, watching the coordinator while it waits."""
        return self._run("reduce_scatter", flat, step=step, seq=seq, timeout_s=timeout_s)

    def allgather_(self, flat: np.ndarray, *, step: int, seq: int, timeout_s: float) -> bool:
        """ShmGroup.allgather_, watching the coordinator while it waits."""
        return self._run("allgather_", flat, step=step, seq=seq, timeout_s=timeout_s)

    def _run(self, kind: str, flat: np.ndarray, *args, step: int, seq: int,
             timeout_s: float) -> bool:
        """The group's collective `kind` (as in KINDS); counted in `taken` if it went
        through shared memory."""
        self._call = Call(self.rank, step, seq, f"{kind} (shared memory)")
        method = getattr(self._group, kind.rstrip("_") + "_")
        done = method(flat, *args, step=step, seq=seq, timeout_s=timeout_s,
                      on_wait=self._on_wait)
        if done:
            self.taken[kind] += 1
        return done

    def close(self) -> None:
        """Unmap the group, if there is one."""
        if self._group is not None:
            self._group.close()

    def _setup(self, op: str, timeout_s: float) -> None:
        """Agree with every rank, through the coordinator, on a node-local group or none."""
        group, token = None, None
        if self.rank == 0 and supported():
            try:
                token = new_token(_job_id())
                group = ShmGroup(0, self.world_size, token, create=True)
                self.names = group.names
            except (OSError, CollectiveError):
                group, token = None, None
        try:
            info = {"node": _node_key(), "supported": supported(), "token": token}
            infos = self._exchange(f"{op} (shared-memory setup)", info)
            self.spread = len({i["node"] for i in infos}) > 1
            usable = (infos[0]["token"] is not None
                      and all(i["supported"] and i["node"] == infos[0]["node"] for i in infos))
            if usable and self.rank != 0:
                try:
                    group = ShmGroup(self.rank, self.world_size, infos[0]["token"],
                                     create=False)
                    self.names = group.names
                except (OSError, CollectiveError, ValueError):
                    group = None
            oks = self._exchange(f"{op} (shared-memory attach)", usable and group is not None)
            if all(oks):
                group.join(timeout_s)  # then the names are unlinked
                self._group, self.state = group, "on"
                return
        except BaseException:
            if group is not None:
                group.close()  # unlinks what rank 0 created
            raise
        if group is not None:
            group.close()
        self.state = "off"

    def _on_wait(self, waited_s: float, pending: list) -> None:
        """Every few ms of a wait for `pending`: has the job been aborted, or a rank gone
        into another collective (so it will never arrive)? Fail now, not at the timeout."""
        status = self.poll_status(waited_s)
        if status is None:
            return
        for w in status.get("workers", []):
            pos = w.get("position")
            if w["rank"] in pending and pos is not None and pos[2] >= self._call.seq:
                kind, step, seq = pos
                check_same_call(Call(w["rank"], step, seq, kind), self._call)

    def poll_status(self, waited_s: float, call: Call | None = None) -> dict | None:
        """The coordinator's status when a fresh answer is in, else None, asking without
        blocking at most every STATUS_EVERY_S once a wait passed STATUS_AFTER_S. Raises
        CollectiveAborted if the job was aborted, CollectiveError if the coordinator died
        (naming `call`, by default this path's collective in progress)."""
        import ray  # only here: the segment itself needs no Ray
        from ray.exceptions import RayActorError

        if waited_s < STATUS_AFTER_S:
            return None
        now = time.monotonic()
        if self._status_ref is None:
            if now >= self._status_due:
                self._status_ref = self._coord.status.remote()
            return None
        ready, _ = ray.wait([self._status_ref], timeout=0)
        if not ready:
            return None
        ref, self._status_ref = self._status_ref, None
        self._status_due = now + STATUS_EVERY_S
        call = call or self._call
        try:
            status = ray.get(ref, timeout=1.0)
        except RayActorError as e:
            raise CollectiveError(f"collective #{call.seq} at step {call.step}: "
                                  f"the coordinator actor died ({e})") from None
        except Exception:  # a slow or odd answer: ask again later
            return None
        if status.get("aborted"):
            raise CollectiveAborted(status["aborted"])
        return status


def _node_key() -> str:
    """Which machine (and /dev/shm) this process is on: Ray's node id, host and boot."""
    parts = [socket.gethostname()]
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
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
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            return ray.get_runtime_context().get_job_id()
    except Exception:  # noqa: BLE001 - only salt for the segment name
        pass
    return str(os.getpid())


def carve(sizes: list, allocate) -> list | None:
    """Flat zeroed arrays, one per (numel, dtype) of `sizes`, cut from one uint8 area that
    allocate(nbytes) returns (None if it returns None); each starts on a cache line."""
    offsets, total = [], 0
    for numel, dtype in sizes:
        offsets.append(total)
        nbytes = numel * np.dtype(dtype).itemsize
        total += -(-nbytes // PIN_ALIGN) * PIN_ALIGN
    area = allocate(total)
    if area is None:
        return None
    return [area[o:o + numel * np.dtype(dtype).itemsize].view(dtype)
            for o, (numel, dtype) in zip(offsets, sizes)]
