"""HierarchicalCommunicator: the ring backend across nodes as NCCL and Horovod run it.

Across nodes a flat ring sends every rank's share over the network, even between two
ranks on one machine. Here the ranks of a node first sum in shared memory, one leader
per node (its lowest rank) runs the ring with the other leaders, and each leader hands
the result back to its node through shared memory: 2(N-1)/N of the buffer crosses the
network per node instead of per rank, and the copies within a node cost no TCP.

Three parts, each an existing communicator:

    control  a flat RingCommunicator over every rank, on the job's rendezvous: the setup
             exchanges, allgather(obj) and barrier (small, latency-bound), and everything
             when the mode is "flat". NCCL keeps such a bootstrap ring too.
    local    a ShmGroup per node with more than one rank (workers/comm/shm.py); local
             rank i of a node is its i-th lowest rank.
    leaders  a RingCommunicator over the leaders, leader k being the lowest rank of the
             k-th node (nodes in order of their lowest rank). Its addresses go round the
             control ring, so it never touches the job's rendezvous (its own namespace).

Setup, on every rank alike: one allgather of (node, shared memory supported) over the
control ring decides the mode, the same on every rank:

    flat  the control ring does everything: hierarchical = "auto" on one node or one rank
          per node, shared memory unsupported (not Linux on x86-64) on some node, or a
          node whose group could not be set up (every rank learns it in one more exchange)
    shm   one node: shared memory only, no leaders' ring
    hier  several nodes, some with more than one rank

then each node's leader creates its group and the names go round (one allgather), the
others attach, all say whether that worked (one allgather), and the leaders form their
ring (one allgather of their addresses). `NodePath` holds the local and leaders' parts
and needs only an `exchange(obj) -> [every rank's obj]` for its setup, so another
communicator with an exchange of its own takes it up as well: the coordinator's
(star.py), with hierarchical = "auto", for its large buffers across nodes.

Collectives:

    allreduce  node sum in shared memory (((x0 + x1) + x2) ..., local rank order) -> the
               leaders' ring all-reduce (its fixed chunk order) -> broadcast from the leader
               in shared memory. Fixed orders, so the same job gives the same bits every
               run; they differ from the flat ring's only in rounding.
    broadcast  the root's node: shared-memory broadcast from the root -> the leaders' ring
               from the root's node -> the other nodes: shared-memory broadcast from the
               leader.
    allgather, barrier   the control ring.
    reduce_scatter_, allgather_   the sharded optimizer's, chunks as chunk_bounds over the
               job's ranks. Mode "flat": the control ring's own. Mode "shm": the ShmGroup's
               own (local rank == job rank). Mode "hier": on the buffer laid out node by
               node (`staging`: node k's ranks' chunks side by side form region k; that is
               the buffer's own layout where every node's ranks are contiguous, else a copy
               in that order, "a,b,a"), where chunk_bounds over region k and its ranks gives
               the very same chunks:
                 reduce_scatter_  node sum in shared memory (its reduce-scatter, then a
                   gather at the leader: the all-reduce's sum, ((x0 + x1) + x2) ..., in local
                   rank order) -> the leaders' ring reduce-scatter over the node regions
                   (node k's region finished at leader k, in the ring's fixed order) ->
                   shared-memory scatter of the region from the leader (each rank copies
                   its own chunk only).
                 allgather_  shared-memory gather of the region at the leader -> the
                   leaders' ring all-gather over the regions -> shared-memory broadcast of
                   the whole buffer from the leader.
               Each moves one phase's bytes over the network: (N-1)/N of the buffer out of
               every leader, half the all-reduce's; within a node only the leader copies
               what only it needs.

`bucket_buffers` (DDP's gradient buckets) cuts buffers from a pinned area of the node's
shared memory (ShmGroup.pin), so the node's sums read them where backward wrote them.

Every part runs with this communicator's step and sequence number, so the step and
"same collective?" checks of shared memory and of both rings name the collective as the
caller counts it, and the ranks they name are translated to the job's ranks.

Failures: every part has the timeout. A part that fails breaks every part of this rank:
the shared-memory group is marked failed (the node's other ranks, waiting there for the
leader, wake with the reason), and both rings are broken (an abort frame with the reason,
then closed), so the other nodes' leaders fail and fail their nodes. A SIGKILLed
non-leader is seen by its leader in shared memory (pidfd), a SIGKILLed leader by its node
(pidfd) and by its ring neighbours (connection reset). A rank alive but absent is seen
by nobody: given an `on_wait` (the coordinator's abort poll), NodePath calls it while
waiting in shared memory and while a leader waits on the leaders' ring, so a job's abort
ends those waits at once; otherwise they end at the timeout. A rank in an allgather or barrier
while others are in an allreduce or broadcast waits on another part than they do: that
ends in a CollectiveTimeout naming the ranks that never arrived, not in a mismatch error.
A rank in reduce_scatter_, allgather_ or allreduce while others are in another of the
three fails at the first header they share (its node's shared memory, else the leaders'
ring) with the error that names both calls; in shared memory allgather_ shows as the
gather of the node's region at its leader ("gather #7 to root 0 on <region> bytes").

Failing a part goes through its public names: ShmGroup.fail (the group's own failure
path: the reason in its row, the failed flag set) and RingCommunicator.abort (its abort
frame, then closed). One private part is still used on purpose: the rings' `_seq` and
`step`, set before each collective (`_numbered`), so their frames carry this
communicator's sequence number; a public way would be a parameter on every ring
collective, for this one caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from disttrain.distributed.comm import DEFAULT_TIMEOUT_S, CollectiveError
from disttrain.workers.comm.base import CommunicatorBase, chunk_bounds
from disttrain.workers.comm.ring import RingCommunicator
from disttrain.workers.comm.shm import ShmGroup, _job_id, _node_key, carve, new_token, supported

MODES = ("flat", "shm", "hier")
# Reasons this module hands to another rank are already in the job's rank numbers: they
# travel between these marks, which the translation of a part's rank numbers skips.
_KEEP, _END = "\x02", "\x03"
_RANKS = re.compile(r"\b(rank )(\d+)|\b(ranks )\[([\d, ]*)\]")


@dataclass(frozen=True)
class Layout:
    """Which ranks share a node, and the mode every rank derived from that."""

    nodes: tuple  # the ranks of each node, nodes in order of their lowest rank
    mode: str

    def place(self, rank: int) -> tuple:
        """(node index, local rank) of `rank`."""
        for k, members in enumerate(self.nodes):
            if rank in members:
                return k, members.index(rank)
        raise ValueError(f"rank {rank} is on no node of {self.nodes}")


def plan(infos: list, hierarchical: bool | str) -> Layout:
    """The layout from every rank's {"node", "shm"}; the same on every rank."""
    nodes: dict = {}
    for rank, info in enumerate(infos):
        nodes.setdefault(info["node"], []).append(rank)
    groups = tuple(tuple(m) for m in nodes.values())  # dicts keep first-seen = rank order
    shared = any(len(m) > 1 for m in groups)
    if not shared or not all(i["shm"] for i in infos):
        mode = "flat"  # nothing to share, or a node that cannot
    elif len(groups) == 1:
        mode = "flat" if hierarchical == "auto" else "shm"
    else:
        mode = "hier"
    return Layout(groups, mode)


