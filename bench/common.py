"""Helpers every benchmark shares: machine facts, thread settings, child processes, statistics,
tables.

Children (mpiexec ranks, gloo ranks, `disttrain train` runs) get the environment from
`child_env`, which pins BLAS and OpenMP to a stated number of threads, so what a benchmark
prints about threads is what its processes ran with. gloo children follow one protocol:
`run_gloo_children` starts W copies of `python -m MODULE ARGS` with a fresh rendezvous port
in MASTER_ADDR/MASTER_PORT and RANK/WORLD_SIZE; each child joins with `gloo_group()`; rank 0
prints its result as one JSON line with `print_result`, which the parent returns.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Environment variables that change how BLAS and OpenMP behave; printed with the figures.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CHILD_THREADS = 1  # every child process of a benchmark: one BLAS/OpenMP thread


# --- machine facts -----------------------------------------------------------------------------

def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict:
    """What the figures depend on: CPU, cores, load, Python and library versions, BLAS env."""
    import numpy as np

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"nproc": os.cpu_count(), "usable_cpus": usable, "cpu": _cpu_name(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": _torch_version(),
            **{k.lower(): os.environ.get(k, "(unset)") for k in BLAS_ENV}}


def machine_facts() -> list[str]:
    """Lines naming the CPU, core count, Python, numpy/torch versions and BLAS settings."""
    m = machine()
    torch = f", torch {m['torch']}" if m["torch"] else ""
    env = ", ".join(f"{k}={m[k.lower()]}" for k in BLAS_ENV)
    return [f"machine: {m['cpu']}, {m['nproc']} logical CPUs, Python {m['python']}, "
            f"numpy {m['numpy']}{torch}",
            f"environment: {env}"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _torch_version() -> str:
    try:
        import torch
    except ImportError:
        return ""
    return torch.__version__


def blas_pools() -> str:
    """What threadpoolctl sees now: 'openblas=1 openmp=1', for printing beside a table."""
    from threadpoolctl import threadpool_info

    return " ".join(f"{p['internal_api']}({p['prefix']})={p['num_threads']}"
                    for p in threadpool_info())


# --- thread settings and child processes --------------------------------------------------------

def thread_env(threads: int = CHILD_THREADS) -> dict:
    """The variables that pin BLAS and OpenMP to `threads` threads in a new process."""
    return {k: str(threads) for k in THREAD_VARS}


def thread_note(threads: int = CHILD_THREADS) -> str:
    """thread_env as printed beside a table: 'OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ...'."""
    return " ".join(f"{k}={v}" for k, v in thread_env(threads).items())


def child_env(threads: int = CHILD_THREADS, **extra: str) -> dict:
    """os.environ with the repository on PYTHONPATH, thread_env(threads), plus extra variables."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **thread_env(threads), "PYTHONPATH": path, **extra}


def last_json_line(text: str):
    """The value a child printed last, as one JSON line (its result)."""
    return json.loads(text.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: a rendezvous for child ranks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_gloo_children(module: str, args: list[str], workers: int, timeout_s: float):
    """Run `python -m module args` as the ranks of one gloo group; rank 0's printed result.

    A crash at exit after rank 0 printed its result does not void it (gloo can abort
    while tearing down); a rank 0 that printed nothing raises RuntimeError with each rank's
    exit code and the end of its stderr.
    """
    port = str(free_port())
    procs = []
    try:
        for rank in range(workers):
            env = child_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank),
                            WORLD_SIZE=str(workers))
            procs.append(subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO,
                                          env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=timeout_s) for p in procs]
    finally:
        for p in procs:  # after a timeout or an error, leave no rank behind
            if p.poll() is None:
                p.kill()
                p.wait()
    if not outs[0][0].strip():
        errors = "\n".join(err[-2000:] for _, err in outs)
        raise RuntimeError(f"{module} gloo children failed: exit codes "
                           f"{[p.returncode for p in procs]}\n{errors}")
    return last_json_line(outs[0][0])


@contextmanager
def gloo_group(threads: int = CHILD_THREADS):
    """In a child of run_gloo_children: torch on `threads` threads, joined to the gloo group.

    Yields torch.distributed; on leaving, every rank meets at a barrier before the group
    is torn down, so no rank closes gloo while another still talks to it.
    """
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo")
    yield dist
    dist.barrier()
    dist.destroy_process_group()


def print_result(result) -> None:
    """Print a child's result (on its rank 0) as the one JSON line its parent reads."""
    print(json.dumps(result), flush=True)


# --- statistics and output ----------------------------------------------------------------------

def timing_stats(samples: list[float]) -> dict:
    """Median, min and count of a list of timings (any unit)."""
    return {"median": statistics.median(samples), "min": min(samples), "n": len(samples)}


def format_table(header: list[str], rows: list[list], widths: list[int] | None = None) -> str:
    """An aligned text table: the first column left-aligned, the rest right-aligned."""
    widths = widths or [max(len(str(c)) for c in col) + 2 for col in zip(header, *rows)]

    def line(cells):
        first, *rest = (str(c) for c in cells)
        return first.ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(rest, widths[1:]))
    out = [line(header), "-" * sum(widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def print_and_save(result: dict, report, json_path: str | None) -> int:
    """Print a benchmark's report; also write its raw result as JSON if asked. Exit code 0."""
    print(report(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return 0
