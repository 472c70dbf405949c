"""Time to the first step: disttrain's CLI beside Ray Train's TorchTrainer.fit(), the same
tiny job (digits, MLP 64-128-10, global batch 64, 2 workers, SGD), on the same cluster.

disttrain is run as a user runs it (`python -m disttrain.launch.cli train JOB --quiet` in
a subprocess) and its driver keeps the wall-clock time of each phase in RUN/status.json
("startup"): the process's start (from /proc, so the interpreter and imports count), Ray
up (started, or connected), the placement group ready, every rank joined (actor start,
imports, the communicator), the replica built on rank 0 (data load and model build), and
the first step done. Two ways: `cold`, a Ray of its own started by the job (RAY_ADDRESS=
local), and `attached`, joining a running head (`ray start --head` once, then
RAY_ADDRESS=HOST:PORT; the fast path for repeated runs). Ray Train runs in a subprocess
too, attached to the same head: from its process start, through `import ray.train.torch`,
ray.init and fit(), to the first step of train_loop_per_worker (torch DDP on gloo,
torch.set_num_threads(1)).

    disttrain bench startup --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import (
    REPO,
    child_env,
    format_table,
    free_port,
    load_average,
    machine_facts,
    print_and_save,
    thread_note,
)

WORKERS, BATCH = 2, 64
PHASES = (("ray", "Ray up"), ("placed", "placement"), ("joined", "actors joined"),
          ("started", "replica built"), ("first_step", "first step"))


def job_dict() -> dict:
    return {"job": {"name": "bench-startup", "seed": 0, "epochs": 1, "max_steps": 1,
                    "batch_size": BATCH, "log_every": 1, "eval_every_epoch": False,
                    "blas_threads": 1},
            "model": {"kind": "mlp", "hidden": [128]},
            "data": {"name": "digits"},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "distributed": {"backend": "coordinator", "workers": WORKERS,
                            "cpus_per_worker": 1}}


# --- a Ray head, as a user starts one ------------------------------------------------------

def start_head(root: Path) -> tuple[subprocess.Popen, dict, str]:
    """`ray start --head --block` on loopback with token auth; (process, env, address)."""
    token = secrets.token_hex(32)
    env = {k: v for k, v in child_env().items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         f"--num-cpus={WORKERS + 1}", "--include-dashboard=false",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={root / 'ray'}",
         "--disable-usage-stats", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    probe = f"import ray; ray.init(address={address!r}); print(ray.cluster_resources())"
    deadline = time.monotonic() + 120
    while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         timeout=120).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Ray head did not start")
        time.sleep(1)
    return proc, env, address


def stop_head(proc: subprocess.Popen) -> None:
    """Stop the head and everything it started (its own process group), and nothing else:
    `ray stop` would stop every Ray on the machine, someone else's test session too."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# --- disttrain -----------------------------------------------------------------------------