class NodePath:
    """Shared memory within each node and the leaders' ring, for one rank.

    Set up over `exchange(obj) -> [every rank's obj]`, which every rank calls at the same
    points: the control ring's allgather here; any communicator's exchange would do (the
    coordinator's, for instance). `mode` is "flat" (nothing set up: the caller keeps its
    own path), "shm" or "hier". The collectives take the caller's step and sequence number
    and raise errors that name the job's ranks (raise `plain_error(e)`); on any failure the
    caller calls `break_`.
    """

    def __init__(self, rank: int, world_size: int, exchange, secret: bytes | str,
                 timeout_s: float, *, hierarchical: bool | str = True, node: str | None = None,
                 ring_options: dict | None = None, on_wait=None):
        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        # Called every few ms while waiting in shared memory (ShmGroup's on_wait) or, on a
        # leader, on the leaders' ring (RingCommunicator's): the coordinator backend passes
        # a poll of its abort flag, so a rank that fails while alive, or is alive but
        # absent while the job is aborted, ends every other rank's wait at once.
        self._on_wait = on_wait
        self.mode = "flat"
        self._exchange = exchange
        self._group: ShmGroup | None = None
        self._leaders: RingCommunicator | None = None
        infos = exchange({"node": node or _node_key(), "shm": supported()})
        self.layout = plan(infos, hierarchical)
        self.node, self._local = self.layout.place(rank)
        self._members = self.layout.nodes[self.node]
        # Whether the nodes' ranks are contiguous, so the chunk collectives need no staging
        self._in_rank_order = [r for m in self.layout.nodes for r in m] == list(range(world_size))
        self._scratch: np.ndarray | None = None
        if self.layout.mode != "flat":
            self._join_node()
        if self.mode == "hier":
            options = {k: v for k, v in (ring_options or {}).items() if k != "port"}
            try:
                self._join_leaders(secret, options)
            except BaseException as e:  # the node's other ranks must not wait for this one
                self.break_(f"setup of the leaders' ring failed: {type(e).__name__}: {e}")
                self.close()
                raise

    # --- setup ------------------------------------------------------------------------

    def _join_node(self) -> None:
        """The node's leader creates its group, the others attach; all agree or go flat."""
        alone = len(self._members) == 1
        token = group = None
        if not alone and self._local == 0:
            try:
                token = new_token(_job_id())
                group = ShmGroup(0, len(self._members), token, create=True)
            except (OSError, CollectiveError):
                token = group = None
        tokens = self._exchange(token)
        if not alone and self._local != 0 and tokens[self._members[0]] is not None:
            try:
                group = ShmGroup(self._local, len(self._members), tokens[self._members[0]],
                                 create=False)
            except (OSError, CollectiveError, ValueError):
                group = None
        oks = self._exchange(alone or group is not None)
        if not all(oks):  # some node has no group: every rank keeps the flat path
            if group is not None:
                group.close()  # unlinks what the leader created
            return
        self._group = group
        if group is not None:
            group.join(self.timeout_s)  # then the names are unlinked
        self.mode = self.layout.mode

    def _join_leaders(self, secret, ring_options: dict) -> None:
        """The leaders' ring; the other ranks take part in its address exchange only."""
        if self._local == 0:
            self._leaders = RingCommunicator(
                self.node, len(self.layout.nodes), _ExchangeRendezvous(self), secret,
                self.timeout_s, **ring_options,
                on_wait=self._on_wait and self._watch_leaders)
        else:
            self._exchange(None)

    # --- collectives ------------------------------------------------------------------

    def allreduce_(self, flat: np.ndarray, step: int, seq: int) -> None:
        """Sum over every rank: in the node, across the leaders, back to the node."""
        if self._group is not None:
            self._in_node("allreduce_", flat, step, seq)
        if self.mode == "hier":
            if self._leaders is not None:
                self._across("allreduce_", flat, step, seq)
            if self._group is not None:
                self._in_node("broadcast_", flat, step, seq, 0)

    def broadcast_(self, flat: np.ndarray, root: int, step: int, seq: int) -> None:
        """Root's buffer to its node, across the leaders, then to the other nodes."""
        root_node, root_local = self.layout.place(root)
        if self._group is not None and self.node == root_node:
            self._in_node("broadcast_", flat, step, seq, root_local)
        if self.mode == "hier":
            if self._leaders is not None:
                self._across("broadcast_", flat, step, seq, root_node)
            if self._group is not None and self.node != root_node:
                self._in_node("broadcast_", flat, step, seq, 0)

    def pin(self, nbytes: int, step: int, seq: int) -> np.ndarray | None:
        """This rank's part of a pinned area of its node's shared memory (ShmGroup.pin:
        buffers there are read in place, with no copy in), or None: a rank alone on its
        node, or no room. Collective over the node's ranks."""
        return None if self._group is None else self._on_node("pin", nbytes, step=step, seq=seq)

    # --- the sharded optimizer's chunks (chunk_bounds over the job's ranks) -----------

    def staging(self, size: int) -> tuple:
        """(pieces, regions) for a buffer of `size` elements laid out node by node: rank r's
        chunk (chunk_bounds over the job's ranks) at pieces[r], node k's chunks side by
        side in regions[k]. Where every node's ranks are contiguous this is the buffer's own
        layout; otherwise ("a,b,a") the collectives below run on a copy in this order, so a
        node's chunks are still one region its leader can stand for on the leaders' ring.
        Within region k, chunk_bounds(region, node's ranks) are exactly those ranks'
        pieces: a node's ranks ascend, so their chunk sizes never grow and differ by at
        most one, as chunk_bounds cuts them; so the node's shared memory scatters and
        gathers them natively."""
        bounds = chunk_bounds(size, self.world_size)
        pieces, regions, at = [None] * self.world_size, [], 0
        for members in self.layout.nodes:
            start = at
            for r in members:
                at += bounds[r][1] - bounds[r][0]
                pieces[r] = (at - (bounds[r][1] - bounds[r][0]), at)
            regions.append((start, at))
        return pieces, regions

    def reduce_scatter_(self, flat: np.ndarray, step: int, seq: int) -> None:
        """Sum over every rank into this rank's chunk; the other chunks left undefined."""
        if self.mode == "shm":
            self._in_node("reduce_scatter_", flat, step, seq)
            return
        pieces, regions = self.staging(flat.size)
        work = self._node_ordered(flat, pieces, whole=True)
        if self._group is not None:
            # The node's sum, ((x0 + x1) + x2) ..., gathered at the leader, which needs all
            # of it. A reduce-scatter first rather than a reduce: a local peer in another
            # collective then fails at the first header, naming both calls.
            self._in_node("reduce_scatter_", work, step, seq)
            self._in_node("gather_", work, step, seq, 0)
        if self._leaders is not None:  # one phase: leader k ends with its region summed
            self._across("reduce_scatter_", work, step, seq, bounds=regions)
        if self._group is not None:  # each rank's piece of the region from the leader
            lo, hi = regions[self.node]
            self._in_node("scatter_", work[lo:hi], step, seq, 0)
        if work is not flat:
            lo, hi = chunk_bounds(flat.size, self.world_size)[self.rank]
            np.copyto(flat[lo:hi], work[slice(*pieces[self.rank])])

    def allgather_(self, flat: np.ndarray, step: int, seq: int) -> None:
        """Fill every rank's chunk from its owner."""
        if self.mode == "shm":
            self._in_node("allgather_", flat, step, seq)
            return
        pieces, regions = self.staging(flat.size)
        work = self._node_ordered(flat, pieces, whole=False)
        lo, hi = regions[self.node]
        if self._group is not None:  # the node's pieces to its leader
            self._in_node("gather_", work[lo:hi], step, seq, 0)
        if self._leaders is not None:  # one phase: every region to every leader
            self._across("allgather_", work, step, seq, bounds=regions)
        if self._group is not None:
            self._in_node("broadcast_", work, step, seq, 0)
        if work is not flat:
            bounds = chunk_bounds(flat.size, self.world_size)
            for r, (a, b) in enumerate(pieces):
                np.copyto(flat[slice(*bounds[r])], work[a:b])

    def _node_ordered(self, flat: np.ndarray, pieces: list, whole: bool) -> np.ndarray:
        """`flat` in node order (staging): itself where that is its own order, else a
        reused scratch buffer holding every rank's chunk (`whole`) or this rank's only."""
        if self._in_rank_order:
            return flat
        work = self._scratch
        if work is None or work.size != flat.size or work.dtype != flat.dtype:
            work = self._scratch = np.empty_like(flat)
        bounds = chunk_bounds(flat.size, self.world_size)
        for r in range(self.world_size) if whole else [self.rank]:
            np.copyto(work[slice(*pieces[r])], flat[slice(*bounds[r])])
        return work

    @property
    def leaders_bytes_sent(self) -> int:
        """Bytes this rank sent on the leaders' ring so far (0 if it is no leader)."""
        return 0 if self._leaders is None else self._leaders.bytes_sent

    # --- the parts --------------------------------------------------------------------

    def _in_node(self, op: str, flat: np.ndarray, step: int, seq: int, *root) -> None:
        """One ShmGroup collective; an error if the node's shared memory cannot hold flat."""
        # False is the same on every rank of the node; the leader then breaks the ring
        if not self._on_node(op, flat, *root, step=step, seq=seq):
            raise CollectiveError(
                f"{op.rstrip('_')} at step {step} (collective #{seq}): node {self.node}'s "
                f"shared memory (/dev/shm) cannot hold {flat.nbytes} bytes; make /dev/shm "
                "larger (Docker: --shm-size) or set [distributed] hierarchical = false")

    def _on_node(self, op: str, *args, step: int, seq: int):
        """One call of this node's ShmGroup, watched; its local ranks translated to the job's."""
        try:
            return getattr(self._group, op)(*args, step=step, seq=seq, timeout_s=self.timeout_s,
                                            on_wait=self._on_wait and self._watch)
        except CollectiveError as e:
            raise _renamed(e, self._members, f"node {self.node}'s shared memory") from None

    def _watch(self, waited_s: float, pending: list) -> None:
        """The caller's on_wait; what it raises (the job's abort reason) is in the job's
        words already, so it is marked to keep its rank numbers as they are."""
        try:
            self._on_wait(waited_s, pending)
        except CollectiveError as e:
            raise type(e)(_KEEP + _unmarked(str(e)) + _END) from None

    def _watch_leaders(self, waited_s: float) -> None:
        """The leaders' ring's on_wait: the caller's watch, the previous leader pending. So
        a leader waiting there on a leader that is alive but absent ends with the job's
        abort as soon as the coordinator has it, not at the collective's timeout."""
        nodes = self.layout.nodes
        self._watch(waited_s, [nodes[(self.node - 1) % len(nodes)][0]])

    def _across(self, op: str, flat: np.ndarray, step: int, seq: int, *root, **bounds) -> None:
        """One collective on the leaders' ring; its ranks (node indices) translated."""
        _numbered(self._leaders, step, seq)
        try:
            getattr(self._leaders, op)(flat, *root, **bounds)
        except CollectiveError as e:
            leaders = [m[0] for m in self.layout.nodes]
            raise _renamed(e, leaders, "the leaders' ring") from None

    # --- failure and teardown ---------------------------------------------------------

    def break_(self, reason: str, kind: str = "CollectiveAborted") -> None:
        """Wake every rank waiting on this path with `reason` (raised as `kind` in the
        node): the group is marked failed and the leaders' ring gets an abort frame."""
        kept = _KEEP + _unmarked(reason) + _END
        if self._group is not None:
            self._group.fail(kept, kind)
        if self._leaders is not None:
            self._leaders.abort(kept)

    def close(self) -> None:
        """Unmap the group and close the leaders' ring."""
        for part in (self._group, self._leaders):
            if part is not None:
                part.close()


