"""The `disttrain` command: train a job file, benchmark, or show a run's status.

Exit codes: 0 done; 2 bad input (usage, job file, data), one line naming the file and
key; 1 the job failed after its restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from disttrain.train.spec import SpecError, load_job

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# A local job may ask for up to this many times the machine's CPUs (workers x
# cpus_per_worker, each worker counted as at least one). Every worker is a process with
# its own replica, data and BLAS pool, so past a few per core they only add memory and
# context switches; 4 leaves room to try 4-8 workers on a laptop (the tests run 3 on 2
# cores) while `workers = 10000` is refused instead of starting 10,000 processes.
OVERSUBSCRIBE = 4


class UsageError(Exception):
    """Bad input the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors also exit 2, in one line
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The parser for train, status and bench; its errors raise UsageError."""
    parser = _Parser(prog="disttrain", description="Data-parallel training on Ray or MPI.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="run a job file (TOML)")
    train.add_argument("job", help="the job file, e.g. examples/digits.toml")
    train.add_argument("--workers", type=int, help="override [distributed] workers")
    train.add_argument("--backend", choices=["coordinator", "ring", "mpi", "local"],
                       help="override [distributed] backend")
    train.add_argument("--epochs", type=int, help="override [job] epochs")
    train.add_argument("--max-steps", type=int, help="override [job] max_steps")
    train.add_argument("--run-dir", help="where to write the run (default runs/NAME-TIME)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its newest valid checkpoint")
    train.add_argument("--address", help="join a running Ray cluster (e.g. auto)")
    train.add_argument("--oversubscribe", action="store_true",
                       help=f"run a local job that asks for more than {OVERSUBSCRIBE}x this "
                            "machine's CPUs")
    train.add_argument("--quiet", action="store_true", help="print only the summary")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override any key of the job file, e.g. --set optimizer.lr=0.05 "
                            "(VALUE is read as TOML, else as a string); repeatable")
    status = sub.add_parser("status", help="show a run: state, progress, workers")
    status.add_argument("run_dir")
    status.add_argument("--json", action="store_true", help="print status.json as it is")
    bench = sub.add_parser("bench", help="benchmarks, side by side with peers")
    bench.add_argument("what", choices=["step", "allreduce", "scaling"])
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")
    return parser


def main(argv=None) -> int:
    """The `disttrain` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "status":
            return cmd_status(args)
        return cmd_bench(args)
    except (UsageError, SpecError) as error:
        # one line, whatever a message quotes (a factory's error text can hold newlines)
        print(f"disttrain: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _overrides(args) -> dict:
    pairs = {"distributed.workers": args.workers, "distributed.backend": args.backend,
             "job.epochs": args.epochs, "job.max_steps": args.max_steps}
    return {**_parse_sets(args.set), **{k: v for k, v in pairs.items() if v is not None}}


def _parse_sets(items: list) -> dict:
    """--set section.key=value pairs; the value is read as TOML (so 0.05, true, [64, 10]
    keep their types, as in a job file), else taken as a string."""
    overrides = {}
    for item in items:
        dotted, sep, text = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not (sep and dot and section and key and "." not in key):
            raise UsageError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. "
                             "--set optimizer.lr=0.05")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        overrides[f"{section}.{key.strip()}"] = value
    return overrides


