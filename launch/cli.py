"""The `disttrain` command: train a job file, benchmark, show a run's status, or work
with jobs on a running cluster (submit, logs, stop, list, status, fetch; launch/submit.py).

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
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{train,submit,status,logs,stop,list,fetch,plot,bench}")
    train = sub.add_parser("train", help="run a job file (TOML)")
    _job_arguments(train)
    train.add_argument("--run-dir", help="where to write the run (default runs/NAME-TIME)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its newest valid checkpoint")
    train.add_argument("--address", help="join a running Ray cluster (e.g. auto)")
    train.add_argument("--oversubscribe", action="store_true",
                       help=f"run a local job that asks for more than {OVERSUBSCRIBE}x this "
                            "machine's CPUs")
    train.add_argument("--quiet", action="store_true", help="print only the summary")
    submit = sub.add_parser("submit", help="run a job file on a running cluster (Jobs API)")
    _job_arguments(submit)
    _address_argument(submit)
    submit.add_argument("--resume", metavar="JOB_ID",
                        help="continue the run of an earlier submission (e.g. one stopped "
                             "with `disttrain stop`) from its newest checkpoint")
    submit.add_argument("--follow", action="store_true",
                        help="print the job's output until it ends; exit 0 if it succeeded")
    status = sub.add_parser("status", help="show a run (a run directory) or a submitted job")
    status.add_argument("run_dir", metavar="RUN_DIR|JOB_ID",
                        help="a run directory, or with --address a submitted job's id")
    status.add_argument("--json", action="store_true", help="print status.json as it is")
    _address_argument(status, required=False)
    logs = sub.add_parser("logs", help="a submitted job's output")
    logs.add_argument("job_id")
    logs.add_argument("--follow", action="store_true", help="stream it until the job ends")
    _address_argument(logs)
    stop = sub.add_parser("stop", help="stop a submitted job at a step, with a checkpoint")
    stop.add_argument("job_id")
    _address_argument(stop)
    jobs = sub.add_parser("list", help="the jobs submitted to a cluster")
    _address_argument(jobs)
    fetch = sub.add_parser("fetch", help="copy a submitted job's run directory from the head")
    fetch.add_argument("job_id")
    fetch.add_argument("dest", help="a new or empty folder")
    _address_argument(fetch)
    plot = sub.add_parser("plot", help="draw a run's loss, validation metrics and time per "
                                       "rank as a PNG")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    plot.add_argument("-o", "--output", metavar="FILE",
                      help="where to write the PNG (default RUN_DIR/plot.png)")
    pack = sub.add_parser("pack")  # fetch's other half, run on the head; unlisted
    pack.add_argument("run_dir")
    bench = sub.add_parser("bench", help="benchmarks, side by side with peers")
    bench.add_argument("what", choices=["step", "allreduce", "scaling", "recovery", "startup"])
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")
    return parser


def _job_arguments(parser) -> None:
    """What train and submit share: the job file and its overrides."""
    parser.add_argument("job", help="the job file, e.g. examples/digits.toml")
    parser.add_argument("--workers", type=int, help="override [distributed] workers")
    parser.add_argument("--min-workers", type=int,
                        help="override [distributed] min_workers (elastic: go on with fewer)")
    parser.add_argument("--backend", choices=["coordinator", "ring", "mpi", "local"],
                        help="override [distributed] backend")
    parser.add_argument("--epochs", type=int, help="override [job] epochs")
    parser.add_argument("--max-steps", type=int, help="override [job] max_steps")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any key of the job file, e.g. --set optimizer.lr=0.05 "
                             "(VALUE is read as TOML, else as a string); repeatable")


def _address_argument(parser, required=True) -> None:
    parser.add_argument("--address", metavar="http://HEAD:8265",
                        help="the head's Jobs API (default $RAY_API_SERVER_ADDRESS)"
                        + ("" if required else "; makes the argument a job id"))


def main(argv=None) -> int:
    """The `disttrain` command; returns the exit code."""
    from .submit import JobsApiError

    try:
        args = build_parser().parse_args(argv)
        command = COMMANDS.get(args.command)
        if command is None:
            return cmd_bench(args)
        return command(args)
    except (UsageError, SpecError, JobsApiError) as error:
        # one line, whatever a message quotes (a factory's error text can hold newlines)
        print(f"disttrain: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _overrides(args) -> dict:
    pairs = {"distributed.workers": args.workers, "distributed.backend": args.backend,
             "distributed.min_workers": args.min_workers,
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
    from .job import run_job

    spec = load_job(args.job, _overrides(args))
    run_dir = check_launch(spec, args.job, args.run_dir, resume=args.resume,
                           address=args.address, oversubscribe=args.oversubscribe)
    return run_job(spec, run_dir, resume=args.resume, address=args.address, quiet=args.quiet)


def check_launch(spec, source, run_dir, *, resume: bool, address: str | None,
                 oversubscribe: bool = False, with_model: bool = True) -> Path:
    """Everything a launch checks before anything starts (the machine, the job, --run-dir
    or the run to resume), for the CLI and the Python API alike; the run directory."""
    from disttrain.train.builders import check_job

    cluster = _joins_cluster(address, spec)
    if not cluster and not oversubscribe:
        check_machine(spec, source)
    if cluster:  # a job file is code: say so when a job meant for a cluster runs it here too
        _say_code_runs_here(spec, "launch", sys.stdout)
    check_job(spec, source, with_model=with_model)
    run_dir = Path(run_dir or f"runs/{spec.job.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume:
        if not (run_dir / "checkpoints").is_dir():
            raise UsageError(f"--resume: {run_dir} has no checkpoints/ folder; pass the "
                             "--run-dir of an earlier run")
        _check_resumable(spec, run_dir)
    else:
        check_new_run_dir(run_dir)
    return run_dir


def _say_code_runs_here(spec, before: str, stream) -> None:
    """check_job imports the job's own code (a model factory, a custom loss) here too."""
    code = ([f"[model] factory {spec.model.factory}"] * (spec.model.kind == "custom")
            + [f"[job] loss {spec.job.loss}"] * (":" in spec.job.loss))
    if code:
        print(f"disttrain: importing {' and '.join(code)} in this process to check the job "
              f"before {before} (a job file runs code, as a script does)", file=stream,
              flush=True)


