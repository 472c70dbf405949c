"""The three gradient-sync backends behind one factory, with Ray Train-style lifecycle hooks.

A worker builds its communicator with `make_communicator(backend, rank=..., ...)`; the
driver calls `get_backend(name).on_start(...)` before the workers build theirs and
`on_shutdown(...)` after they are done.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from disttrain.distributed.comm import DEFAULT_TIMEOUT_S, Communicator, LocalCommunicator


class Backend:
    """Lifecycle of one backend: driver hooks around the per-worker communicator."""

    name = ""

    def on_start(self, coordinator=None, world_size: int = 1) -> None:
        """Driver side, before any worker builds its communicator."""

    def make(self, *, rank: int, world_size: int, coordinator, secret, timeout_s: float,
             **kw: Any) -> Communicator:
        """Worker side: this rank's communicator."""
        raise NotImplementedError

    def on_shutdown(self, comm: Communicator | None = None) -> None:
        """Worker or driver side, once the job is done: release what `make` took."""
        if comm is not None:
            comm.close()


class CoordinatorBackend(Backend):
    """Sync via the coordinator actor (shared memory on one node); alone: local."""
    name = "coordinator"

    def make(self, *, rank, world_size, coordinator, secret, timeout_s, **kw):
        from disttrain.workers.comm_coordinator import CoordinatorCommunicator

        if coordinator is None and world_size > 1:
            raise ValueError("backend 'coordinator' needs coordinator=<the job's coordinator "
                             "actor handle> (workers.coordinator.create_coordinator)")
        if world_size == 1 and coordinator is None:
            return LocalCommunicator(timeout_s)
        return CoordinatorCommunicator(coordinator, rank, world_size, timeout_s=timeout_s, **kw)


class RingBackend(Backend):
    """Ring all-reduce over TCP between workers, found via the coordinator or a rendezvous."""
    name = "ring"

    def make(self, *, rank, world_size, coordinator, secret, timeout_s, **kw):
        from disttrain.workers.ring import RingCommunicator

        rendezvous = kw.pop("rendezvous", None)
        if rendezvous is None and world_size > 1:
            if coordinator is None:
                raise ValueError("backend 'ring' needs coordinator=<actor handle> or "
                                 "rendezvous=<object with publish_address/addresses>")
            rendezvous = RayRendezvous(coordinator)
        kw.setdefault("host", _node_address())
        return RingCommunicator(rank, world_size, rendezvous, secret, timeout_s=timeout_s, **kw)


class MPIBackend(Backend):
    """Sync with MPI collectives; the ranks must be the ones mpiexec started."""
    name = "mpi"

    def on_start(self, coordinator=None, world_size: int = 1) -> None:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise RuntimeError("backend 'mpi' needs mpi4py: pip install 'disttrain[mpi]' "
                               "and start the job with mpiexec -n N") from None

    def make(self, *, rank, world_size, coordinator, secret, timeout_s, **kw):
        from disttrain.workers.mpi_comm import MPICommunicator

        comm = MPICommunicator(kw.pop("comm", None), timeout_s=timeout_s)
        if (comm.rank, comm.world_size) != (rank, world_size):
            raise ValueError(
                f"backend 'mpi': asked for rank {rank} of {world_size} but mpiexec started "
                f"rank {comm.rank} of {comm.world_size}; start the job with "
                f"mpiexec -n {world_size}")
        return comm


BACKENDS = {b.name: b for b in (CoordinatorBackend(), RingBackend(), MPIBackend())}


def get_backend(name: str) -> Backend:
    """The backend called `name`; ValueError listing the valid names otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of "
                         f"{', '.join(sorted(BACKENDS))}") from None


def make_communicator(backend: str, *, rank: int, world_size: int, coordinator=None,
                      secret: bytes | str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                      **kw: Any) -> Communicator:
    """This worker's communicator for `backend` in {"coordinator", "ring", "mpi"}."""
    return get_backend(backend).make(rank=rank, world_size=world_size,
                                     coordinator=coordinator, secret=secret,
                                     timeout_s=timeout_s, **kw)


def join(coordinator, worker_id: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Register this process with the coordinator and return its rank (blocks for all)."""
    import ray

    ref = coordinator.register.remote(worker_id, _node_address(), os.getpid(), timeout_s)
    return ray.get(ref, timeout=timeout_s + 10.0)


class RayRendezvous:
    """The ring's rendezvous, backed by the coordinator actor's address registry."""

    def __init__(self, coordinator):
        self._coordinator = coordinator

    def publish_address(self, rank: int, host: str, port: int) -> None:
        """Record `rank`'s ring listener with the coordinator."""
        import ray

        ray.get(self._coordinator.publish_address.remote(rank, host, port))

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every rank's listener address, once all ranks published."""
        import ray

        ref = self._coordinator.addresses.remote(timeout_s)
        return [tuple(a) for a in ray.get(ref, timeout=None if timeout_s is None
                                          else timeout_s + 10.0)]


def _node_address() -> str:
    """The address other workers reach this one at: Ray's node IP when in Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
