"""The job spec: plain dataclasses, validated with errors that name the file, key and fix.

A job file (TOML, read by load_job) has one table per dataclass below. Every key is
optional except where a default cannot be guessed; unknown keys are errors, because a
misspelt key silently ignored is a run wasted.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class SpecError(ValueError):
    """A job spec a user wrote is wrong; the message names the file, the key and the fix."""


@dataclass
class JobSection:
    """The [job] table: name, seed, length, global batch size, dtype, logging, checkpoints."""
    name: str = "job"
    seed: int = 0
    epochs: int = 1
    max_steps: int = 0  # 0: run all epochs
    batch_size: int = 64  # global: each of W workers takes batch_size / W
    dtype: str = "float32"
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0: only the final checkpoint
    keep_checkpoints: int = 3  # the newest valid ones stay; older ones are deleted
    eval_every_epoch: bool = True
    blas_threads: int = 0  # 0: match [distributed] cpus_per_worker


@dataclass
class ModelSection:
    """The [model] table: an MLP, a CNN or a custom factory, with sizes and activation."""
    kind: str = "mlp"  # mlp | cnn | custom
    sizes: list = field(default_factory=lambda: [64, 128, 10])
    activation: str = "relu"
    dropout: float = 0.0
    factory: str = ""  # custom: "module.path:function" or "path/to/file.py:function"


@dataclass
class DataSection:
    """The [data] table: dataset (digits or synthetic), validation split, shuffling."""
    name: str = "digits"
    val_fraction: float = 0.2
    shuffle: bool = True
    n_samples: int = 512
    n_features: int = 16
    n_classes: int = 4


@dataclass
class OptimizerSection:
    """The [optimizer] table: SGD, Adam or AdamW and their hyperparameters."""
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerSection:
    """The [scheduler] table: no schedule, or a per-epoch step or cosine one."""
    name: str = "none"  # none | step | cosine
    step_size: int = 1  # epochs, for step
    gamma: float = 0.1
    t_max: int = 0  # epochs, for cosine; 0: the job's epochs
    eta_min: float = 0.0


@dataclass
class DistributedSection:
    """The [distributed] table: backend, workers, CPUs, timeouts, restarts."""
    backend: str = "coordinator"  # coordinator | ring | mpi | local
    workers: int = 2
    cpus_per_worker: float = 1.0
    placement: str = "auto"  # auto: PACK on one machine, SPREAD on a cluster
    timeout_s: float = 300.0
    heartbeat_s: float = 2.0
    bucket_cap_mb: float = 25.0
    max_restarts: int = 2


@dataclass
class JobSpec:
    """A whole job file: one field per TOML table, named as the table."""
    job: JobSection = field(default_factory=JobSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def blas_threads(self) -> int:
        """BLAS threads per worker: as set, or one per CPU the worker was given."""
        return self.job.blas_threads or max(1, int(self.distributed.cpus_per_worker))


CHOICES = {
    ("job", "dtype"): ("float32", "float64"),
    ("model", "kind"): ("mlp", "cnn", "custom"),
    ("model", "activation"): ("relu", "tanh", "sigmoid", "gelu"),
    ("data", "name"): ("digits", "synthetic"),
    ("optimizer", "name"): ("sgd", "adam", "adamw"),
    ("scheduler", "name"): ("none", "step", "cosine"),
    ("distributed", "backend"): ("coordinator", "ring", "mpi", "local"),
    ("distributed", "placement"): ("auto", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
}
POSITIVE = {("job", "epochs"), ("job", "batch_size"), ("job", "log_every"),
            ("job", "keep_checkpoints"),
            ("distributed", "workers"), ("distributed", "timeout_s"),
            ("distributed", "heartbeat_s"), ("distributed", "bucket_cap_mb"),
            ("distributed", "cpus_per_worker")}
NON_NEGATIVE = {("job", "blas_threads"), ("job", "max_steps"), ("job", "checkpoint_every"),
                ("optimizer", "lr"),
                ("optimizer", "momentum"), ("optimizer", "weight_decay"),
                ("distributed", "max_restarts"), ("model", "dropout")}


def spec_from_dict(raw: dict, source: str = "job") -> JobSpec:
    """Build and validate a JobSpec from nested dicts (a parsed TOML file)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected tables like [job] and [model], got {type(raw)}")
    sections = {f.name: f for f in dataclasses.fields(JobSpec)}
    values = {}
    for name, table in raw.items():
        if name not in sections:
            raise SpecError(f"{source}: unknown table [{name}]: valid tables are "
                            f"{', '.join(f'[{s}]' for s in sections)}")
        if not isinstance(table, dict):
            raise SpecError(f"{source}: [{name}] must be a table, got {table!r}")
        values[name] = _section(sections[name].default_factory, name, table, source)
    spec = JobSpec(**values)
    _check_values(spec, source)
    return spec


