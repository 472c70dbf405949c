"""All-reduce benchmark: disttrain's backends side by side with MPICH (mpi4py) and gloo (torch).

Each row is the mean time of one in-place sum of a float32 buffer across `workers`
processes on this machine, and the algorithm bandwidth bytes / time. The slowest rank's
mean counts. Every process runs with OPENBLAS_NUM_THREADS=1.

    python -m bench.allreduce --backend all --workers 2 --sizes 1,16,64
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("coordinator", "ring", "mpi", "mpi4py", "gloo")
ENV = {"OPENBLAS_NUM_THREADS": "1"}
WARMUP = 3


def run(backend: str, workers: int = 2, sizes_mb=(1, 16, 64), iters: int = 10) -> list[dict]:
    """Time `iters` all-reduces per size; one row per size."""
    if backend in ("coordinator", "ring"):
        times = _run_ray(backend, workers, sizes_mb, iters)
    elif backend in ("mpi", "mpi4py"):
        times = _run_child(["mpiexec", "-n", str(workers)], backend, workers, sizes_mb, iters)
    elif backend == "gloo":
        times = _run_gloo(workers, sizes_mb, iters)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return [_row(backend, workers, mb, t) for mb, t in zip(sizes_mb, times)]


def _row(backend: str, workers: int, size_mb: float, seconds: float) -> dict:
    nbytes = int(size_mb * 2**20)
    return {"backend": backend, "workers": workers, "size_mb": size_mb,
            "time_ms": round(seconds * 1e3, 3), "algbw_gb_s": round(nbytes / seconds / 1e9, 3),
            "openblas_num_threads": ENV["OPENBLAS_NUM_THREADS"]}


def _time_allreduce(allreduce, barrier, sizes_mb, iters) -> list[float]:
    """Mean seconds per all-reduce for each size, measured in this process."""
    out = []
    for mb in sizes_mb:
        buf = np.ones(int(mb * 2**20) // 4, np.float32)
        for _ in range(WARMUP):
            allreduce(buf)
        barrier()
        start = time.perf_counter()
        for _ in range(iters):
            allreduce(buf)
        out.append((time.perf_counter() - start) / iters)
    return out


# --- disttrain's Ray backends ---------------------------------------------------------

def _run_ray(backend: str, workers: int, sizes_mb, iters) -> list[float]:
    import ray

    from workers.coordinator import create_coordinator

    if not ray.is_initialized():
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {**ENV, "PYTHONPATH": str(REPO)}})
    coordinator = create_coordinator(workers, timeout_s=120.0)
    actor = ray.remote(num_cpus=0)(_BenchWorker)
    group = [actor.remote() for _ in range(workers)]
    secret = os.urandom(16).hex()
    ray.get([w.setup.remote(backend, r, workers, coordinator, secret)
             for r, w in enumerate(group)])
    per_rank = ray.get([w.time.remote(list(sizes_mb), iters) for w in group])
    ray.get([w.close.remote() for w in group])
    for handle in (*group, coordinator):
        ray.kill(handle)
    return [max(ts) for ts in zip(*per_rank)]


class _BenchWorker:
    """One rank of a Ray benchmark: builds its communicator, then times all-reduces."""

    def setup(self, backend, rank, world_size, coordinator, secret):
        from workers.backends import make_communicator

        self.comm = make_communicator(backend, rank=rank, world_size=world_size,
                                      coordinator=coordinator, secret=secret, timeout_s=120.0)

    def time(self, sizes_mb, iters):
        return _time_allreduce(self.comm.allreduce_, self.comm.barrier, sizes_mb, iters)

    def close(self):
        self.comm.close()


# --- MPICH through mpi4py, under mpiexec ----------------------------------------------

def _run_child(prefix: list, backend: str, workers: int, sizes_mb, iters) -> list[float]:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    prefix = [str(mpiexec) if mpiexec.exists() else prefix[0], *prefix[1:]]
    cmd = [*prefix, sys.executable, "-m", "bench.allreduce", "--child", backend,
           "--sizes", ",".join(map(str, sizes_mb)), "--iters", str(iters)]
    out = subprocess.run(cmd, cwd=REPO, env=_child_env(), capture_output=True, text=True,
                         timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _mpi_child(backend: str, sizes_mb, iters) -> None:
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if backend == "mpi":
        from workers.mpi_comm import MPICommunicator

        comm = MPICommunicator(timeout_s=120.0)
        allreduce = comm.allreduce_
    else:
        def allreduce(buf):
            world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    times = _time_allreduce(allreduce, world.Barrier, sizes_mb, iters)
    slowest = [world.allreduce(t, op=MPI.MAX) for t in times]
    if world.Get_rank() == 0:
        print(json.dumps(slowest))


# --- gloo through torch.distributed ---------------------------------------------------

def _run_gloo(workers: int, sizes_mb, iters) -> list[float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(workers):
        env = {**_child_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "WORLD_SIZE": str(workers)}
        cmd = [sys.executable, "-m", "bench.allreduce", "--child", "gloo",
               "--sizes", ",".join(map(str, sizes_mb)), "--iters", str(iters)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"gloo benchmark failed: exit codes {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def _gloo_child(sizes_mb, iters) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")

    def allreduce(buf):
        dist.all_reduce(torch.from_numpy(buf))

    times = _time_allreduce(allreduce, dist.barrier, sizes_mb, iters)
    slowest = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        print(json.dumps(slowest.tolist()))
    dist.destroy_process_group()


def _child_env() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **ENV, "PYTHONPATH": path}


# --- the table ------------------------------------------------------------------------

def format_table(rows: list[dict]) -> str:
    """Rows as an aligned text table."""
    head = f"{'backend':<12}{'workers':>8}{'size MB':>9}{'time ms':>10}{'GB/s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['backend']:<12}{r['workers']:>8}{r['size_mb']:>9g}"
                     f"{r['time_ms']:>10.2f}{r['algbw_gb_s']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for the chosen backends and print one table."""
    parser = argparse.ArgumentParser(prog="disttrain bench allreduce", description=__doc__)
    parser.add_argument("--backend", default="all",
                        help=f"comma-separated, from {', '.join(BACKENDS)}, or 'all'")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", default="1,16,64", help="buffer sizes in MB, e.g. 1,16,64")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    sizes = [int(s) if s.is_integer() else s for s in sizes]
    if args.child in ("mpi", "mpi4py"):
        _mpi_child(args.child, sizes, args.iters)
        return 0
    if args.child == "gloo":
        _gloo_child(sizes, args.iters)
        return 0
    os.environ.update(ENV)
    names = BACKENDS if args.backend == "all" else args.backend.split(",")
    rows = []
    for name in names:
        rows += run(name, args.workers, sizes, args.iters)
    print(format_table(rows))
    print(f"OPENBLAS_NUM_THREADS={ENV['OPENBLAS_NUM_THREADS']} in every process; "
          f"{os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
