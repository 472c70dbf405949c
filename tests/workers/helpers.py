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


class HookedRendezvous(LocalRendezvous):
    """A LocalRendezvous that calls `hook(addresses) -> addresses` once, when every rank has
    published and before any rank sees the list: to let strangers in first, or to put a
    proxy in a rank's place."""

    def __init__(self, world_size: int, hook):
        super().__init__(world_size)
        self._hook = hook
        self._lock = threading.Lock()
        self._result: list | None = None

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every rank's address as the hook left it."""
        found = super().addresses(timeout_s)
        with self._lock:
            if self._result is None:
                self._result = self._hook(found)
            return self._result


def annoy(addresses: list, per_address: int, reopen_s: float) -> None:
    """Strangers on ring listeners, until stdin closes (run in a process of its own, so its
    sockets are not counted with the ring's). Connections cycle through three kinds: silent
    (connect, send nothing), dribbling (one byte every 0.3 s) and garbage (random bytes for
    a reply); each is reopened `reopen_s` after the listener drops or refuses it. Prints
    "ready" once every first connection is open, then, at the end, a JSON line of counts."""
    import errno
    import json
    import selectors
    import socket
    import sys
    import time

    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, "stop")
    counts = {"connected": 0, "dropped": 0, "refused": 0}
    reopen: list = []  # (when, address, kind)

    def open_one(address, kind):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        state = [address, kind, False, time.monotonic()]
        if sock.connect_ex(tuple(address)) not in (0, errno.EINPROGRESS):  # refused at once
            sock.close()
            counts["refused"] += 1
            reopen.append((time.monotonic() + reopen_s, address, kind))
            return False
        selector.register(sock, selectors.EVENT_WRITE, state)
        return True

    def close_one(sock, state, outcome):
        selector.unregister(sock)
        sock.close()
        counts[outcome] += 1
        reopen.append((time.monotonic() + reopen_s, state[0], state[1]))

    waiting = sum(open_one(address, ("silent", "dribble", "garbage")[i % 3])
                  for i in range(per_address) for address in addresses)
    while True:
        now = time.monotonic()
        for item in [r for r in reopen if r[0] <= now]:
            reopen.remove(item)
            open_one(item[1], item[2])
        for key, _ in selector.select(0.05):
            if key.data == "stop":
                print(json.dumps(counts), flush=True)
                return
            sock, state = key.fileobj, key.data
            if not state[2]:  # the connect finished, one way or the other
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    close_one(sock, state, "refused")
                else:
                    state[2] = True
                    counts["connected"] += 1
                    selector.modify(sock, selectors.EVENT_READ, state)
                waiting -= 1
                if waiting == 0:
                    print("ready", flush=True)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                close_one(sock, state, "dropped")
            elif state[1] == "garbage":
                sock.send(os.urandom(69))
        for key in list(selector.get_map().values()):  # the dribblers' next byte
            state = key.data
            if isinstance(state, list) and state[2] and state[1] == "dribble" and \
                    now - state[3] >= 0.3:
                state[3] = now
                try:
                    key.fileobj.send(b"\x00")
                except OSError:
                    pass


def ring_rank_main(rank: int, world_size: int, host: str, folder: str) -> None:
    """One ring rank in a process of its own: an all-reduce of int_data, then a JSON line
    with the result's digest and which of its connections carry frame tags."""
    import json

    from disttrain.workers.comm.ring import FolderRendezvous, RingCommunicator

    comm = RingCommunicator(rank, world_size, FolderRendezvous(folder, world_size), "s3cret",
                            timeout_s=30.0, host=host)
    out = comm.allreduce_(int_data(rank, 100_003, "float32"))
    comm.close()
    print(json.dumps({"digest": digest(out), "integrity_on": comm.integrity_on}), flush=True)
