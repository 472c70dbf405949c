"""One rank of a hierarchical-ring test job, in a process of its own (run by test_hier.py).

    python -m tests.workers.hier_main SCRIPT RANK WORLD NODES FOLDER [TIMEOUT_S [HOST]]

NODES is every rank's node name, comma-separated ("a,a,b,b": ranks 0 and 1 play one node,
2 and 3 another, with shared memory within each); FOLDER holds the control ring's
rendezvous (workers/comm/ring.py FolderRendezvous); HOST the address this rank's listeners
bind to and advertise (127.0.0.1; a namespace's own address across hosts); SCRIPT may
carry an argument after a colon ("mixed_calls:1"). Prints JSON
lines: "ready" once the communicator works, then the script's results, or {"error",
"message", "after_s"}.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from disttrain.distributed.comm import CollectiveError
from disttrain.workers.comm import make_communicator
from disttrain.workers.comm.base import chunk_bounds
from disttrain.workers.comm.ring import FolderRendezvous
from tests.workers.helpers import digest, int_data, random_data

SIZES = (1, 7, 1001, 100_003)


def collectives(comm) -> dict:
    """Every collective on both dtypes; digests for the test to compare with numpy's."""
    out: dict = {}
    for dtype in ("float32", "float64"):
        for n in SIZES:
            comm.step += 1
            out[f"ints/{dtype}/{n}"] = digest(comm.allreduce_(int_data(comm.rank, n, dtype)))
            out[f"random/{dtype}/{n}"] = digest(comm.allreduce_(random_data(comm.rank, n, dtype)))
            for root in range(comm.world_size):
                out[f"broadcast/{dtype}/{n}/{root}"] = digest(
                    comm.broadcast_(int_data(comm.rank, n, dtype), root))
    n = 1001
    lo, hi = chunk_bounds(n, comm.world_size)[comm.rank]
    scattered = comm.reduce_scatter_(int_data(comm.rank, n, "float64"))
    out["reduce_scatter"] = scattered[lo:hi].tolist()
    gathered = np.zeros(n)
    gathered[lo:hi] = comm.rank + 1
    out["allgather_"] = digest(comm.allgather_(gathered))
    out["allgather"] = comm.allgather({"rank": comm.rank, "values": [comm.rank, 1.5, None]})
    comm.barrier()
    out["after_barrier"] = comm.allgather(comm.rank)
    return out


def until_error(comm) -> dict:
    """All-reduce 8 MB until a collective fails (the test kills a rank meanwhile)."""
    data = np.ones(1 << 20)
    for _ in range(100_000):
        comm.step += 1
        comm.allreduce_(data)
        data[:] = 1.0
    return {"finished": True}


def out_of_step(comm) -> dict:
    """The last rank is one step ahead of the others in its all-reduce."""
    comm.step = 5 + (comm.rank == comm.world_size - 1)
    comm.allreduce_(np.ones(1000))
    return {"finished": True}


