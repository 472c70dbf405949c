"""The job spec: plain dataclasses, validated with errors that name the file, key and fix.

A job file (TOML, read by load_job) has one table per dataclass below. Every key is
optional except where a default cannot be guessed; unknown keys are errors, because a
misspelt key silently ignored is a run wasted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import reprlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class SpecError(ValueError):
    """A job spec a user wrote is wrong; the message names the file, the key and the fix."""


# What [job] tensorboard = true needs, said by the driver's check (builders.check_job) and
# by the writer (driver.py) alike.
NEEDS_TENSORBOARDX = ("[job] tensorboard = true needs tensorboardX: "
                      "pip install 'disttrain[watch]'")


@dataclass
class JobSection:
    """The [job] table: name, task and loss, seed, length, global batch size, dtype,
    logging, checkpoints."""
    name: str = "job"
    task: str = "classification"  # classification (class labels) | regression (float targets)
    # "": the task's default (DEFAULT_LOSS); a name in LOSS_TASKS (torch's losses with their
    # defaults), or your own fn(output, target) -> scalar Tensor: "file.py:fn" or "module:fn"
    loss: str = ""
    seed: int = 0
    epochs: int = 1
    max_steps: int = 0  # 0: run all epochs
    batch_size: int = 64  # global: each of W workers takes its ceil or floor of batch_size / W
    dtype: str = "float32"
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0: only the final checkpoint
    keep_checkpoints: int = 3  # the newest valid ones stay; older ones are deleted
    eval_every_epoch: bool = True
    blas_threads: int = 0  # 0: match [distributed] cpus_per_worker
    on_nonfinite: str = "stop"  # a step whose loss is NaN or infinite: stop the job, or skip it
    # write TensorBoard scalars beside metrics.jsonl (needs the watch extra: tensorboardX)
    tensorboard: bool = False
    # loss = "huber": where the loss turns from quadratic to linear (torch's delta); any
    # other loss refuses a value other than 1.0, rather than ignore it
    huber_delta: float = 1.0


@dataclass
class ModelSection:
    """The [model] table: an MLP, a LeNet-style CNN or a custom factory.

    The fully connected layers are given one of two ways, never both: `hidden`, the widths
    between input and output, both of which are taken from the data (its features; its
    classes or target columns); or `sizes`, the widths up to the output, whose first entry
    is the input only when it equals the data's feature count: with 64 features, [64, 128,
    10] and [128, 10] are the same network, and [64, 10] is the linear model 64 -> 10. A
    sizes list that means something else has to be written with hidden.
    """
    kind: str = "mlp"  # mlp | cnn | custom
    # the hidden layers' widths; [] is none (a linear model); the input and output widths
    # come from the data
    hidden: list = field(default_factory=lambda: [128])
    # instead of hidden (mlp): the widths up to the output, as [64, 128, 10] or [128, 10];
    # the input width may be left out (it is taken from the data); [] uses hidden
    sizes: list = field(default_factory=list)
    activation: str = "relu"
    dropout: float = 0.0  # after each hidden fully connected layer's activation
    # cnn: one convolution per entry (its output channels), each followed by the activation
    # and a max-pool; then flatten and the fully connected layers of hidden. The image of
    # each sample is [data] shape (a square 1-channel image for digits and synthetic)
    channels: list = field(default_factory=lambda: [6, 16])
    kernel_size: int = 3  # square kernels, stride 1
    padding: str = "same"  # same: kernel_size // 2 on each side (odd kernels) | valid: none
    pool: int = 2  # the max-pool's window and stride after each convolution; 1: no pooling
    factory: str = ""  # custom: "module.path:function" or "path/to/file.py:function"


@dataclass
class DataSection:
    """The [data] table: a built-in dataset (digits or synthetic) or a file of your own,
    the validation split, shuffling."""
    name: str = "digits"
    val_fraction: float = 0.2
    shuffle: bool = True
    n_samples: int = 512
    n_features: int = 16
    n_classes: int = 4
    n_targets: int = 1  # synthetic regression: the target columns
    path: str = ""  # your data instead of `name`: .npz, .npy (features) or .csv
    x_key: str = "x"  # .npz: the features' array
    y_key: str = "y"  # .npz: the labels' array
    y_path: str = ""  # .npy: the labels' .npy file
    label_column: str = "label"  # .csv: the labels' column (the header names it)
    # a validation file of the same format (then all of `path` trains, val_fraction unused)
    val_path: str = ""
    val_y_path: str = ""  # .npy: the validation labels' .npy file
    # [channels, height, width] of each sample, for kind = "cnn" (and custom factories): a
    # row of C*H*W features, or an (N, C, H, W) array, flattened in C order; [] : not images
    shape: list = field(default_factory=list)


@dataclass
class OptimizerSection:
    """The [optimizer] table: SGD, Adam, AdamW, RMSprop, Adagrad, Adamax, NAdam or RAdam and their
    hyperparameters
    (torch's names and meanings); keys the chosen optimizer does not take are unused, so
    `--set optimizer.name=adam` works on a job file written for SGD with momentum."""
    name: str = "sgd"  # sgd | adam | adamw | rmsprop | adagrad | adamax | nadam | radam
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 0.0  # 0: the optimizer's own (1e-8; Adagrad's 1e-10)
    alpha: float = 0.99  # rmsprop's smoothing constant
    centered: bool = False  # rmsprop
    lr_decay: float = 0.0  # adagrad
    initial_accumulator_value: float = 0.0  # adagrad
    momentum_decay: float = 4e-3  # nadam
    decoupled_weight_decay: bool = False  # nadam, radam: weight decay as AdamW's
    # every optimizer: clip the averaged gradients' 2-norm to this before each step, as
    # torch.nn.utils.clip_grad_norm_ (0: no clipping)
    max_grad_norm: float = 0.0


@dataclass
class SchedulerSection:
    """The [scheduler] table: no schedule, or one of torch's, stepped once per epoch."""
    name: str = "none"  # none | step | multistep | exponential | cosine | linear
    step_size: int = 1  # epochs, for step
    gamma: float = 0.1  # step, multistep, exponential
    milestones: list = field(default_factory=list)  # epochs, for multistep
    t_max: int = 0  # epochs, for cosine; 0: the job's epochs
    eta_min: float = 0.0
    # linear (e.g. a warmup): the lr times start_factor, moving to end_factor over
    # total_iters epochs (torch's LinearLR and its defaults)
    start_factor: float = 1 / 3
    end_factor: float = 1.0
    total_iters: int = 5


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
    # Elastic: start once min_workers can be placed, grow to workers as CPUs appear, and go
    # on in memory with the survivors when workers are lost (0: equal to workers, not elastic)
    min_workers: int = 0
    placement_timeout_s: float = 60.0  # waiting for CPUs, then the job fails or restarts
    # ZeRO stage 1: each worker steps and keeps optimizer state for 1/workers of the
    # parameters (reduce-scatter the gradients, all-gather the parameters); same results
    shard_optimizer: bool = False
    # Backend ring across nodes: sum within each node in shared memory and run the ring
    # between one leader per node. true, false, or "auto": on when the job spans more than
    # one node and some node has more than one worker (off by default: see README Backends)
    hierarchical: bool | str = False

    def least_workers(self) -> int:
        """The fewest workers the job runs on: min_workers, or workers when not elastic."""
        return self.min_workers or self.workers


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

    def loss(self) -> str:
        """The [job] loss to train with: as set, or the task's default."""
        return self.job.loss or DEFAULT_LOSS[self.job.task]

    def blas_threads(self) -> int:
        """BLAS threads per worker: as set, or one per CPU the worker was given."""
        return self.job.blas_threads or max(1, int(self.distributed.cpus_per_worker))


CHOICES = {
    ("job", "dtype"): ("float32", "float64"),
    ("job", "on_nonfinite"): ("stop", "skip"),
    ("job", "task"): ("classification", "regression"),
    ("model", "kind"): ("mlp", "cnn", "custom"),
    ("model", "activation"): ("relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu", "elu",
                              "selu", "mish", "hardswish", "relu6", "softplus"),
    ("model", "padding"): ("same", "valid"),
    ("data", "name"): ("digits", "synthetic"),
    ("optimizer", "name"): ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adamax", "nadam",
                            "radam"),
    ("scheduler", "name"): ("none", "step", "multistep", "exponential", "cosine", "linear"),
    ("distributed", "backend"): ("coordinator", "ring", "mpi", "local"),
    ("distributed", "placement"): ("auto", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
}


@dataclass(frozen=True)
class Range:
    """The interval a number must lie in; an open end excludes its bound."""
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'greater than' if self.low_open else 'at least'} {self.low}"
        return (f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
                f"{')' if self.high_open else ']'}")


