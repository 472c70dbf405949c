"""Data-parallel scaling: disttrain on 1 and 2 workers beside PyTorch DDP (gloo).

An MLP 784-1024-1024-10 (ReLU), global batch 512, float32, SGD with momentum 0.9,
synthetic data, one BLAS thread per worker. disttrain runs the path a user runs: a job
file with data.name = "synthetic", trained by `python -m disttrain.launch.cli train JOB
--run-dir RUN --quiet` in a subprocess (a local Ray cluster it starts, or mpiexec for
--backend mpi); samples/s, compute and exposed all-reduce wait come from RUN/metrics.jsonl
(rank 0), warm-up intervals dropped. PyTorch runs torch.nn.parallel.DistributedDataParallel
on gloo in W subprocesses with torch.set_num_threads(1); its exposed communication is the
step time minus the step time of the same step under no_sync() (no all-reduce), both
measured in alternating blocks.

'ceiling' is the scaling the same machine would give if communication cost nothing, measured
alike for both systems: the 1-worker step over the step of W processes stepping 1/W of the
batch each at the same time with no all-reduce at all (torch: the no_sync step of the same
DDP processes; disttrain: W one-process jobs, backend local, run at once). Both count the
cores the W processes share, not the communication.

Step time is zero_grad + forward + backward (with the all-reduce) + optimizer step, for
both systems; data loading and logging are outside it. On a 2-core machine, 2 workers x 1
thread is the ideal setup: one core each. The Ray coordinator, raylet and the gloo
threads share those two cores, so communication competes with compute for CPU.

    disttrain bench scaling --workers 1,2 --steps 40 --warmup 10 --backend coordinator

A backend named with "+sharded" (coordinator+sharded, ring+sharded, mpi+sharded) runs the
same job with [distributed] shard_optimizer = true (ZeRO stage 1), so the table shows it
beside the unsharded backend measured in the same invocation.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import (
    REPO,
    child_env,
    format_table,
    gloo_group,
    load_average,
    machine_facts,
    print_and_save,
    print_result,
    run_gloo_children,
    thread_note,
)

SYSTEMS = ("disttrain", "torch")
BACKENDS = ("coordinator", "ring", "mpi")
SHARDED = "+sharded"  # a backend name's suffix: the same job with shard_optimizer = true
TARGET_SCALING = 1.8
LR, MOMENTUM = 0.01, 0.9
CHILD_TIMEOUT_S = 1800


# --- disttrain: the real job path ----------------------------------------------------------

def job_dict(workers: int, backend: str, sizes, batch: int, steps: int, warmup: int,
             log_every: int) -> dict:
    """The benchmark job; one epoch of synthetic data covers the warm-up and timed steps."""
    backend, sharded = backend.removesuffix(SHARDED), backend.endswith(SHARDED)
    total = warmup + steps
    train = total * batch + batch  # one spare batch: the sampler rounds down to W
    n_val = 2 * batch
    return {
        "job": {"name": f"bench-scaling-{backend}-{workers}", "seed": 0, "epochs": 1,
                "max_steps": total, "batch_size": batch, "dtype": "float32",
                "log_every": log_every, "eval_every_epoch": False, "blas_threads": 1},
        "model": {"kind": "mlp", "sizes": list(sizes), "activation": "relu"},
        "data": {"name": "synthetic", "n_samples": train + n_val, "n_features": sizes[0],
                 "n_classes": sizes[-1], "val_fraction": n_val / (train + n_val),
                 "shuffle": True},
        "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM},
        "distributed": {"backend": backend, "workers": workers, "cpus_per_worker": 1,
                        "timeout_s": 300, "max_restarts": 0, "shard_optimizer": sharded},
    }


def run_disttrain(workers: int, backend: str, sizes, batch, steps, warmup, log_every,
                  run_dir: Path) -> dict:
    """Train the job as a user does (`disttrain train`); the timed intervals of its metrics."""
    from disttrain.train.rundir import read_metrics

    train_job(job_dict(workers, backend, sizes, batch, steps, warmup, log_every), run_dir)
    records = [r for r in read_metrics(run_dir) if "loss" in r]
    # a record covers the log_every steps before it: keep those wholly after the warm-up
    timed = [r for r in records if r["step"] - log_every >= warmup]
    if not timed:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no record after step {warmup}")
    n = len(timed) * log_every
    compute = sum(r["compute_s"] for r in timed) / n
    comm = sum(r["comm_s"] for r in timed) / n
    intervals = [r["samples_per_s"] for r in timed]
    return {"system": "disttrain", "backend": backend, "workers": workers, "steps": n,
            "samples_per_s": batch / (compute + comm), "interval_samples_per_s": intervals,
            "step_ms": (compute + comm) * 1e3, "compute_ms": compute * 1e3,
            "comm_ms": comm * 1e3,
            "spread": spread([(r["compute_s"] + r["comm_s"]) * 1e3 / log_every for r in timed],
                             [r["comm_s"] * 1e3 / log_every for r in timed])}


def deciles(values: list) -> list:
    """The 10th, 50th and 90th percentiles of values (the nearest ranks)."""
    values = sorted(values)
    return [values[round(q * (len(values) - 1))] for q in (0.1, 0.5, 0.9)]


def spread(step_ms: list, comm_ms: list) -> dict:
    """Deciles of the per-interval step and comm wait (per step), to tell a slower step
    from a noisier one: on shared cores a synchronous step waits for the slower rank."""
    return {"step_ms": deciles(step_ms), "comm_ms": deciles(comm_ms), "n": len(step_ms)}


def run_disttrain_alone(workers: int, sizes, batch, steps, warmup, log_every,
                        run_dir: Path) -> float:
    """Milliseconds of a step of `workers` processes computing 1/W of the batch each at the
    same time with no communication (W one-process jobs at once); the slowest one's."""
    from disttrain.train.rundir import read_metrics

    local = batch // workers
    runs = [run_dir / f"alone-{i}" for i in range(workers)]
    children = [start_job(job_dict(1, "local", sizes, local, steps, warmup, log_every), run)
                for run in runs]
    for child in children:
        wait_job(child)
    slowest = 0.0
    for run in runs:
        timed = [r for r in read_metrics(run) if "loss" in r and r["step"] - log_every >= warmup]
        if not timed:
            raise RuntimeError(f"{run}/metrics.jsonl has no record after step {warmup}")
        slowest = max(slowest, sum(r["compute_s"] + r["comm_s"] for r in timed)
                      / (len(timed) * log_every))
    return slowest * 1e3


