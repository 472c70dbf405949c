"""What the worker tests share: per-rank data, the Ray actor that plays a rank, a rendezvous."""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from disttrain.distributed.comm import CollectiveTimeout

SIZES = (1, 7, 1001, 1_000_003)
DTYPES = ("float32", "float64")


def int_data(rank: int, n: int, dtype: str) -> np.ndarray:
    """Integer-valued floats: every backend's sum of these is exact."""
    return ((np.arange(n) * 7 + rank * 13) % 101 - 50 + rank).astype(dtype)


def random_data(rank: int, n: int, dtype: str) -> np.ndarray:
    """Floats whose sum depends on the order of additions."""
    rng = np.random.default_rng(1000 + rank)
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dtype)


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


class RankActor:
    """One rank: builds a communicator with make_communicator and runs scripted collectives."""

    def pid(self) -> int:
        return os.getpid()

    def build(self, backend, rank, world_size, coordinator, secret, timeout_s, **kw):
        from disttrain.workers.comm import make_communicator

        self.comm = make_communicator(backend, rank=rank, world_size=world_size,
                                      coordinator=coordinator, secret=secret,
                                      timeout_s=timeout_s, **kw)
        return getattr(self.comm, "listen_address", None)

    def conformance(self) -> dict:
        """Every collective on every dtype and size; results keyed for the test to check."""
        comm, out = self.comm, {}
        for dtype in DTYPES:
            for n in SIZES:
                comm.step += 1
                out[("ints", dtype, n)] = comm.allreduce_(int_data(comm.rank, n, dtype))
                out[("random", dtype, n)] = comm.allreduce_(random_data(comm.rank, n, dtype))
                for root in range(comm.world_size):
                    buf = int_data(comm.rank, n, dtype)
                    comm.broadcast_(buf, root)
                    out[("broadcast", dtype, n, root)] = digest(buf)
        out["allgather"] = comm.allgather({"rank": comm.rank, "name": f"w{comm.rank}",
                                           "values": [comm.rank, 1.5, None]})
        comm.barrier()
        out["after_barrier"] = comm.allgather(comm.rank)
        return out

    def allreduce_at(self, step: int, data: np.ndarray) -> np.ndarray:
        self.comm.step = step
        return self.comm.allreduce_(data.copy())

    def close(self) -> None:
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.close()
            self.comm = None


class LocalRendezvous:
    """An in-process rendezvous for rings whose ranks are threads (tests)."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self._addresses: dict = {}
        self._cond = threading.Condition()

    def publish_address(self, rank: int, host: str, port: int) -> None:
        """Record `rank`'s listening address."""
        with self._cond:
            self._addresses[rank] = (host, port)
            self._cond.notify_all()

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every rank's address, once all are published."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._addresses) == self.world_size,
                                       timeout_s):
                raise CollectiveTimeout("ring rendezvous: not every rank published an address")
            return [self._addresses[r] for r in range(self.world_size)]
