"""All-reduce benchmark: disttrain's backends side by side with MPICH (mpi4py) and gloo (torch).

Each row is one in-place sum of a float32 buffer across `workers` processes on this
machine. After one barrier the iterations run back to back, each timed alone; an
iteration counts as long as its slowest rank took. The table gives the median and the
minimum over the iterations (of every round) and the algorithm bandwidth, bytes / time.
The references, mpi4py's Allreduce under mpiexec (MPICH) and torch.distributed with
gloo, run in the same invocation, interleaved with disttrain's backends round by round,
so a noisy machine hurts them alike. `ring` is the ring as it runs on one node (frames
without tags); `ring-integrity` the same ring with every frame's HMAC-SHA256 on, as it
runs between nodes, so the two rows give the price of integrity. `coordinator-pinned` is
the coordinator with its buffers in pinned shared memory (bucket_buffers), as DDP's
gradient buckets are: beside `coordinator` it gives what the copy in costs. Every process runs with
one BLAS/OpenMP thread (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS = 1; gloo
ranks also torch.set_num_threads(1)).

What the link carries. Two rows time raw TCP between the same kind of processes as the
ring (Ray actors), over sockets set up as the ring sets up its own (`tune_socket`,
`kernel_timeouts`, the address `node_address` picks), timed the same way, one row per buffer size:
`tcp-oneway` streams the buffer from rank 0 to rank 1 (rank 1 answers one byte once it
has it all), the most one direction of the link carries; `tcp-both-ways` has every rank
send the buffer to the next while it receives one from the previous, the ring's own
traffic with no reduce (on 2 ranks, exactly the bytes the ring moves). A ring
all-reduce moves 2(W-1)/W of the buffer each way on every link, so backends are compared
by bus bandwidth, as NCCL's tests define it: busbw = algbw * 2(W-1)/W for an all-reduce,
bytes / time for one link's stream. `x oneway` is a row's median busbw over tcp-oneway's
at the same size (the fraction of the link's one-way speed it reaches), `x gloo` its
median time's speed-up over gloo.

    python -m disttrain.bench.allreduce --backend all --workers 2 --sizes 1,16,64 --iters 20
    disttrain bench allreduce --backend coordinator --sizes 16,64 --rounds 3

Across two hosts (`--hosts 2`, bench/allreduce_hosts.py): two network namespaces joined by
a veth pair, `--per-host` ranks in each, the flat and the hierarchical ring beside gloo:

    disttrain bench allreduce --hosts 2 --per-host 2 --sizes 16,64 --iters 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import (
    REPO,
    child_env,
    format_table,
    gloo_group,
    last_json_line,
    machine,
    print_result,
    run_gloo_children,
    thread_env,
    thread_note,
    timing_stats,
)

DISTTRAIN = ("coordinator", "ring", "ring-integrity", "mpi")
RAW_TCP = ("tcp-oneway", "tcp-both-ways")
REFERENCES = (*RAW_TCP, "mpi4py", "gloo")
WARMUP = 3
CHILD_TIMEOUT_S = 900


def run(backend: str, workers: int = 2, sizes_mb=(1, 16, 64), iters: int = 10) -> list[list]:
    """Seconds of each timed all-reduce (slowest rank), one list per size."""
    if backend in ("coordinator", "ring", "ring-integrity", "coordinator-objstore",
                   "coordinator-pinned", *RAW_TCP):
        return _run_ray(backend, workers, sizes_mb, iters)
    if backend in ("mpi", "mpi4py"):
        return _run_child(backend, workers, sizes_mb, iters)
    if backend == "gloo":
        return _run_gloo(workers, sizes_mb, iters)
    raise ValueError(f"unknown backend {backend!r}; choose from "
                     f"{', '.join(DISTTRAIN + REFERENCES)}, coordinator-objstore, "
                     "coordinator-pinned or all")


def _time_allreduce(allreduce, barrier, sizes_mb, iters, alloc=None) -> list[list]:
    """Seconds of each all-reduce, per size, measured in this process.

    One barrier, then the iterations back to back (each collective synchronises the
    ranks, so a slow barrier's uneven exit does not count against the first iteration).
    `alloc(numel)` makes the zeroed float32 buffer (a communicator's bucket_buffers).
    """
    out = []
    for mb in sizes_mb:
        numel = int(mb * 2**20) // 4
        # zeros: no overflow, no denormals
        buf = alloc(numel) if alloc is not None else np.zeros(numel, np.float32)
        for _ in range(WARMUP):
            allreduce(buf)
        barrier()
        times = []
        last = time.perf_counter()
        for _ in range(iters):
            allreduce(buf)
            now = time.perf_counter()
            times.append(now - last)
            last = now
        out.append(times)
    return out


def _slowest(per_rank: list) -> list[list]:
    """[rank][size][iter] -> [size][iter], each the slowest rank's time."""
    return [[max(ts) for ts in zip(*sizes)] for sizes in zip(*per_rank)]


# --- disttrain's Ray backends ---------------------------------------------------------

def _run_ray(backend: str, workers: int, sizes_mb, iters) -> list[list]:
    import ray

    from disttrain.workers.coordinator import create_coordinator

    if not ray.is_initialized():  # "local": our own cluster, not one `ray start` left here
        ray.init(address="local", num_cpus=workers + 1, include_dashboard=False,
                 log_to_driver=False,
                 runtime_env={"env_vars": {**thread_env(), "PYTHONPATH": str(REPO)}})
    coordinator = create_coordinator(workers, timeout_s=120.0)
    actor = ray.remote(num_cpus=0)(_BenchWorker)
    group = [actor.remote() for _ in range(workers)]
    secret = os.urandom(16).hex()
    kw = {}
    if backend == "coordinator-objstore":
        backend, kw = "coordinator", {"shared_memory": False}
    elif backend == "ring-integrity":  # what the ring costs across nodes, measured on one
        backend, kw = "ring", {"integrity": True}
    elif backend == "coordinator-pinned":  # buffers as DDP's buckets: no copy in
        backend, kw = "coordinator", {"pinned": True}
    try:
        ray.get([w.setup.remote(backend, r, workers, coordinator, secret, kw)
                 for r, w in enumerate(group)])
        per_rank = ray.get([w.time.remote(list(sizes_mb), iters) for w in group])
        ray.get([w.close.remote() for w in group])
    finally:
        for handle in (*group, coordinator):
            ray.kill(handle)
    return _slowest(per_rank)


class _BenchWorker:
    """One rank of a Ray benchmark: builds its communicator, then times all-reduces."""

    def setup(self, backend, rank, world_size, coordinator, secret, kw):
        from disttrain.workers.comm import make_communicator

        self.pinned = kw.pop("pinned", False)
        if backend in RAW_TCP:
            from disttrain.workers.comm.ring import RayRendezvous

            self.comm = RawTcp(backend, rank, world_size, RayRendezvous(coordinator), secret)
            return
        self.comm = make_communicator(backend, rank=rank, world_size=world_size,
                                      coordinator=coordinator, secret=secret, timeout_s=120.0,
                                      **kw)

    def time(self, sizes_mb, iters):
        def pinned(numel):
            buffers = self.comm.bucket_buffers([(numel, np.float32)])
            if buffers is None:
                raise RuntimeError("coordinator-pinned: the ranks got no shared memory")
            return buffers[0]

        return _time_allreduce(self.comm.allreduce_, self.comm.barrier, sizes_mb, iters,
                               pinned if self.pinned else None)

    def close(self):
        self.comm.close()


class RawTcp:
    """Raw TCP between ranks as the ring connects them (rank r to r+1), for the link's rows.

    `allreduce_(buf)` moves bytes and sums nothing: in "tcp-oneway" rank 0 sends `buf` to
    rank 1, which answers one byte when it has all of it (so an iteration ends when the
    bytes have arrived, not when they left); in "tcp-both-ways" every rank sends `buf` to
    the next while it receives as many bytes from the previous. Connections are set up as
    the ring's (`tune_socket`) and checked with the job's secret, so a stranger on the port
    cannot take a rank's place.
    """

    TIMEOUT_S = 120.0

    def __init__(self, mode: str, rank: int, world_size: int, rendezvous, secret: str):
        import socket

        from disttrain.workers.comm.ring import kernel_timeouts, node_address, tune_socket

        self.mode, self.rank, self.world_size = mode, rank, world_size
        token = f"{secret}:{(rank - 1) % world_size}".encode()
        host = node_address()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tune_socket(listener)  # accepted sockets inherit the buffer sizes
        listener.bind((host, 0))
        listener.listen(8)
        listener.settimeout(self.TIMEOUT_S)
        rendezvous.publish_address(rank, host, listener.getsockname()[1])
        self.next = socket.create_connection(
            tuple(rendezvous.addresses(self.TIMEOUT_S)[(rank + 1) % world_size]),
            timeout=self.TIMEOUT_S)
        tune_socket(self.next)
        kernel_timeouts(self.next, self.TIMEOUT_S)  # blocking, as the ring's: no poll per call
        self.next.sendall(f"{secret}:{rank}".encode())
        while True:  # the previous rank, proven by the secret; anyone else is dropped
            self.prev, _ = listener.accept()
            kernel_timeouts(self.prev, self.TIMEOUT_S)
            got = bytearray(len(token))
            try:
                self._recv(memoryview(got))
            except OSError:
                got = b""
            if bytes(got) == token:
                break
            self.prev.close()
        listener.close()
        self._spare: np.ndarray | None = None

    def _recv(self, view: memoryview) -> None:
        from disttrain.workers.comm.ring import recv_exactly

        recv_exactly(self.prev, view)  # as the ring receives: MSG_WAITALL

    def allreduce_(self, buf: np.ndarray) -> None:
        """Move buf's bytes as the mode says (the name lets _time_allreduce time it)."""
        import threading

        view = memoryview(buf).cast("B")
        if self.mode == "tcp-oneway":
            if self.rank == 0:
                self.next.sendall(view)
            elif self.rank == 1:
                self._recv(view)
            if self.rank != 1:  # the acknowledgement goes from rank 1 round to rank 0
                self._recv(memoryview(bytearray(1)))
            if self.rank != 0:
                self.next.sendall(b"k")
            return
        if self._spare is None or self._spare.nbytes != buf.nbytes:
            self._spare = np.empty_like(buf)  # received into, so the sent bytes stay intact
        failed: list = []
        sender = threading.Thread(target=self._send, args=(view, failed))
        sender.start()
        self._recv(memoryview(self._spare).cast("B"))
        sender.join()
        if failed:
            raise failed[0]

    def _send(self, view: memoryview, failed: list) -> None:
        try:
            self.next.sendall(view)
        except OSError as e:
            failed.append(e)

    def barrier(self) -> None:
        """W - 1 rounds of one byte to the next, one from the previous: all have arrived."""
        for _ in range(self.world_size - 1):
            self.next.sendall(b"b")
            self._recv(memoryview(bytearray(1)))

    def close(self) -> None:
        """Close both connections."""
        self.next.close()
        self.prev.close()


# --- MPICH through mpi4py, under mpiexec ----------------------------------------------

def _mpiexec() -> str:
    # The mpich wheel's mpiexec first: it matches the MPI library mpi4py was built against.
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else "mpiexec"


def _run_child(backend: str, workers: int, sizes_mb, iters) -> list[list]:
    cmd = [_mpiexec(), "-n", str(workers), sys.executable, "-m", "disttrain.bench.allreduce",
           "--child", backend, "--sizes", ",".join(map(str, sizes_mb)), "--iters", str(iters)]
    out = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT_S, check=True).stdout
    return last_json_line(out)


def _mpi_child(backend: str, sizes_mb, iters) -> None:
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if backend == "mpi":
        from disttrain.workers.comm.mpi import MPICommunicator

        allreduce = MPICommunicator(timeout_s=120.0).allreduce_
    else:
        def allreduce(buf):
            world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    times = _time_allreduce(allreduce, world.Barrier, sizes_mb, iters)
    per_rank = world.gather(times, root=0)
    if world.Get_rank() == 0:
        print_result(_slowest(per_rank))


# --- gloo through torch.distributed ---------------------------------------------------

def _run_gloo(workers: int, sizes_mb, iters) -> list[list]:
    args = ["--child", "gloo", "--sizes", ",".join(map(str, sizes_mb)), "--iters", str(iters)]
    return run_gloo_children("disttrain.bench.allreduce", args, workers, CHILD_TIMEOUT_S)


def _gloo_child(sizes_mb, iters) -> None:
    import torch

    with gloo_group() as dist:
        def allreduce(buf):
            dist.all_reduce(torch.from_numpy(buf))

        times = _time_allreduce(allreduce, dist.barrier, sizes_mb, iters)
        per_rank = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, times)
        if dist.get_rank() == 0:
            print_result(_slowest(per_rank))