# Every number of a job file and where it must lie. Floats must also be finite (see
# _coerce). Upper bounds keep a typo (an extra zero or six) from reaching a worker as a
# memory error or a C overflow: they are far above any job this trainer is for.
RANGES = {
    ("job", "seed"): Range(0),
    ("job", "epochs"): Range(1),
    ("job", "max_steps"): Range(0),
    ("job", "batch_size"): Range(1),
    ("job", "log_every"): Range(1),
    ("job", "checkpoint_every"): Range(0),
    ("job", "keep_checkpoints"): Range(1),
    ("job", "blas_threads"): Range(0, 1024),
    ("job", "huber_delta"): Range(0, low_open=True),
    ("model", "dropout"): Range(0, 1, high_open=True),
    ("model", "kernel_size"): Range(1, 1000),
    ("model", "pool"): Range(1, 1000),
    ("data", "val_fraction"): Range(0, 1, low_open=True, high_open=True),
    ("data", "n_samples"): Range(2, 10_000_000),
    ("data", "n_features"): Range(1, 100_000),
    ("data", "n_classes"): Range(2, 100_000),
    ("data", "n_targets"): Range(1, 100_000),
    ("optimizer", "lr"): Range(0),
    ("optimizer", "momentum"): Range(0, 1, high_open=True),
    ("optimizer", "dampening"): Range(0, 1),
    ("optimizer", "weight_decay"): Range(0),
    ("optimizer", "eps"): Range(0),
    ("optimizer", "alpha"): Range(0),
    ("optimizer", "lr_decay"): Range(0),
    ("optimizer", "initial_accumulator_value"): Range(0),
    ("optimizer", "momentum_decay"): Range(0),
    ("optimizer", "max_grad_norm"): Range(0),
    ("scheduler", "step_size"): Range(1),
    ("scheduler", "gamma"): Range(0, 1, low_open=True),
    ("scheduler", "t_max"): Range(0),
    ("scheduler", "eta_min"): Range(0),
    ("scheduler", "start_factor"): Range(0, 1, low_open=True),
    ("scheduler", "end_factor"): Range(0, 1),
    ("scheduler", "total_iters"): Range(1),
    ("distributed", "workers"): Range(1, 4096),
    ("distributed", "cpus_per_worker"): Range(0, 1024, low_open=True),
    ("distributed", "timeout_s"): Range(1, 86_400),  # a day: OS timers overflow far above
    ("distributed", "heartbeat_s"): Range(0.1, 3600),  # faster beats only burn CPU
    ("distributed", "min_workers"): Range(0, 4096),
    ("distributed", "placement_timeout_s"): Range(1, 86_400),
    ("distributed", "bucket_cap_mb"): Range(0, 4096, low_open=True),
    ("distributed", "max_restarts"): Range(0, 1000),
}
# Keys that take true, false or the string "auto".
FLAG_OR_AUTO = {("distributed", "hierarchical")}
# Lists: (element type, shortest, longest, range of each element).
LISTS = {
    ("model", "sizes"): (int, 0, 64, Range(1, 1_000_000)),  # [] or at least 2: _check_model
    ("model", "hidden"): (int, 0, 64, Range(1, 1_000_000)),
    ("model", "channels"): (int, 1, 64, Range(1, 100_000)),
    ("data", "shape"): (int, 0, 3, Range(1, 1_000_000)),  # [] or 3: _check_data
    ("optimizer", "betas"): (float, 2, 2, Range(0, 1, high_open=True)),
    ("scheduler", "milestones"): (int, 0, 1000, Range(1)),
}
# The built-in losses ([job] loss, torch's names) and the task each fits.
LOSS_TASKS = {"cross_entropy": "classification", "nll": "classification",
              "mse": "regression", "l1": "regression", "huber": "regression"}
