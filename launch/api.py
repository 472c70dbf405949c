"""disttrain from Python (a notebook, a script): `train(job, ...)` runs a job file, a dict
shaped like one, or a JobSpec, exactly as `disttrain train` does (same checks, launchers,
supervisor, run directory and errors), and returns where the run is and how it ended.

    from disttrain.launch import train
    result = train("examples/digits.toml", workers=2, epochs=5,
                   set={"optimizer.lr": 0.05})
    result.metrics["val_accuracy"], result.run_dir

Bad input raises SpecError (the CLI's exit 2) before anything starts; a job that fails
after its restarts raises JobFailed (the CLI's exit 1); a stopped job (Ctrl-C) returns
with result.state == "stopped".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from disttrain.train.spec import JobSpec, SpecError, load_job, spec_from_dict


class JobFailed(RuntimeError):
    """The job failed after its restarts; the message is the run's error line."""


@dataclass
class Result:
    """How a run ended: its folder, final state and step, and the newest value of each
    metric (loss, lr, samples_per_s from training; val_* from evaluation)."""
    run_dir: Path
    state: str
    step: int
    metrics: dict = field(default_factory=dict)

    @property
    def final_model(self) -> Path:
        return self.run_dir / "final" / "model.npz"


def train(job, run_dir=None, *, resume: bool = False, address: str | None = None,
          quiet: bool = True, workers: int | None = None, backend: str | None = None,
          epochs: int | None = None, max_steps: int | None = None,
          set: dict | None = None) -> Result:  # noqa: A002 - the CLI's --set
    """Run job (a path to a job file, a dict of its tables, or a JobSpec) to the end."""
    from disttrain.train.builders import check_job

    from .cli import _check_resumable, _joins_cluster, check_machine, check_new_run_dir
    from .job import run_job

    overrides = {**(set or {}), **{k: v for k, v in {
        "distributed.workers": workers, "distributed.backend": backend,
        "job.epochs": epochs, "job.max_steps": max_steps}.items() if v is not None}}
    spec, source = _spec(job, overrides)
    if not _joins_cluster(SimpleNamespace(address=address), spec):
        check_machine(spec, source)
    check_job(spec, source)
    run_dir = Path(run_dir or f"runs/{spec.job.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume:
        _check_resumable(spec, run_dir)
    else:
        check_new_run_dir(run_dir)
    code = run_job(spec, run_dir, resume=resume, address=address, quiet=quiet)
    return _result(run_dir, code)


def _spec(job, overrides: dict) -> tuple[JobSpec, str]:
    if isinstance(job, (str, Path)):
        return load_job(job, overrides), str(job)
    if isinstance(job, JobSpec):
        job = job.to_dict()
    if not isinstance(job, dict):
        raise SpecError(f"train: job must be a job file's path, a dict of its tables or a "
                        f"JobSpec, got {type(job).__name__}")
    tables = {name: dict(table) if isinstance(table, dict) else table
              for name, table in job.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise SpecError(f"train: set key {dotted!r}: expected 'section.key', e.g. "
                            "'optimizer.lr'")
        tables.setdefault(section, {})[key] = value
    return spec_from_dict(tables, source="job"), "job"


def _result(run_dir: Path, code: int) -> Result:
    from disttrain.train.rundir import read_metrics, read_status

    status = read_status(run_dir) or {}
    if code != 0 or status.get("state") == "failed":
        raise JobFailed(status.get("error") or f"the job in {run_dir} failed (exit {code})")
    metrics = {}
    for record in read_metrics(run_dir):
        if record.get("kind") in ("train", "eval"):
            metrics.update({k: v for k, v in record.items() if k not in ("kind", "time")})
    return Result(run_dir, status.get("state", "unknown"), status.get("step", 0), metrics)