# --- the report -----------------------------------------------------------------------

def bus_factor(backend: str, workers: int) -> float:
    """busbw / algbw: 2(W-1)/W for an all-reduce, 1 for a raw stream (its bytes cross one
    link one way)."""
    return 1.0 if backend in RAW_TCP else 2 * (workers - 1) / workers


def allreduce_row(backend: str, workers: int, size_mb: float, times: list) -> dict:
    """One table row from the per-iteration seconds of one (backend, size)."""
    nbytes = int(size_mb * 2**20)
    stats = timing_stats(times)
    median, best = stats["median"], stats["min"]
    bus = bus_factor(backend, workers)
    return {"backend": backend, "workers": workers, "size_mb": size_mb, "iters": stats["n"],
            "median_ms": round(median * 1e3, 3), "min_ms": round(best * 1e3, 3),
            "max_ms": round(max(times) * 1e3, 3),
            "algbw_median_gb_s": round(nbytes / median / 1e9, 3),
            "algbw_best_gb_s": round(nbytes / best / 1e9, 3),
            "busbw_median_gb_s": round(bus * nbytes / median / 1e9, 3),
            "busbw_best_gb_s": round(bus * nbytes / best / 1e9, 3)}


def add_ratios(rows: list[dict]) -> list[dict]:
    """Each row's median busbw over tcp-oneway's and its median speed-up over gloo, at the
    same size (None where that peer did not run)."""
    def median_of(name, size):
        return next((r for r in rows if r["backend"] == name and r["size_mb"] == size), None)

    for row in rows:
        oneway, gloo = median_of("tcp-oneway", row["size_mb"]), median_of("gloo", row["size_mb"])
        row["vs_tcp_oneway"] = None if oneway is None else round(
            row["busbw_median_gb_s"] / oneway["busbw_median_gb_s"], 3)
        row["vs_gloo"] = None if gloo is None else round(gloo["median_ms"] / row["median_ms"], 3)
    return rows