def cmd_train(args) -> int:
    """`disttrain train`: check the job, the machine and --run-dir, then run the job on Ray,
    locally or under mpiexec. Bad input stops here: nothing is written, nothing starts."""
    from disttrain.train.builders import check_job

    spec = load_job(args.job, _overrides(args))
    cluster = _joins_cluster(args, spec)
    if not cluster and not args.oversubscribe:
        check_machine(spec, args.job)
    if cluster and spec.model.kind == "custom":
        # a job file is code: say so when a job meant for a cluster runs it here too
        print(f"disttrain: importing [model] factory {spec.model.factory} in this process to "
              "check the model before launch (a job file runs code, as a script does)",
              flush=True)
    check_job(spec, args.job)
    run_dir = Path(args.run_dir or f"runs/{spec.job.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume:
        if not (run_dir / "checkpoints").is_dir():
            raise UsageError(f"--resume: {run_dir} has no checkpoints/ folder; pass the "
                             "--run-dir of an earlier run")
        _check_resumable(spec, run_dir)
    else:
        check_new_run_dir(run_dir)
    from .job import run_job

    return run_job(spec, run_dir, resume=args.resume, address=args.address, quiet=args.quiet)


def _joins_cluster(args, spec) -> bool:
    """Whether the job runs on a Ray cluster someone started, not on this machine alone
    (mpiexec and the local backend always run here)."""
    if spec.distributed.backend in ("mpi", "local"):
        return False
    address = args.address or os.environ.get("RAY_ADDRESS")
    return bool(address) and address != "local"


def check_machine(spec, source) -> None:
    """Refuse a local job that asks for more than OVERSUBSCRIBE x this machine's CPUs."""
    d = spec.distributed
    cpus = os.cpu_count() or 1
    asked = d.workers * max(1.0, d.cpus_per_worker)  # each worker is a process of its own
    if asked > OVERSUBSCRIBE * cpus:
        raise SpecError(
            f"{source}: [distributed] workers: {d.workers} workers x {d.cpus_per_worker:g} "
            f"cpus_per_worker ask for {asked:g} CPUs, but this machine has {cpus} (a local job "
            f"may use up to {OVERSUBSCRIBE * cpus}, {OVERSUBSCRIBE} per CPU); lower workers or "
            "cpus_per_worker, join a cluster with --address, or pass --oversubscribe")


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs a new or empty folder it can create; nothing is written here."""
    try:
        if run_dir.is_dir():
            if (run_dir / "status.json").exists():
                raise UsageError(f"--run-dir: {run_dir} already holds a run; pass --resume to "
                                 "continue it, or choose another --run-dir (nothing was "
                                 "overwritten)")
            entries = sorted(p.name for p in run_dir.iterdir())
            if entries:
                raise UsageError(f"--run-dir: {run_dir} is not empty (it holds "
                                 f"{', '.join(entries[:3])}{', ...' * (len(entries) > 3)}); "
                                 "choose a new or empty folder (nothing was written)")
            return
        if run_dir.exists() or run_dir.is_symlink():
            raise UsageError(f"--run-dir: {run_dir} exists and is not a folder; choose a new "
                             "or empty folder")
        existing = next(p for p in run_dir.absolute().parents if p.exists())
        if not existing.is_dir():
            raise UsageError(f"--run-dir: {existing} is a file, so {run_dir} cannot be "
                             "created; choose another --run-dir")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"--run-dir: cannot create {run_dir}: {existing} is not writable "
                             "(permission denied); choose another --run-dir")
    except OSError as error:
        raise UsageError(f"--run-dir: {run_dir}: {error.strerror or error}; choose another "
                         "--run-dir") from None


# What a checkpoint's arrays and data stream depend on: a resumed run must keep these.
RESUME_MUST_MATCH = (("model", None), ("data", None), ("job", "seed"), ("job", "dtype"),
                     ("job", "batch_size"), ("optimizer", "name"))


def _check_resumable(spec, run_dir: Path) -> None:
    """Refuse to resume a run with a job whose checkpoints would not fit or continue it."""
    previous = load_job(run_dir / "job.toml").to_dict()
    current = spec.to_dict()
    for section, key in RESUME_MUST_MATCH:
        keys = [key] if key else list(current[section])
        for k in keys:
            if previous[section][k] != current[section][k]:
                raise UsageError(
                    f"--resume: [{section}] {k} is {current[section][k]!r} but the run in "
                    f"{run_dir} used {previous[section][k]!r}; resume with the job in "
                    f"{run_dir / 'job.toml'}, or start a new --run-dir")


def cmd_status(args) -> int:
    """`disttrain status`: print a run directory's status.json."""
    path = Path(args.run_dir) / "status.json"
    if not path.exists():
        raise UsageError(f"{path}: no such file; pass a run directory written by "
                         "`disttrain train`")
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: unreadable ({error}); it is rewritten whole at each "
                         "update, so run `disttrain status` again, or resume the run") from None
    print(json.dumps(status, indent=1) if args.json else _status_table(status, args.run_dir))
    silent = time.time() - status.get("updated", time.time())
    if status.get("state") in LIVE_STATES and silent > STALE_AFTER_S:
        print(f"disttrain: not running: no update for {silent:.0f} s although the state is "
              f"{status['state']!r} (its driver was killed); `disttrain train "
              f"{Path(args.run_dir) / 'job.toml'} --run-dir {args.run_dir} --resume` "
              "continues it", file=sys.stderr)
    return EXIT_OK


def _status_table(status: dict, run_dir) -> str:
    """status.json and the last "train" record, for a reader."""
    from disttrain.train.rundir import read_metrics

    trains = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    last = trains[-1] if trains else {}
    loss = last.get("loss")
    lines = [
        f"state      {status.get('state')}",
        f"step       {status.get('step')}  epoch {status.get('epoch')}",
        f"loss       {'-' if loss is None else f'{loss:.4f}'}  "
        f"({last.get('samples_per_s', 0):,.0f} samples/s at step {last.get('step', '-')})",
        f"restarts   {status.get('restarts', 0)}" + "".join(
            f"\n  failure  {f}" for f in status.get("failures", [])),
        f"updated    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(status['updated']))}"
        if "updated" in status else "updated    -",
        "workers    rank  node              pid      state",
    ]
    lines += [f"           {w.get('rank'):>4}  {str(w.get('node')):<16}  "
              f"{str(w.get('pid')):<7}  {w.get('state')}" for w in status.get("workers", [])]
    if status.get("error"):
        lines.append(f"error      {status['error']}")
    return "\n".join(lines)


# A live driver refreshes status.json's "updated" every 5 s (disttrain.train.driver).
LIVE_STATES = ("starting", "running", "restarting")
STALE_AFTER_S = 30.0


def cmd_bench(args) -> int:
    """`disttrain bench`: run `python -m disttrain.bench.<what>` with the remaining arguments."""
    # A subprocess, not an import: bench runs jobs through this CLI, so launch must not
    # depend on bench.
    return subprocess.call([sys.executable, "-m", f"disttrain.bench.{args.what}", *args.rest])


if __name__ == "__main__":
    sys.exit(main())