def run_disttrain(root: Path, name: str, env: dict) -> dict:
    """Seconds from the CLI process's start to each phase, from RUN/status.json."""
    from disttrain.train.spec import dump_job, spec_from_dict

    job_file, run_dir = root / f"{name}.toml", root / name
    job_file.write_text(dump_job(spec_from_dict(job_dict())))
    shutil.rmtree(run_dir, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "disttrain.launch.cli", "train",
                           str(job_file), "--run-dir", str(run_dir), "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"disttrain {name} failed: {done.stderr[-2000:]}")
    startup = json.loads((run_dir / "status.json").read_text())["startup"]
    t0 = startup["process"]
    out = {phase: startup[phase] - t0 for phase, _ in PHASES}
    out["build_s"] = startup.get("build_s", 0.0)
    return out


# --- Ray Train ------------------------------------------------------------------------------

def peer_main(address: str, storage: str) -> None:
    """The Ray Train side, in a process of its own: print the phases as one JSON line."""
    from disttrain.train.timeline import process_started

    t0 = process_started()
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    imported = time.time()
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    connected = time.time()

    def train_loop_per_worker(config):
        import time as clock

        import numpy as np
        import torch

        from disttrain.data import load_digits

        torch.set_num_threads(1)
        built = clock.time()
        x, y = load_digits().arrays
        model = ray.train.torch.prepare_model(torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context() \
            .get_world_size()
        index = np.arange(rank, BATCH, world)
        built = clock.time() - built
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(np.asarray(x[index], np.float32))),
            torch.from_numpy(np.asarray(y[index], np.int64)))
        loss.backward()
        opt.step()
        done = clock.time()
        if rank == 0:  # Ray Train v2 keeps reported metrics only with a checkpoint: a file
            Path(config["out"], "rank0.json").write_text(json.dumps(
                {"first_step": done, "build_s": built}))
        ray.train.report({"first_step": done})

    trainer = TorchTrainer(train_loop_per_worker, train_loop_config={"out": storage},
                           scaling_config=ScalingConfig(num_workers=WORKERS),
                           run_config=RunConfig(storage_path=storage, name="startup"))
    fit = time.time()
    trainer.fit()
    rank0 = json.loads(Path(storage, "rank0.json").read_text())
    print("STARTUP", json.dumps({"imports": imported - t0, "ray": connected - t0, "fit": fit - t0,
                      "first_step": rank0["first_step"] - t0, "build_s": rank0["build_s"],
                      "fit_done": time.time() - t0}), flush=True)


def run_ray_train(root: Path, env: dict, address: str) -> dict:
    storage = root / "ray-train"
    storage.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "disttrain.bench.startup", "--peer", address,
                           str(storage)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"Ray Train failed: {done.stderr[-3000:]}")
    # Ray Train prints its own lines to stdout too, before and after ours
    line = next(line for line in done.stdout.splitlines() if line.startswith("STARTUP "))
    return json.loads(line[len("STARTUP "):])


# --- the run ---------------------------------------------------------------------------------

def run(args) -> dict:
    runs: dict = {"disttrain cold": [], "disttrain attached": [], "Ray Train attached": []}
    with tempfile.TemporaryDirectory(prefix="bs", dir="/tmp") as tmp:
        root = Path(tmp)
        for _ in range(args.repeats):
            runs["disttrain cold"].append(run_disttrain(root, "cold", child_env(
                RAY_ADDRESS="local")))
        proc, env, address = start_head(root)
        try:
            for _ in range(args.repeats):  # alternating, so drift hits both alike
                runs["disttrain attached"].append(run_disttrain(
                    root, "attached", dict(env, RAY_ADDRESS=address)))
                runs["Ray Train attached"].append(run_ray_train(root, env, address))
        finally:
            stop_head(proc)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in runs.items()}
    return {"machine": machine_facts(), "load": load_average(), "threads": thread_note(),
            "repeats": args.repeats, "runs": runs, "medians": medians}


def report(result: dict) -> str:
    m = result["medians"]
    rows = []
    for name in ("disttrain cold", "disttrain attached"):
        r = m[name]
        rows.append([name, f"{r['ray']:.2f}", f"{r['placed']:.2f}", f"{r['joined']:.2f}",
                     f"{r['started']:.2f}", f"{r['first_step']:.2f}",
                     f"{r['first_step'] - r['ray']:.2f}"])
    r = m["Ray Train attached"]
    rows.append(["Ray Train attached", f"{r['ray']:.2f}", "-", "-", f"{r['fit']:.2f} (fit)",
                 f"{r['first_step']:.2f}", f"{r['first_step'] - r['ray']:.2f}"])
    return "\n".join([
        *result["machine"], f"load average before: {result['load']}; {result['threads']}",
        f"tiny job: digits, MLP 64-128-10, batch {BATCH}, {WORKERS} workers, one step; "
        f"medians of {result['repeats']} runs; seconds from the process's start", "",
        format_table(["", "Ray up", "placed", "joined", "built", "1st step",
                      "Ray up -> 1st step"], rows),
        "", "disttrain cold: the job starts a Ray of its own; attached: RAY_ADDRESS of a head "
        "started once with `ray start --head`"])


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--peer":
        peer_main(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(prog="disttrain bench startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the raw result here")
    args = parser.parse_args(argv)
    return print_and_save(run(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