DEFAULT_LOSS = {"classification": "cross_entropy", "regression": "mse"}
# Sizes checked as a whole, so that no worker runs out of memory building them.
MAX_PARAMETERS = 100_000_000  # an MLP's weights and biases: 400 MB per replica in float32
MAX_SYNTHETIC_VALUES = 100_000_000  # n_samples x n_features: 800 MB in float64
# A job name becomes a folder name (runs/NAME-TIME): no separators, no leading dot or dash.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# Short reprs in messages: a value can be a megabyte of string or a deeply nested table.
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = \
    60, 60, 8, 4, 3


def spec_from_dict(raw: dict, source: str = "job") -> JobSpec:
    """Build and validate a JobSpec from nested dicts (a parsed TOML file)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected tables like [job] and [model], got "
                        f"{type(raw).__name__}")
    sections = {f.name: f for f in dataclasses.fields(JobSpec)}
    values = {}
    for name, table in raw.items():
        if name not in sections:
            raise SpecError(f"{source}: unknown table [{_short.repr(name)[1:-1]}]: valid "
                            f"tables are {', '.join(f'[{s}]' for s in sections)}")
        if not isinstance(table, dict):
            raise SpecError(f"{source}: [{name}] must be a table, got {_short.repr(table)}")
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
            raise SpecError(f"{source}: [{section}] {_short.repr(key)[1:-1]}: unknown key; "
                            f"valid keys are {', '.join(fields)}")
        kwargs[key] = _coerce(value, getattr(defaults, key), section, key, source)
    return cls(**kwargs)


def _coerce(value, default, section, key, source):
    """Check value has the default's type (ints are accepted where floats are expected,
    floats must be finite); lists are checked element by element against LISTS."""
    where = f"{source}: [{section}] {key}"
    if (section, key) in FLAG_OR_AUTO:
        if value is True or value is False or value == "auto":
            return value
        raise SpecError(f"{where}: expected true, false or \"auto\", got {_short.repr(value)}")
    if isinstance(default, list):
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected a list like {default!r}, got "
                            f"{_short.repr(value)}")
        kind, shortest, longest, _ = LISTS[section, key]
        if not shortest <= len(value) <= longest:
            count = shortest if shortest == longest else f"{shortest} to {longest}"
            raise SpecError(f"{where}: expected {count} numbers like {default!r}, got "
                            f"{len(value)}")
        return [_coerce(v, kind(), section, key, source) for v in value]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {_short.repr(value)}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {_short.repr(value)}")
        if not math.isfinite(value):
            raise SpecError(f"{where}: must be a finite number, got {value!r}; write a "
                            "finite value (TOML's nan and inf are not allowed here)")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {_short.repr(value)}")
        return value
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a string, got {_short.repr(value)}")
    return value


def _check_values(spec: JobSpec, source: str) -> None:
    """Every value in its set or range, then the rules that tie keys together."""
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(spec, section), key)
        if value not in allowed:
            raise SpecError(f"{source}: [{section}] {key}: {_short.repr(value)} is not one of "
                            f"{', '.join(map(repr, allowed))}")
    for (section, key), allowed in RANGES.items():
        value = getattr(getattr(spec, section), key)
        if value not in allowed:
            raise SpecError(f"{source}: [{section}] {key}: must be {allowed}, got {value!r}")
    for (section, key), (_, _, _, allowed) in LISTS.items():
        for value in getattr(getattr(spec, section), key):
            if value not in allowed:
                raise SpecError(f"{source}: [{section}] {key}: every element must be "
                                f"{allowed}, got {value!r}")
    for check in (_check_name, _check_model, _check_task, _check_data, _check_together):
        check(spec, source)


def _check_name(spec: JobSpec, source: str) -> None:
    if not NAME_PATTERN.fullmatch(spec.job.name):
        raise SpecError(f"{source}: [job] name: {_short.repr(spec.job.name)} is not a safe "
                        "folder name; use up to 100 letters, digits, '.', '_' and '-', "
                        "starting with a letter or digit (e.g. 'digits-lr0.05')")


# The keys only kind = "cnn" reads (a custom factory may read them too).
CNN_KEYS = ("channels", "kernel_size", "padding", "pool")


def _check_model(spec: JobSpec, source: str) -> None:
    """The rules the data does not decide; builders.build_model checks the widths and the
    image against the data, in the driver too."""
    model, where = spec.model, f"{source}: [model]"
    if model.kind == "custom":
        _check_function_ref(model.factory, f"{where} factory", "custom models")
        return
    sizes, defaults = model.sizes, ModelSection()
    if sizes and model.hidden != defaults.hidden:
        raise SpecError(f"{where} hidden: {model.hidden} and sizes = {sizes} both give the "
                        "layers; keep hidden (the input and output widths come from the data) "
                        "or sizes (every width, input first), not both")
    parameters = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    if parameters > MAX_PARAMETERS:
        raise SpecError(f"{where} sizes: {sizes} make {parameters:,} parameters, more than "
                        f"{MAX_PARAMETERS:,}; choose smaller layers")
    if model.kind == "mlp":
        for key in CNN_KEYS:
            if getattr(model, key) != getattr(defaults, key):
                raise SpecError(f"{where} {key}: only kind = 'cnn' uses {key}, but kind is "
                                f"'mlp'; set kind = 'cnn', or drop {key}")
    if model.kind == "cnn" and model.padding == "same" and model.kernel_size % 2 == 0:
        raise SpecError(f"{where} kernel_size: padding = 'same' pads kernel_size // 2 on each "
                        f"side, which needs an odd kernel_size, got {model.kernel_size}; "
                        f"choose {model.kernel_size - 1} or {model.kernel_size + 1}, or set "
                        "padding = 'valid'")


def _check_function_ref(value: str, where: str, what: str) -> None:
    """A 'module.path:function' or 'file.py:function' reference, as load_factory reads it."""
    target, _, function = value.rpartition(":")
    if not target or not function.isidentifier():
        raise SpecError(f"{where}: {what} need 'module.path:function' or 'file.py:function', "
                        f"got {_short.repr(value)}")
    if any(ord(c) < 32 for c in value):
        raise SpecError(f"{where}: {_short.repr(value)} holds a control character; write the "
                        "path as it is on disk")


def _check_task(spec: JobSpec, source: str) -> None:
    """The loss is one of LOSS_TASKS and fits the task, or names a function of your own."""
    task, loss = spec.job.task, spec.job.loss
    fitting = [name for name, fits in LOSS_TASKS.items() if fits == task]
    if ":" in loss:
        _check_function_ref(loss, f"{source}: [job] loss", "custom losses")
    elif loss and loss not in LOSS_TASKS:
        raise SpecError(f"{source}: [job] loss: {_short.repr(loss)} is not one of "
                        f"{', '.join(map(repr, LOSS_TASKS))}, nor a function of your own "
                        "('file.py:function' or 'module.path:function')")
    elif loss and LOSS_TASKS[loss] != task:
        raise SpecError(f"{source}: [job] loss: {loss!r} is a {LOSS_TASKS[loss]} loss, but "
                        f"[job] task is {task!r}; for {task} choose "
                        f"{' or '.join(map(repr, fitting))}, or set task = "
                        f"{LOSS_TASKS[loss]!r}")
    delta = spec.job.huber_delta
    if delta != JobSection().huber_delta and spec.loss() != "huber":
        raise SpecError(f"{source}: [job] huber_delta: only loss = 'huber' uses it, but the "
                        f"loss is {spec.loss()!r}; set loss = 'huber', or drop huber_delta")
    if task == "regression" and not spec.data.path and spec.data.name == "digits":
        raise SpecError(f"{source}: [data] name: 'digits' holds class labels, and a "
                        "regression job needs float targets; use name = 'synthetic' (a "
                        "seeded linear map of x plus noise) or a [data] path of your own")


def _check_data(spec: JobSpec, source: str) -> None:
    d = spec.data
    if d.shape and len(d.shape) != 3:
        raise SpecError(f"{source}: [data] shape: expected [channels, height, width], as "
                        f"[1, 28, 28] for grey 28x28 images, got {d.shape}")
    if d.name == "synthetic" and d.n_samples * d.n_features > MAX_SYNTHETIC_VALUES:
        raise SpecError(f"{source}: [data] n_samples: {d.n_samples} samples x "
                        f"{d.n_features} features is more than {MAX_SYNTHETIC_VALUES:,} "
                        "values; lower n_samples or n_features")


def _check_together(spec: JobSpec, source: str) -> None:
    d = spec.distributed
    if d.backend == "local" and d.workers != 1:
        raise SpecError(f"{source}: [distributed] backend: 'local' runs one process; set "
                        "workers = 1 or choose coordinator, ring or mpi")
    if d.min_workers > d.workers:
        raise SpecError(f"{source}: [distributed] min_workers: {d.min_workers} is more than "
                        f"workers = {d.workers}; choose min_workers <= workers (0: not elastic)")
    if d.least_workers() < d.workers and d.backend not in ("coordinator", "ring"):
        raise SpecError(
            f"{source}: [distributed] min_workers: {d.backend!r} cannot shrink or grow while "
            "it runs (MPI has no fault-tolerant world); drop min_workers, or continue an MPI "
            "run on another number of ranks with `disttrain train JOB --resume --workers N`"
            if d.backend == "mpi" else
            f"{source}: [distributed] min_workers: 'local' runs one process; drop min_workers")
    if d.shard_optimizer and d.least_workers() < d.workers:
        raise SpecError(
            f"{source}: [distributed] shard_optimizer: an elastic job (min_workers < workers) "
            "goes on from a survivor's memory, and with a sharded optimizer no worker holds "
            "the whole optimizer state; drop min_workers or shard_optimizer")
    if d.hierarchical is not False and d.backend != "ring":
        raise SpecError(
            f"{source}: [distributed] hierarchical: only backend 'ring' has a hierarchical "
            f"mode, and the backend is {d.backend!r} (the coordinator backend already uses "
            "shared memory within a node); set backend = 'ring' or drop hierarchical")
    if spec.job.batch_size < d.workers:
        raise SpecError(
            f"{source}: [job] batch_size: {spec.job.batch_size} is smaller than [distributed] "
            f"workers = {d.workers}; the batch size is global and every worker needs at least "
            "one sample of each batch, so choose batch_size >= workers")
    data = spec.data
    if data.val_path and not data.path:
        raise SpecError(f"{source}: [data] val_path: a validation file goes with a training "
                        "file; set [data] path too, or drop val_path to split name's data")
    if data.val_y_path and not data.val_path:
        raise SpecError(f"{source}: [data] val_y_path: the labels of a .npy val_path; set "
                        "[data] val_path to the validation features' .npy")
    if spec.scheduler.name == "multistep" and not spec.scheduler.milestones:
        raise SpecError(f"{source}: [scheduler] milestones: multistep multiplies the lr by gamma "
                        "at each of these epochs; set e.g. milestones = [30, 80]")
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


# A job file is a few lines of TOML; reading stops here (e.g. at `disttrain train /dev/zero`).
MAX_JOB_BYTES = 1 << 20


# [data] keys that name files, read from the job file's folder.
DATA_FILE_KEYS = ("path", "y_path", "val_path", "val_y_path")


def load_job(path, overrides: dict | None = None) -> JobSpec:
    """The validated JobSpec of a TOML file, with {"section.key": value} overrides applied;
    every error, from reading the file on, is a SpecError naming the file (and key)."""
    path = Path(path)
    raw = _read_toml(path)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        if isinstance(raw.setdefault(section, {}), dict):  # else spec_from_dict says why
            raw[section][key] = value
    spec = spec_from_dict(raw, source=str(path))
    spec.model.factory = resolve_factory(spec.model.factory, path.parent)
    spec.job.loss = resolve_factory(spec.job.loss, path.parent)  # a custom loss, likewise
    # Data files, like factories, are read from the job file's folder, not the current one.
    for key in DATA_FILE_KEYS:
        value = getattr(spec.data, key)
        if value and not Path(value).is_absolute():
            setattr(spec.data, key, str((path.parent / value).resolve()))
    return spec


def _read_toml(path: Path) -> dict:
    """The parsed file; any failure (a missing file, a path through a file, a NUL in the
    name, TOML nested too deep for the parser, ...) becomes one SpecError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JOB_BYTES + 1)
        if len(data) > MAX_JOB_BYTES:
            raise SpecError(f"{path}: larger than {MAX_JOB_BYTES >> 20} MB; a job file is a "
                            "few lines of TOML")
        return tomllib.loads(data.decode("utf-8"))
    except SpecError:
        raise
    except FileNotFoundError:
        raise SpecError(f"{path}: no such job file; see examples/digits.toml for one") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a job file") from None
    except NotADirectoryError:
        raise SpecError(f"{path}: a part of this path is a file, not a folder; check the "
                        "path") from None
    except PermissionError:
        raise SpecError(f"{path}: not readable (permission denied); check its mode") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (not UTF-8); a job file is TOML") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise SpecError(f"{path}: not a job file: its TOML is nested too deeply to "
                        "read") from None
    except (OSError, ValueError) as error:  # e.g. "embedded null byte", EIO, ELOOP
        why = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise SpecError(f"{path}: cannot read the job file: {why}") from None


def resolve_factory(factory: str, folder: Path) -> str:
    """A 'file.py:function' factory (or custom loss) with a relative path, made absolute
    from the job file's folder (not the current directory), so every rank imports the
    same file."""
    target, colon, function = factory.rpartition(":")
    if not target.endswith(".py") or os.path.isabs(target):
        return factory
    return os.path.abspath(os.path.join(folder, target)) + colon + function