HEADER = ["backend", "workers", "size MB", "iters", "median ms", "min ms", "GB/s med",
          "GB/s best", "bus GB/s", "x oneway", "x gloo"]
WIDTHS = [22, 8, 9, 6, 11, 9, 10, 11, 10, 10, 8]


def format_rows(rows: list[dict]) -> str:
    """Rows as an aligned text table, grouped by size."""
    def ratio(x):
        return "-" if x is None else f"{x:.2f}"

    body = [[r["backend"], r["workers"], f"{r['size_mb']:g}", r["iters"], f"{r['median_ms']:.2f}",
             f"{r['min_ms']:.2f}", f"{r['algbw_median_gb_s']:.2f}",
             f"{r['algbw_best_gb_s']:.2f}", f"{r['busbw_median_gb_s']:.2f}",
             ratio(r.get("vs_tcp_oneway")), ratio(r.get("vs_gloo"))]
            for r in sorted(rows, key=lambda r: r["size_mb"])]
    return format_table(HEADER, body, WIDTHS) + (
        "\nGB/s: algorithm bandwidth, bytes / time; bus GB/s: median algbw * 2(W-1)/W for an "
        "all-reduce (what each link carries each way), bytes / time for a tcp row; x oneway: "
        "bus GB/s over tcp-oneway's; x gloo: gloo's median time over the row's")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for the chosen backends and print one table."""
    parser = argparse.ArgumentParser(prog="disttrain bench allreduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="all",
                        help=f"comma-separated from {', '.join(DISTTRAIN)} (and "
                             "coordinator-objstore: the coordinator without shared memory, "
                             "coordinator-pinned: its buffers in pinned shared memory, as "
                             "DDP's buckets), "
                             "or 'all'; ring-integrity is the ring with its per-frame HMAC on, "
                             "as between nodes (on one node it is off)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", default="1,16,64", help="buffer sizes in MB, e.g. 1,16,64")
    parser.add_argument("--iters", type=int, default=10, help="timed all-reduces per size "
                        "and round (after 3 untimed)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every backend this many times, interleaved; the table "
                             "pools the iterations of all rounds")
    parser.add_argument("--references", default=",".join(REFERENCES),
                        help="peers timed in the same run: tcp-oneway,tcp-both-ways,mpi4py,"
                             "gloo (or 'none')")
    parser.add_argument("--json", help="also write the rows and machine info to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    from . import allreduce_hosts

    allreduce_hosts.add_arguments(parser)
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    sizes = [int(s) if s.is_integer() else s for s in sizes]
    if args.hosts:
        return allreduce_hosts.main(args, sizes)
    if args.child in ("mpi", "mpi4py"):
        _mpi_child(args.child, sizes, args.iters)
        return 0
    if args.child == "gloo":
        _gloo_child(sizes, args.iters)
        return 0
    os.environ.update(thread_env())  # the Ray workers started from here inherit it
    names = list(DISTTRAIN) if args.backend == "all" else args.backend.split(",")
    refs = [] if args.references in ("", "none") else args.references.split(",")
    names += [r for r in refs if r not in names]
    start = machine()
    pooled: dict = {(n, mb): [] for n in names for mb in sizes}
    failures = []
    for _ in range(args.rounds):
        for name in names:
            try:
                for mb, times in zip(sizes, run(name, args.workers, sizes, args.iters)):
                    pooled[(name, mb)] += times
            except (subprocess.SubprocessError, RuntimeError, OSError) as e:
                failures.append(f"{name}: {e}")
    end = machine()
    rows = add_ratios([allreduce_row(n, args.workers, mb, ts)
                       for (n, mb), ts in pooled.items() if ts])
    print(format_rows(rows))
    print(f"\n{thread_note()} in every process; "
          f"{start['nproc']} cores ({start['usable_cpus']} usable), {start['cpu'] or '?'}; "
          f"load average {start['loadavg']} at start, {end['loadavg']} at end; "
          f"{args.rounds} round(s) x {args.iters} iterations, {args.workers} workers, float32")
    for f in failures:
        print(f"FAILED {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rows": rows, "machine_start": start, "machine_end": end, "failures": failures,
             "argv": argv if argv is not None else sys.argv[1:]}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