def node_out_of_step(comm) -> dict:
    """The second half of the ranks (a whole node, in a,a,b,b) is one step ahead."""
    comm.step = 5 + (comm.rank >= comm.world_size // 2)
    comm.allreduce_(np.ones(1000))
    return {"finished": True}


CHUNK_SIZES = (1, 2, 3, 7, 1001, 100_003)  # 1, 2, 3: fewer elements than ranks
BYTES_N = 100_003  # float32; the leaders' ring bytes of each collective on it


def gather_input(rank: int, world: int, n: int, dtype: str) -> np.ndarray:
    """This rank's chunk of int_data, and elsewhere a value no rank's chunk holds."""
    buf = np.full(n, 1000.0 + rank, dtype)
    lo, hi = chunk_bounds(n, world)[rank]
    buf[lo:hi] = int_data(rank, n, dtype)[lo:hi]
    return buf


def chunks(comm) -> dict:
    """reduce_scatter_ and allgather_ on every size and dtype (this rank's chunk, and the
    whole gathered buffer, as digests), then the bytes each ring sent in a reduce-scatter,
    an all-gather and an all-reduce of BYTES_N float32."""
    out: dict = {}
    w = comm.world_size
    for dtype in ("float32", "float64"):
        for n in CHUNK_SIZES:
            lo, hi = chunk_bounds(n, w)[comm.rank]
            for data in ("ints", "random"):
                make = int_data if data == "ints" else random_data
                comm.step += 1
                summed = comm.reduce_scatter_(make(comm.rank, n, dtype))
                out[f"rs/{data}/{dtype}/{n}"] = digest(summed[lo:hi])
            out[f"ag/{dtype}/{n}"] = digest(comm.allgather_(gather_input(comm.rank, w, n, dtype)))
    sent = [comm.bytes_sent]
    comm.reduce_scatter_(int_data(comm.rank, BYTES_N, "float32"))
    sent.append(comm.bytes_sent)
    comm.allgather_(gather_input(comm.rank, w, BYTES_N, "float32"))
    sent.append(comm.bytes_sent)
    comm.allreduce_(int_data(comm.rank, BYTES_N, "float32"))
    sent.append(comm.bytes_sent)
    out["bytes"] = {ring: [b[ring] - a[ring] for a, b in zip(sent, sent[1:])]
                    for ring in ("control", "leaders")}
    return out


def mixed_calls(comm, scatterers: str) -> dict:
    """The ranks in `scatterers` ("1" or "2,3") call reduce_scatter_, the others allreduce_,
    at the same step and collective number."""
    comm.step = 3
    buf = np.ones(1000)
    if str(comm.rank) in scatterers.split(","):
        comm.reduce_scatter_(buf)
    else:
        comm.allreduce_(buf)
    return {"finished": True}


def pinned(comm) -> dict:
    """Buffers from bucket_buffers (pinned shared memory where the rank shares a node):
    all-reduce, reduce-scatter and all-gather on them, as digests; how many of the node's
    collectives read every buffer in place."""
    sizes = [(n, np.dtype(dtype)) for dtype in ("float32", "float64") for n in SIZES]
    buffers = comm.bucket_buffers(sizes)
    out: dict = {"pinned": buffers is not None}
    buffers = buffers or [np.zeros(n, dtype) for n, dtype in sizes]
    for buf, (n, dtype) in zip(buffers, sizes):
        comm.step += 1
        buf[...] = int_data(comm.rank, n, dtype.name)
        out[f"allreduce/{dtype}/{n}"] = digest(comm.allreduce_(buf))
        buf[...] = int_data(comm.rank, n, dtype.name)
        lo, hi = chunk_bounds(n, comm.world_size)[comm.rank]
        out[f"rs/{dtype}/{n}"] = digest(comm.reduce_scatter_(buf)[lo:hi])
        buf[...] = gather_input(comm.rank, comm.world_size, n, dtype.name)
        out[f"ag/{dtype}/{n}"] = digest(comm.allgather_(buf))
    group = getattr(getattr(comm, "_path", None), "_group", None)
    out["in_place"] = 0 if group is None else group.in_place
    return out


SCRIPTS = {"collectives": collectives, "until_error": until_error, "out_of_step": out_of_step,
           "node_out_of_step": node_out_of_step, "chunks": chunks, "mixed_calls": mixed_calls,
           "pinned": pinned}


def main(argv: list) -> None:
    script, rank, world, nodes, folder = argv[:5]
    rank, world, nodes = int(rank), int(world), nodes.split(",")
    timeout_s = float(argv[5]) if len(argv) > 5 else 30.0
    host = argv[6] if len(argv) > 6 else "127.0.0.1"
    comm = make_communicator("ring", rank=rank, world_size=world,
                             rendezvous=FolderRendezvous(folder, world), secret="s3cret",
                             timeout_s=timeout_s, hierarchical=True, node=nodes[rank],
                             host=host)
    print(json.dumps({"ready": True, "mode": comm.mode}), flush=True)
    started = time.monotonic()
    name, _, arg = script.partition(":")  # "mixed_calls:2,3": the script and its argument
    try:
        result = SCRIPTS[name](comm, *([arg] if arg else []))
    except CollectiveError as e:
        result = {"error": type(e).__name__, "message": str(e),
                  "after_s": time.monotonic() - started}
    finally:
        comm.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
