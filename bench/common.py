"""Helpers shared by the step and scaling benchmarks: machine facts, statistics, tables."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Environment variables that change how BLAS and OpenMP behave; printed, never changed.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts() -> list[str]:
    """Lines naming the CPU, core count, Python, numpy/torch versions and BLAS settings."""
    import numpy as np

    lines = [f"machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, "
             f"Python {platform.python_version()}, numpy {np.__version__}{_torch_version()}"]
    env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in BLAS_ENV)
    lines.append(f"environment: {env}")
    return lines


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
    return f", torch {torch.__version__}"


def blas_pools() -> str:
    """What threadpoolctl sees now: 'openblas=1 openmp=1', for printing beside a table."""
    from threadpoolctl import threadpool_info

    return " ".join(f"{p['internal_api']}({p['prefix']})={p['num_threads']}"
                    for p in threadpool_info())


def summarize(samples: list[float]) -> dict:
    """Median and min of a list of timings (any unit)."""
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


def child_env(**extra: str) -> dict:
    """os.environ with the repository on PYTHONPATH, plus extra variables."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def print_and_save(result: dict, report, json_path: str | None) -> int:
    """Print a benchmark's report; also write its raw result as JSON if asked. Exit code 0."""
    import json

    print(report(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return 0