def train_job(job: dict, run_dir: Path) -> None:
    """Write job as RUN.toml beside run_dir and train it through the CLI into run_dir."""
    wait_job(start_job(job, run_dir))


def start_job(job: dict, run_dir: Path) -> subprocess.Popen:
    """Write job as RUN.toml beside run_dir and start training it through the CLI."""
    from disttrain.train.spec import dump_job, spec_from_dict

    # launch is run, not imported: its API is not bench's to lean on, and the CLI is
    # the path users take (it starts Ray, or mpiexec for backend mpi, itself)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    job_file = run_dir.with_suffix(".toml")
    job_file.write_text(dump_job(spec_from_dict(job)))
    cmd = [sys.executable, "-m", "disttrain.launch.cli", "train", str(job_file),
           "--run-dir", str(run_dir), "--quiet"]
    # RAY_ADDRESS=local: a Ray cluster of the job's own, never one `ray start` left on this
    # machine (its CPUs are not the ones this benchmark describes)
    child = subprocess.Popen(cmd, cwd=REPO, env=child_env(RAY_ADDRESS="local"), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.cmd = cmd
    return child


def wait_job(child: subprocess.Popen) -> None:
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise RuntimeError(f"{' '.join(child.cmd)} ran over {CHILD_TIMEOUT_S} s") from None
    if child.returncode:
        raise RuntimeError(f"{' '.join(child.cmd)} exited {child.returncode}\n"
                           f"{out[-2000:]}{err[-2000:]}")


# --- PyTorch DDP on gloo, one subprocess per rank -----------------------------------------

def run_torch(workers: int, sizes, batch, steps, warmup, blocks: int = 4) -> dict:
    """torch DDP on `workers` local processes; step, no_sync step and samples/s (rank max)."""
    args = ["--child", "torch", "--sizes", ",".join(map(str, sizes)), "--batch", str(batch),
            "--steps", str(steps), "--warmup", str(warmup), "--blocks", str(blocks)]
    step_s, compute_s, *step_deciles = run_gloo_children("disttrain.bench.scaling", args, workers,
                                                    CHILD_TIMEOUT_S)
    comm_s = max(step_s - compute_s, 0.0)
    return {"system": "torch", "backend": "gloo", "workers": workers, "steps": steps,
            "samples_per_s": batch / step_s, "step_ms": step_s * 1e3,
            "compute_ms": compute_s * 1e3, "comm_ms": comm_s * 1e3,
            "alone_ms": compute_s * 1e3,  # the no_sync step: no all-reduce at all
            "spread": {"step_ms": [d * 1e3 for d in step_deciles], "comm_ms": None,
                       "n": max(1, steps // blocks) * blocks}}  # as _ddp_step_medians


def _torch_child(sizes, batch: int, steps: int, warmup: int, blocks: int) -> None:
    with gloo_group() as dist:
        medians = _ddp_step_medians(dist, sizes, batch, steps, warmup, blocks)
        if dist.get_rank() == 0:
            print_result(medians)


def _ddp_step_medians(dist, sizes, batch: int, steps: int, warmup: int, blocks: int) -> list:
    """Slowest rank's median seconds of a DDP step and of the same step under no_sync()."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(fan_in, fan_out)]
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = DDP(torch.nn.Sequential(*layers))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(rank)
    local = batch // world
    data = [(torch.from_numpy(rng.standard_normal((local, sizes[0]), dtype=np.float32)),
             torch.from_numpy(rng.integers(0, sizes[-1], local))) for _ in range(8)]

    def step(i):
        x, y = data[i % len(data)]
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    for i in range(warmup):
        step(i)
    synced, local_only = [], []
    per_block = max(1, steps // blocks)
    for _ in range(blocks):
        dist.barrier()
        synced += [step(i) for i in range(per_block)]
        with model.no_sync():
            local_only += [step(i) for i in range(per_block)]
    # the slowest rank's median counts, as in bench/allreduce.py; then its deciles
    medians = torch.tensor([statistics.median(synced), statistics.median(local_only),
                            *deciles(synced)], dtype=torch.float64)
    dist.all_reduce(medians, op=dist.ReduceOp.MAX)
    return medians.tolist()


# --- the tables -------------------------------------------------------------------------------

def with_scaling(rows: list[dict]) -> list[dict]:
    """Add 'scaling': samples/s over the same system+backend's 1-worker samples/s; and
    'ceiling': the scaling with communication free, the 1-worker step with no all-reduce
    over the step of W processes computing 1/W of the batch each with none ('alone_ms')."""
    base = {(r["system"], r["backend"]): r for r in rows if r["workers"] == 1}
    for r in rows:
        one = base.get((r["system"], r["backend"]))
        r["scaling"] = r["samples_per_s"] / one["samples_per_s"] if one else None
        r["ceiling"] = one["alone_ms"] / r["alone_ms"] if one and r.get("alone_ms") else None
    return rows


def summarize_repeats(runs: list[list[dict]]) -> list[dict]:
    """One row per (system, backend, workers): median and min over repeats of each figure."""
    groups: dict = {}
    for rows in runs:
        for r in rows:
            groups.setdefault((r["system"], r["backend"], r["workers"]), []).append(r)
    out = []
    for (system, backend, workers), rs in groups.items():
        row = {"system": system, "backend": backend, "workers": workers, "repeats": len(rs)}
        for key in ("samples_per_s", "step_ms", "compute_ms", "comm_ms", "alone_ms", "scaling",
                    "ceiling"):
            values = [r[key] for r in rs if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
            row[key + "_min"] = min(values) if values else None
            row[key + "_max"] = max(values) if values else None
        out.append(row)
    return out


def format_rows(rows: list[dict]) -> str:
    header = ["system", "backend", "workers", "samples/s", "step ms", "compute ms",
              "comm wait ms", "alone ms", "scaling", "ceiling"]
    body = []
    for r in rows:
        scaling = "" if r.get("scaling") is None or r["workers"] == 1 else (
            f"{r['scaling']:.2f}" + (" (ok)" if r["scaling"] >= TARGET_SCALING else " (MISS)"))
        ceiling = "" if r.get("ceiling") is None or r["workers"] == 1 else f"{r['ceiling']:.2f}"
        body.append([r["system"], r["backend"], r["workers"], f"{r['samples_per_s']:.0f}",
                     f"{r['step_ms']:.1f}", f"{r['compute_ms']:.1f}", f"{r['comm_ms']:.1f}",
                     f"{r['alone_ms']:.1f}", scaling, ceiling])
    return format_table(header, body)


def format_spread(rows: list[dict], log_every: int) -> str:
    """Per-step deciles of each row, and the scaling of the 10th-percentile steps: what the
    machine gives in the steps no other process slowed down."""
    base = {(r["system"], r["backend"]): r for r in rows if r["workers"] == 1}
    header = ["system", "backend", "workers", "steps", "step ms p10/p50/p90",
              "comm wait ms p10/p50/p90", "scaling at p10"]
    body = []
    for r in rows:
        s = r.get("spread")
        if not s:
            continue
        one = base.get((r["system"], r["backend"]), {}).get("spread")
        at_p10 = ("" if r["workers"] == 1 or not one else
                  f"{one['step_ms'][0] / s['step_ms'][0]:.2f}")
        comm = "" if s["comm_ms"] is None else "/".join(f"{v:.1f}" for v in s["comm_ms"])
        body.append([r["system"], r["backend"], r["workers"], s["n"],
                     "/".join(f"{v:.1f}" for v in s["step_ms"]), comm, at_p10])
    unit = "each step" if log_every == 1 else f"intervals of {log_every} steps, per step"
    return (format_table(header, body) + f"\ndisttrain: rank 0's {unit} (--log-every 1 for "
            "single steps); torch: single synced steps, the slowest rank's deciles")


def format_summary(rows: list[dict]) -> str:
    header = ["system", "backend", "workers", "samples/s med [min-max]", "scaling med [min-max]",
              "ceiling med [min-max]"]
    body = []
    for r in rows:
        spread = [("" if r["workers"] == 1 or r[key] is None else
                   f"{r[key]:.2f} [{r[key + '_min']:.2f}-{r[key + '_max']:.2f}]")
                  for key in ("scaling", "ceiling")]
        body.append([r["system"], r["backend"], r["workers"],
                     f"{r['samples_per_s']:.0f} [{r['samples_per_s_min']:.0f}-"
                     f"{r['samples_per_s_max']:.0f}]", *spread])
    return format_table(header, body)


def run(workers=(1, 2), backends=("coordinator",), systems=SYSTEMS,
        sizes=(784, 1024, 1024, 10), batch=512, steps=40, warmup=10, log_every=5, repeats=1,
        run_root: Path | None = None, log=print) -> dict:
    """Every (repeat, system, backend, workers) run; rows with scaling, and a summary."""
    steps = math.ceil(steps / log_every) * log_every
    warmup = math.ceil(warmup / log_every) * log_every
    for w in workers:
        if batch % w:
            raise ValueError(f"--batch {batch} is not divisible by {w} workers")
    result = {"load_start": load_average(), "machine": machine_facts(), "sizes": list(sizes),
              "batch": batch, "steps": steps, "warmup": warmup, "log_every": log_every,
              "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        root = Path(run_root or tmp)
        for repeat in range(repeats):
            rows, alone = [], {}
            for system in systems:
                for backend in (backends if system == "disttrain" else ("gloo",)):
                    for w in workers:
                        log(f"repeat {repeat + 1}/{repeats}: {system} {backend} {w} worker(s)",
                            file=sys.stderr)
                        if system == "disttrain":
                            if w not in alone:  # once per repeat, shared by the backends
                                alone[w] = run_disttrain_alone(w, sizes, batch, steps, warmup,
                                                               log_every,
                                                               root / f"r{repeat}-alone-{w}")
                            rows.append(run_disttrain(w, backend, sizes, batch, steps, warmup,
                                                      log_every,
                                                      root / f"r{repeat}-{backend}-{w}"))
                            rows[-1]["alone_ms"] = alone[w]
                        else:
                            rows.append(run_torch(w, sizes, batch, steps, warmup))
            result["runs"].append(with_scaling(rows))
    result["summary"] = summarize_repeats(result["runs"])
    result["load_end"] = load_average()
    return result


def report(result: dict) -> str:
    sizes = "-".join(map(str, result["sizes"]))
    lines = [*result["machine"],
             "threads: disttrain workers run threadpool_limits(1) ([job] blas_threads = 1); "
             "torch ranks torch.set_num_threads(1); every child "
             f"{thread_note()}",
             f"load average at start: {result['load_start']}; at end: {result['load_end']}",
             "",
             f"MLP {sizes} (ReLU), global batch {result['batch']}, float32, SGD lr={LR} "
             f"momentum={MOMENTUM}; {result['steps']} timed steps after {result['warmup']} "
             "warm-up; per-step times are means over the timed steps (torch: medians), "
             "rank 0 (torch: slowest rank)"]
    for i, rows in enumerate(result["runs"]):
        lines += ["", f"run {i + 1} of {len(result['runs'])}", format_rows(rows), "",
                  format_spread(rows, result.get("log_every", 1))]
    if len(result["runs"]) > 1:
        lines += ["", "over the runs", format_summary(result["summary"])]
    lines += ["", f"target: scaling (2 workers / 1 worker samples/s) >= {TARGET_SCALING}. "
              f"This machine has {os.cpu_count() or 1} cores: 2 workers x 1 BLAS thread is the "
              "ideal setup, one core each, with the coordinator/raylet/gloo threads on the same "
              "cores. 'comm wait' is the all-reduce time backward's end waited for "
              "(disttrain: measured by DDP; torch: step minus no_sync step). 'alone ms' is a "
              "step of W processes computing 1/W of the batch each at once with no all-reduce "
              "at all (torch: the no_sync step; disttrain: W one-process jobs run at once), "
              "and 'ceiling' the 1-worker alone ms over the W-worker one: the scaling with "
              "communication free, measured alike for both systems in the same run."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the scaling benchmark and print its tables (and write JSON with --json)."""
    parser = argparse.ArgumentParser(prog="disttrain bench scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2")
    parser.add_argument("--backend", default="coordinator",
                        help=f"disttrain backends, comma-separated, from {', '.join(BACKENDS)}; "
                        f"NAME{SHARDED} shards the optimizer (ZeRO stage 1)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="disttrain, torch or both")
    parser.add_argument("--sizes", default="784,1024,1024,10", help="MLP layer widths")
    parser.add_argument("--batch", type=int, default=512, help="global batch size")
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--log-every", type=int, default=5,
                        help="disttrain metrics interval; steps and warmup round up to it")
    parser.add_argument("--repeats", type=int, default=1, help="run everything this many times")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.child == "torch":
        _torch_child(sizes, args.batch, args.steps, args.warmup, args.blocks)
        return 0
    backends = tuple(args.backend.split(","))
    systems = tuple(args.systems.split(","))
    for name in backends:
        if name.removesuffix(SHARDED) not in BACKENDS:
            parser.error(f"--backend {name!r}: choose from {', '.join(BACKENDS)}, each "
                         f"optionally with {SHARDED}")
    for name in systems:
        if name not in SYSTEMS:
            parser.error(f"--systems {name!r}: choose from {', '.join(SYSTEMS)}")
    result = run(workers=[int(w) for w in args.workers.split(",")], backends=backends,
                 systems=systems, sizes=sizes, batch=args.batch, steps=args.steps,
                 warmup=args.warmup, log_every=args.log_every, repeats=args.repeats)
    return print_and_save(result, report, args.json)


if __name__ == "__main__":
    sys.exit(main())
