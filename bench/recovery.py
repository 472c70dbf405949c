"""What a lost worker costs: an elastic job (min_workers < workers) beside the checkpoint
restart, the same job, the same kill, in one run.

Each job is trained by the real CLI (`python -m disttrain.launch.cli train JOB --run-dir
RUN --quiet` in a subprocess that starts its own local Ray cluster) and logs every step,
so metrics.jsonl has each step's wall-clock `time`. Once RUN/status.json reaches step
--kill-at, rank 1's process is SIGKILLed. From metrics.jsonl:

- lost: seconds from the SIGKILL to the first step past the newest one logged before it
  (what the run could not train in that time, detection and re-forming included);
- recomputed: steps the run did again (the newest logged step before the kill minus the
  step it went on from: the resize's step, or the checkpoint's);
- step: the median seconds per step before the kill, to set `lost` against.

    disttrain bench recovery --workers 3 --kill-at 175 --backend coordinator
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
    load_average,
    machine_facts,
    print_and_save,
    thread_note,
)

CHILD_TIMEOUT_S = 600
CHECKPOINT_EVERY = 50


def job_dict(mode: str, backend: str, workers: int, steps: int, checkpoint_every: int) -> dict:
    """The float64 equivalence job (tests/train/helpers.small_job), logged every step."""
    return {
        "job": {"name": f"bench-recovery-{mode}", "seed": 3, "epochs": 10_000,
                "max_steps": steps, "batch_size": 24, "dtype": "float64", "log_every": 1,
                "checkpoint_every": checkpoint_every, "eval_every_epoch": False,
                "blas_threads": 1},
        "model": {"kind": "mlp", "sizes": [16, 32, 32, 4], "activation": "tanh"},
        "data": {"name": "synthetic", "n_samples": 300, "n_features": 16, "n_classes": 4,
                 "shuffle": True, "val_fraction": 0.2},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "distributed": {"backend": backend, "workers": workers, "cpus_per_worker": 0.5,
                        "min_workers": workers - 1 if mode == "elastic" else 0,
                        "heartbeat_s": 1.0, "timeout_s": 60, "max_restarts": 2},
    }


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def run_and_kill(job: dict, run_dir: Path, kill_at: int) -> dict:
    """Train job through the CLI, SIGKILL rank 1 at step kill_at; the figures above."""
    from disttrain.train.rundir import read_metrics
    from disttrain.train.spec import dump_job, spec_from_dict

    job_file = run_dir.with_suffix(".toml")
    job_file.write_text(dump_job(spec_from_dict(job)))
    cmd = [sys.executable, "-m", "disttrain.launch.cli", "train", str(job_file),
           "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(RAY_ADDRESS="local"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while _status(run_dir).get("step", 0) < kill_at:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the job ended before step {kill_at}: {proc.communicate()[1]}")
        time.sleep(0.01)
    before_kill = _status(run_dir)
    victim = next(w for w in before_kill["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    killed = time.time()
    # The newest step logged before the kill: metrics.jsonl's records timed before it, or
    # status.json's step as read just before it (a restart drops metrics.jsonl's records
    # past its checkpoint and logs those steps again; status.json lags by a drain, 0.5 s).
    last = before_kill["step"]
    _, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"the job failed after the kill: {err[-2000:]}")
    records = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    before = [r for r in records if r["time"] < killed]
    last = max([last, *(r["step"] for r in before)])
    after = next(r for r in records if r["step"] > last)
    final = _status(run_dir)
    resizes = final.get("resizes", [])
    went_on_from = resizes[0]["step"] if resizes else final["resumed_from_step"]
    steps = [b["time"] - a["time"] for a, b in zip(before, before[1:])]
    with np.load(run_dir / "final" / "model.npz") as npz:
        params = {k: npz[k] for k in npz.files}
    # A step in flight at the kill may still complete (the process takes a moment to die):
    # then the run went on from one past the newest step logged before it, and lost none.
    return {"lost_s": after["time"] - killed, "recomputed": max(0, last - went_on_from),
            "step_s": statistics.median(steps) if steps else float("nan"),
            "restarts": final.get("restarts", 0), "resizes": len(resizes),
            "killed_at_step": last, "params": params}




def run(args) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        for mode in ("elastic", "restart"):
            job = job_dict(mode, args.backend, args.workers, args.steps, CHECKPOINT_EVERY)
            results[mode] = run_and_kill(job, Path(tmp) / mode, args.kill_at)
    a, b = results["elastic"]["params"], results["restart"]["params"]
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    for r in results.values():
        del r["params"]
    return {"machine": machine_facts(), "load": load_average(), "threads": thread_note(),
            "backend": args.backend, "workers": args.workers, "kill_at": args.kill_at,
            "checkpoint_every": CHECKPOINT_EVERY, "results": results,
            "max_param_diff": diff}


def report(result: dict) -> str:
    rows = []
    for mode, r in result["results"].items():
        rows.append([mode, f"{r['lost_s']:.2f}", r["recomputed"], f"{r['step_s'] * 1e3:.1f}",
                     r["restarts"], r["resizes"]])
    lines = [*result["machine"], f"load average before: {result['load']}; {result['threads']}",
             f"{result['workers']} workers on {result['backend']}, rank 1 SIGKILLed at step "
             f"{result['kill_at']}; checkpoints every {result['checkpoint_every']} steps", "",
             format_table(["path", "lost s", "recomputed", "ms/step", "restarts", "resizes"],
                          rows),
             "", f"final parameters, elastic vs restart: max |diff| {result['max_param_diff']:.2e}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="disttrain bench recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["coordinator", "ring"], default="coordinator")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--kill-at", type=int, default=175)  # between two checkpoints
    parser.add_argument("--json", help="also write the raw result here")
    args = parser.parse_args(argv)
    return print_and_save(run(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