def _joins_cluster(address: str | None, spec) -> bool:
    """Whether the job runs on a Ray cluster someone started, not on this machine alone
    (mpiexec and the local backend always run here)."""
    if spec.distributed.backend in ("mpi", "local"):
        return False
    address = address or os.environ.get("RAY_ADDRESS")
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
    """`disttrain status`: print a run directory's status.json, or a submitted job's state."""
    if args.address or (os.environ.get("RAY_API_SERVER_ADDRESS")
                        and not Path(args.run_dir).is_dir()):
        from . import submit

        print(submit.status(submit.jobs_address(args.address), args.run_dir))
        return EXIT_OK
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
        f"workers    {status.get('world_size', '-')} now" + "".join(
            f"\n  resize   step {r['step']}: {r['from']} -> {r['to']} ({r['reason']})"
            for r in status.get("resizes", [])),
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
LIVE_STATES = ("starting", "running", "restarting", "resizing")
STALE_AFTER_S = 30.0


def cmd_submit(args) -> int:
    """`disttrain submit`: check the job here, then run it on the cluster; prints its id."""
    from disttrain.train.builders import check_job

    from . import submit

    address = submit.jobs_address(args.address)
    spec = load_job(args.job, _overrides(args))
    _say_code_runs_here(spec, "submitting", sys.stderr)  # stdout is for the job id
    check_job(spec, args.job)
    submission_id = submit.submit(spec, address, resume=args.resume)
    print(f"disttrain: submitted; `disttrain logs {submission_id} --follow --address "
          f"{address}` shows its output, `disttrain fetch {submission_id} DEST` its run",
          file=sys.stderr)
    print(submission_id, flush=True)
    if not args.follow:
        return EXIT_OK
    submit.logs(address, submission_id, follow=True)
    final = submit.wait(address, submission_id)
    print(f"disttrain: job {submission_id} {final}", file=sys.stderr)
    return EXIT_OK if final in ("SUCCEEDED", "STOPPED") else EXIT_FAILED


def cmd_logs(args) -> int:
    from . import submit

    text = submit.logs(submit.jobs_address(args.address), args.job_id, follow=args.follow)
    print(text, end="")
    return EXIT_OK


def cmd_stop(args) -> int:
    """`disttrain stop`: the head sends the driver SIGTERM; wait until the job ends."""
    from . import submit

    final = submit.stop(submit.jobs_address(args.address), args.job_id)
    print(f"{args.job_id} {final}")
    return EXIT_OK if final in ("STOPPED", "SUCCEEDED", "FAILED") else EXIT_FAILED


def cmd_list(args) -> int:
    from . import submit

    print(submit.list_jobs(submit.jobs_address(args.address)))
    return EXIT_OK


def cmd_fetch(args) -> int:
    from . import submit

    names = submit.fetch(submit.jobs_address(args.address), args.job_id, Path(args.dest))
    print(f"disttrain: fetched {len(names)} files of {args.job_id} into {args.dest}",
          file=sys.stderr)
    return EXIT_OK


def cmd_pack(args) -> int:
    """The run directory as one checked text block on stdout (launch/archive.py)."""
    from .archive import pack

    run_dir = Path(args.run_dir)
    if not (run_dir / "status.json").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no status.json); the job may not "
                         "have started yet")
    sys.stdout.write(pack(run_dir))
    return EXIT_OK


def cmd_plot(args) -> int:
    """`disttrain plot`: the run's metrics and timeline as a PNG (disttrain/train/plot.py)."""
    from disttrain.train.plot import PlotError, plot_run

    try:
        out = plot_run(args.run_dir, args.output,
                       warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    except PlotError as error:
        raise UsageError(str(error)) from None
    print(f"disttrain: wrote {out}", file=sys.stderr)
    return EXIT_OK


COMMANDS = {"train": cmd_train, "submit": cmd_submit, "status": cmd_status, "logs": cmd_logs,
            "stop": cmd_stop, "list": cmd_list, "fetch": cmd_fetch, "pack": cmd_pack,
            "plot": cmd_plot}


def cmd_bench(args) -> int:
    """`disttrain bench`: run `python -m disttrain.bench.<what>` with the remaining arguments."""
    # A subprocess, not an import: bench runs jobs through this CLI, so launch must not
    # depend on bench.
    return subprocess.call([sys.executable, "-m", f"disttrain.bench.{args.what}", *args.rest])


if __name__ == "__main__":
    sys.exit(main())
