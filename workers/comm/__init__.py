"""Communicators, one module per data path, and the factory every rank builds its own with.

    star   the coordinator actor's star and object-store paths (backend "coordinator"),
           and hier's NodePath across nodes
    shm    the shared-memory group of the ranks on one node, and its negotiation (used by star)
    ring   ring all-reduce over TCP between workers (backend "ring")
    hier   the ring across nodes: shared memory in a node, a ring of node leaders
           (backend "ring" with hierarchical=True or "auto")
    mpi    mpi4py under mpiexec (backend "mpi")
    base   what they all share: bookkeeping, the one "same collective?" check, helpers

Each backend is imported only when asked for, so `ring` and `mpi` ranks never need Ray
and `coordinator` and `ring` ranks never need mpi4py.
"""

from __future__ import annotations

from typing import Any

from disttrain.distributed.comm import DEFAULT_TIMEOUT_S, Communicator, LocalCommunicator


def make_communicator(backend: str, *, rank: int, world_size: int, coordinator=None,
                      secret: bytes | str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                      **kw: Any) -> Communicator:
    """This worker's communicator for `backend` in {"coordinator", "ring", "mpi"}."""
    try:
        make = _MAKERS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; choose one of "
                         f"{', '.join(sorted(_MAKERS))}") from None
    return make(rank, world_size, coordinator, secret, timeout_s, **kw)


def _coordinator(rank, world_size, coordinator, secret, timeout_s, **kw) -> Communicator:
    """Sync via the coordinator actor (shared memory on one node, and with `secret` per node
    across nodes, its leaders in a ring); alone: local."""
    if coordinator is None and world_size > 1:
        raise ValueError("backend 'coordinator' needs coordinator=<the job's coordinator "
                         "actor handle> (workers.coordinator.create_coordinator)")
    if world_size == 1 and coordinator is None:
        return LocalCommunicator(timeout_s)
    from disttrain.workers.comm.star import CoordinatorCommunicator

    return CoordinatorCommunicator(coordinator, rank, world_size, timeout_s=timeout_s,
                                   secret=secret, **kw)


def _ring(rank, world_size, coordinator, secret, timeout_s, **kw) -> Communicator:
    """Ring all-reduce over TCP between workers, found via the coordinator or a rendezvous;
    hierarchical=True or "auto": shared memory within each node, the ring between nodes."""
    from disttrain.workers.comm.ring import RayRendezvous, RingCommunicator

    rendezvous = kw.pop("rendezvous", None)
    hierarchical = kw.pop("hierarchical", False)
    if hierarchical not in (True, False, "auto"):
        raise ValueError(f"backend 'ring': hierarchical must be True, False or 'auto', got "
                         f"{hierarchical!r}")
    if rendezvous is None and world_size > 1:
        if coordinator is None:
            raise ValueError("backend 'ring' needs coordinator=<actor handle> or "
                             "rendezvous=<object with publish_address/addresses>")
        rendezvous = RayRendezvous(coordinator)
    if hierarchical and world_size > 1:
        from disttrain.workers.comm.hier import HierarchicalCommunicator

        return HierarchicalCommunicator(rank, world_size, rendezvous, secret,
                                        timeout_s=timeout_s, hierarchical=hierarchical, **kw)
    kw.pop("node", None)  # only the hierarchical mode groups ranks by node
    return RingCommunicator(rank, world_size, rendezvous, secret, timeout_s=timeout_s, **kw)


def _mpi(rank, world_size, coordinator, secret, timeout_s, **kw) -> Communicator:
    """Sync with MPI collectives; the ranks must be the ones mpiexec started."""
    from disttrain.workers.comm.mpi import MPICommunicator

    comm = MPICommunicator(kw.pop("comm", None), timeout_s=timeout_s)
    if (comm.rank, comm.world_size) != (rank, world_size):
        raise ValueError(
            f"backend 'mpi': asked for rank {rank} of {world_size} but mpiexec started "
            f"rank {comm.rank} of {comm.world_size}; start the job with "
            f"mpiexec -n {world_size}")
    return comm


_MAKERS = {"coordinator": _coordinator, "ring": _ring, "mpi": _mpi}