class HierarchicalCommunicator(CommunicatorBase):
    """The ring backend with shared memory inside each node (see the module docstring).

    `hierarchical`: True, or "auto" (on only with several nodes, some with more than one
    rank). `node`: this rank's node identity, by default shm's _node_key() (host, Ray node,
    boot id); tests pass their own to make one machine play several nodes. The rest is
    RingCommunicator's, for both rings (the leaders' ring takes a free port).
    """

    noun = "hierarchical ring"

    def __init__(self, rank: int, world_size: int, rendezvous, secret: bytes | str,
                 timeout_s: float = DEFAULT_TIMEOUT_S, *, hierarchical: bool | str = True,
                 node: str | None = None, **ring_options):
        super().__init__(rank, world_size, timeout_s)
        self._control: RingCommunicator | None = None
        self._path: NodePath | None = None
        try:
            self._control = RingCommunicator(rank, world_size, rendezvous, secret,
                                              timeout_s, **ring_options)
            self._path = NodePath(rank, world_size, self._control.allgather, secret, timeout_s,
                                  hierarchical=hierarchical, node=node,
                                  ring_options=ring_options)
        except BaseException as e:
            self._break_all(f"setup of the hierarchical ring failed: {type(e).__name__}: {e}")
            self.close()
            raise

    @property
    def mode(self) -> str:
        """"flat", "shm" or "hier", the same on every rank (see the module docstring)."""
        return "flat" if self._path is None else self._path.mode

    @property
    def layout(self) -> Layout:
        """The ranks of each node, as every rank agreed."""
        return self._path.layout

    # --- collectives ------------------------------------------------------------------

    def _allreduce(self, flat: np.ndarray) -> None:
        if self.mode == "flat":
            self._collective("allreduce", lambda: self._control_call("_allreduce", flat))
        else:
            self._collective("allreduce",
                             lambda: self._path.allreduce_(flat, self.step, self._seq))

    def _broadcast(self, flat: np.ndarray, root: int) -> None:
        if self.mode == "flat":
            self._collective("broadcast", lambda: self._control_call("_broadcast", flat, root))
        else:
            self._collective("broadcast",
                             lambda: self._path.broadcast_(flat, root, self.step, self._seq))

    def _reduce_scatter(self, flat: np.ndarray) -> None:
        if self.mode == "flat":  # the ring's own, one phase of its all-reduce
            self._collective("reduce_scatter",
                             lambda: self._control_call("_reduce_scatter", flat))
        else:
            self._collective("reduce_scatter",
                             lambda: self._path.reduce_scatter_(flat, self.step, self._seq))

    def _allgather_chunks(self, flat: np.ndarray) -> None:
        if self.mode == "flat":
            self._collective("allgather_", lambda: self._control_call("_allgather_chunks", flat))
        else:
            self._collective("allgather_",
                             lambda: self._path.allgather_(flat, self.step, self._seq))

    def bucket_buffers(self, sizes: list) -> list | None:
        """Zeroed flat buffers, one per (numel, dtype), in this rank's part of a pinned area
        of its node's shared memory, so the node's sums read them where they are (see
        disttrain/distributed/comm.py); None in mode "flat" or for a rank alone on its node
        (each node decides for its own ranks: its shared memory alone reads them)."""
        if self.mode == "flat":
            return None
        return carve(sizes, lambda nbytes: self._collective(
            "bucket_buffers", lambda: self._path.pin(nbytes, self.step, self._seq)))

    def _allgather(self, blob: bytes) -> list:
        return self._collective("allgather", lambda: self._control_call("_allgather", blob))

    def _barrier(self) -> None:
        self._collective("barrier", lambda: self._control_call("_barrier"))

    def _control_call(self, op: str, *args):
        """A collective of the control ring, which numbers ranks as the job does."""
        # The ring's backend method itself (the arguments are checked, the object already
        # encoded): its entry counts the collective and refuses if the ring is broken.
        _numbered(self._control, self.step, self._seq)
        return getattr(self._control, op)(*args)

    # --- failure ----------------------------------------------------------------------

    def _collective(self, kind: str, run):
        self._next_seq(kind)
        try:
            return run()
        except CollectiveError as e:
            error = plain_error(e)
            self._break_all(str(error), kind=type(e).__name__)
            raise error from None
        except BaseException as e:
            self._break_all(f"{type(e).__name__}: {e}")
            raise

    def _break_all(self, reason: str, kind: str = "CollectiveAborted") -> None:
        """Break every part, so that every rank waiting in one of them learns `reason`."""
        self._broken = self._broken or reason
        if self._path is not None:
            self._path.break_(reason, kind)
        if self._control is not None:
            self._control.abort(_KEEP + _unmarked(reason) + _END)

    def _release(self) -> None:
        for part in (self._path, self._control):
            if part is not None:
                part.close()

    # --- what callers of the plain ring may look at -----------------------------------

    @property
    def listen_address(self):
        """The control ring's listener address."""
        return None if self._control is None else self._control.listen_address

    @property
    def bytes_sent(self) -> dict:
        """Bytes this rank wrote on each ring so far, {"control": .., "leaders": ..}
        (diagnostics: what a collective costs on the network)."""
        return {"control": 0 if self._control is None else self._control.bytes_sent,
                "leaders": 0 if self._path is None else self._path.leaders_bytes_sent}

    @property
    def integrity_on(self) -> dict:
        """Frame tags on the control ring's connections (the leaders' ring decides alike)."""
        return self._control.integrity_on


