"""disttrain from Python (a notebook, a script): `train(job, ...)` runs a job file, a dict
shaped like one, or a JobSpec, exactly as `disttrain train` does (same checks, launchers,
supervisor, run directory and errors), and returns where the run is and how it ended.

    from disttrain.launch import train
    result = train("examples/digits.toml", workers=2, epochs=5,
                   set={"optimizer.lr": 0.05})
    result.metrics["val_accuracy"], result.run_dir

`Trainer(train_loop, job).fit()` runs your own loop instead (disttrain.train.context).
Either trains on a ray.data.Dataset with data=ds (launch/ray_data.py).

Bad input raises SpecError (the CLI's exit 2) before anything starts; a job that fails
after its restarts raises JobFailed (the CLI's exit 1); a stopped job (Ctrl-C) returns
with result.state == "stopped".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
          set: dict | None = None, train_loop=None,  # noqa: A002 - the CLI's --set
          data=None, val_data=None) -> Result:
    """Run job (a path to a job file, a dict of its tables, or a JobSpec) to the end;
    with train_loop(ctx), that loop on every rank instead of the job's (Trainer); with
    data (a ray.data.Dataset: [data] label_column and numeric feature columns), on its
    rows instead of the [data] table's, validated on val_data or its val_fraction split."""
    from disttrain.train.builders import handed_datasets

    from .cli import check_launch
    from .job import run_job

    overrides = {**(set or {}), **{k: v for k, v in {
        "distributed.workers": workers, "distributed.backend": backend,
        "job.epochs": epochs, "job.max_steps": max_steps}.items() if v is not None}}
    spec, source = _spec(job, overrides)
    datasets = _datasets(spec, data, val_data)
    with handed_datasets(datasets):  # checked as a file's data is, before anything starts
        run_dir = check_launch(spec, source, run_dir, resume=resume, address=address,
                               with_model=train_loop is None)
    code = run_job(spec, run_dir, resume=resume, address=address, quiet=quiet,
                   loop=train_loop, datasets=datasets)
    return _result(run_dir, code)


def _datasets(spec: JobSpec, data, val_data):
    """(train, val) over a Ray Dataset, or None for the [data] table's own data."""
    if data is None:
        if val_data is not None:
            raise SpecError("train: val_data goes with data (a ray.data.Dataset); pass data "
                            "too, or drop val_data")
        return None
    if spec.distributed.backend == "mpi":
        raise SpecError("[distributed] backend: a Ray Dataset trains on Ray (coordinator, "
                        "ring) or locally; mpi ranks read files: choose another backend")
    from .ray_data import ray_datasets

    return ray_datasets(spec, data, val_data)


class Trainer:
    """Your own training loop on N workers, with everything around it handled (the
    supervisor and its restarts, the run directory, progress, checkpoints, errors), as a
    job file is. The job (optional: a path, a dict of tables or a JobSpec) gives the data,
    the global batch, the length and [distributed]; its [model] and [optimizer] are yours.

        def train_loop(ctx):                     # ctx: disttrain.train.context.LoopContext
            model = ctx.prepare_model(build_model())
            opt = ctx.prepare_optimizer(SGD(model.parameters(), lr=0.1))
            for x, y in ctx.data_shard():
                opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward()
                opt.step(); ctx.report({"loss": loss.item()})
        result = Trainer(train_loop, workers=2, backend="coordinator").fit()

    The loop runs in every Ray worker (Ray pickles it, so it may be a closure) or here
    with backend "local"; not under MPI. data= (and val_data=): a ray.data.Dataset to
    train on, as for train().
    """

    def __init__(self, train_loop, job=None, run_dir=None, **options):
        if not callable(train_loop):
            raise SpecError(f"Trainer: train_loop must be a function of one argument (ctx), "
                            f"got {type(train_loop).__name__}")
        self.train_loop, self.job, self.run_dir, self.options = (
            train_loop, job if job is not None else {}, run_dir, options)

    def fit(self) -> Result:
        """Run the loop on every rank to the end of the job; how it ended."""
        return train(self.job, self.run_dir, train_loop=self.train_loop, **self.options)


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
    metrics.update(status.get("final", {}))  # the final evaluation, at the last step
    return Result(run_dir, status.get("state", "unknown"), status.get("step", 0), metrics)