def _section(cls, section: str, table: dict, source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise SpecError(f"{source}: [{section}] {key}: unknown key; valid keys are "
                            f"{', '.join(fields)}")
        kwargs[key] = _coerce(value, getattr(defaults, key), section, key, source)
    return cls(**kwargs)


def _coerce(value, default, section, key, source):
    """Check value has the default's type; ints are accepted where floats are expected."""
    where = f"{source}: [{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected a list like {default!r}, got {value!r}")
        return value
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a string, got {value!r}")
    return value


def _check_values(spec: JobSpec, source: str) -> None:
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(spec, section), key)
        if value not in allowed:
            raise SpecError(f"{source}: [{section}] {key}: {value!r} is not one of "
                            f"{', '.join(map(repr, allowed))}")
    for section, key in POSITIVE:
        if not getattr(getattr(spec, section), key) > 0:
            raise SpecError(f"{source}: [{section}] {key}: must be greater than 0, got "
                            f"{getattr(getattr(spec, section), key)!r}")
    for section, key in NON_NEGATIVE:
        if getattr(getattr(spec, section), key) < 0:
            raise SpecError(f"{source}: [{section}] {key}: must be 0 or more, got "
                            f"{getattr(getattr(spec, section), key)!r}")
    if spec.job.batch_size % spec.distributed.workers:
        raise SpecError(
            f"{source}: [job] batch_size: {spec.job.batch_size} is not divisible by "
            f"[distributed] workers = {spec.distributed.workers}; the batch size is global, so "
            "choose a multiple of the number of workers")
    model = spec.model
    if model.kind == "mlp" and (len(model.sizes) < 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in model.sizes)):
        raise SpecError(f"{source}: [model] sizes: expected at least two positive integers "
                        f"(inputs, ..., classes), got {model.sizes!r}")
    if model.kind == "custom" and ":" not in model.factory:
        raise SpecError(f"{source}: [model] factory: custom models need "
                        "'module.path:function' or 'file.py:function', got "
                        f"{model.factory!r}")
    if not 0 <= model.dropout < 1:
        raise SpecError(f"{source}: [model] dropout: must be in [0, 1), got {model.dropout!r}")
    if spec.optimizer.nesterov and (spec.optimizer.momentum <= 0 or spec.optimizer.dampening):
        raise SpecError(f"{source}: [optimizer] nesterov: Nesterov momentum requires a momentum "
                        "and zero dampening; set momentum > 0 and dampening = 0")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_job(spec: JobSpec) -> str:
    """The spec as TOML, every key written out, so RUN/job.toml reruns the same job."""
    lines = []
    for section, table in spec.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def load_job(path, overrides: dict | None = None) -> JobSpec:
    """The validated JobSpec of a TOML file, with {"section.key": value} overrides applied;
    errors name the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such job file; see examples/digits.toml for one") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a job file") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; a job file is TOML") from None
    except PermissionError:
        raise SpecError(f"{path}: not readable (permission denied); check its mode") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        if isinstance(raw.setdefault(section, {}), dict):  # else spec_from_dict says why
            raw[section][key] = value
    return spec_from_dict(raw, source=str(path))