class _ExchangeRendezvous:
    """The leaders' ring's rendezvous: its addresses go round the path's exchange, in which
    every rank takes part (the others with None)."""

    def __init__(self, path: NodePath):
        self._path = path
        self._mine = None

    def publish_address(self, rank: int, host: str, port: int) -> None:
        """Remember this leader's address until addresses() sends it round."""
        self._mine = [host, port]

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every leader's address, in node order."""
        rows = self._path._exchange(self._mine)
        return [tuple(rows[members[0]]) for members in self._path.layout.nodes]


def _numbered(ring: RingCommunicator, step: int, seq: int) -> None:
    """Make the ring's next collective carry `seq` (its entry adds one) and `step`, so its
    frame checks compare this communicator's numbers, not the ring's own count."""
    ring._seq = seq - 1
    ring.step = step


def _renamed(error: CollectiveError, ranks, where: str) -> CollectiveError:
    """`error` of a part whose rank i is the job's rank ranks[i], in the job's numbers."""
    def job_rank(i: str) -> str:
        i = int(i)
        return str(ranks[i]) if i < len(ranks) else f"?{i}"

    def sub(m: re.Match) -> str:
        if m.group(2) is not None:
            return m.group(1) + job_rank(m.group(2))
        inner = ", ".join(job_rank(x) for x in m.group(4).split(",") if x.strip())
        return f"{m.group(3)}[{inner}]"

    text, out = str(error), []
    while text:  # translate outside the kept marks only
        head, _, rest = text.partition(_KEEP)
        out.append(_RANKS.sub(sub, head))
        kept, _, text = rest.partition(_END)
        out.append(kept)
    message = "".join(out)
    if _KEEP in str(error):  # a reason relayed from another rank: already complete
        return type(error)(message)
    return type(error)(f"{where}: {message}")


def plain_error(error: CollectiveError) -> CollectiveError:
    """A NodePath error as its caller raises it: the marks around relayed reasons removed."""
    return type(error)(_unmarked(str(error)))


def _unmarked(text: str) -> str:
    return text.replace(_KEEP, "").replace(_END, "")
