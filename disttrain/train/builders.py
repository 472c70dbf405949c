"""Turn the sections of a JobSpec into a model, datasets, an optimizer and a scheduler."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from pathlib import Path

import numpy as np

from .. import nn, optim
from ..autograd import no_grad
from ..autograd.tensor import Tensor
from ..data import ArrayDataset, get_dataset
from ..data.datasets import split_indices
from ..data.files import DataFileError, check_classification, load_arrays
from .spec import JobSpec, SpecError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def dtype_of(spec: JobSpec):
    """The numpy float dtype that [job] dtype names."""
    return np.float64 if spec.job.dtype == "float64" else np.float32


def build_model(spec: JobSpec, n_features: int, n_classes: int):
    """The model the [model] table describes, initialised from the job's seed."""
    m, dtype = spec.model, dtype_of(spec)
    if m.kind == "custom":
        factory = load_factory(m.factory)
        try:
            model = factory(spec)
        except (Exception, SystemExit) as error:  # the user's code: their input's problem
            raise SpecError(f"[model] factory: {m.factory} raised {type(error).__name__}: "
                            f"{error}") from None
        if not hasattr(model, "named_parameters"):
            raise SpecError(f"[model] factory: {m.factory} returned {type(model).__name__}, "
                            "not a disttrain.nn.Module")
        return model.to(dtype)
    if m.kind == "cnn":
        side = int(round(n_features ** 0.5))
        if side * side != n_features:
            raise SpecError(f"[model] kind: 'cnn' needs square images, but the data has "
                            f"{n_features} features; use kind = 'mlp'")
        return nn.Sequential(
            _Unflatten(side), nn.Conv2d(1, 8, 3, padding=1, dtype=dtype), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(8 * (side // 2) ** 2, n_classes, dtype=dtype))
    sizes = list(m.sizes)
    if sizes[0] != n_features or sizes[-1] != n_classes:
        raise SpecError(f"[model] sizes: {sizes} must start with the data's {n_features} "
                        f"features and end with its {n_classes} classes")
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[m.activation]())
            if m.dropout:
                layers.append(nn.Dropout(m.dropout))
    return nn.Sequential(*layers)


class _Unflatten(nn.Module):
    """(N, side*side) rows back into (N, 1, side, side) images for the CNN."""

    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def forward(self, x):
        return x.reshape(x.shape[0], 1, self.side, self.side)


def load_factory(factory: str):
    """Import 'package.module:function' or 'path/to/file.py:function'."""
    target, _, name = factory.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise SpecError(f"[model] factory: file {target} does not exist (a relative "
                                "path is read from the job file's folder)")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except SpecError:
        raise
    except BaseException as error:  # ImportError, or anything the user's module does,
        if isinstance(error, KeyboardInterrupt):  # sys.exit() included; not Ctrl-C
            raise
        raise SpecError(f"[model] factory: cannot import {target!r}: "
                        f"{type(error).__name__}: {error}") from None
    if not callable(getattr(module, name, None)):
        raise SpecError(f"[model] factory: {target} has no function {name!r}")
    return getattr(module, name)


def build_datasets(spec: JobSpec):
    """(train, val) datasets of the [data] table, in the job's dtype."""
    d, dtype = spec.data, dtype_of(spec)
    if d.path:
        return _file_datasets(spec, dtype)
    if d.name == "digits":
        kwargs = dict(val_fraction=d.val_fraction, dtype=dtype)
    else:
        kwargs = dict(n_samples=d.n_samples, n_features=d.n_features, n_classes=d.n_classes,
                      seed=spec.job.seed, dtype=dtype, val_fraction=d.val_fraction)
    return get_dataset(d.name, split="train", **kwargs), get_dataset(d.name, split="val",
                                                                      **kwargs)


def _file_datasets(spec: JobSpec, dtype):
    """The user's file, split into train and val by [data] val_fraction (seeded by the
    job's seed, so every rank and every run splits alike)."""
    d = spec.data
    try:
        x, y = load_arrays(d.path, x_key=d.x_key, y_key=d.y_key, y_path=d.y_path,
                           label_column=d.label_column)
        check_classification(x, y, d.path)
    except DataFileError as error:
        raise SpecError(f"[data] path: {error}") from None
    x = x.reshape(len(x), -1)  # images and the like: one row of features per sample
    datasets = []
    for split in ("train", "val"):
        keep = split_indices(len(y), split, d.val_fraction, spec.job.seed)
        datasets.append(ArrayDataset(np.asarray(x[keep], dtype=dtype), y[keep].astype(np.int64)))
    return tuple(datasets)


def build_optimizer(spec: JobSpec, params):
    """The optimizer the [optimizer] table describes, over params."""
    o = spec.optimizer
    if o.name == "sgd":
        return optim.SGD(params, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                         weight_decay=o.weight_decay, nesterov=o.nesterov)
    cls = optim.Adam if o.name == "adam" else optim.AdamW
    kwargs = dict(lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    if o.name == "adam" or o.weight_decay:
        kwargs["weight_decay"] = o.weight_decay
    return cls(params, **kwargs)


def build_scheduler(spec: JobSpec, optimizer):
    """A per-epoch learning-rate scheduler, or None."""
    s = spec.scheduler
    if s.name == "step":
        return optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "cosine":
        return optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=s.t_max or spec.job.epochs, eta_min=s.eta_min)
    return None


# Words of the builders' own messages (torch's texts) and the key each one is about.
MESSAGE_KEYS = {
    "optimizer": {"learning rate": "lr", "epsilon": "eps", "beta": "betas",
                  "weight_decay": "weight_decay", "momentum": "momentum",
                  "dampening": "dampening", "nesterov": "nesterov"},
    "scheduler": {"step_size": "step_size", "gamma": "gamma", "T_max": "t_max",
                  "eta_min": "eta_min"},
    "data": {"val_fraction": "val_fraction", "n_samples": "n_samples",
             "n_features": "n_features", "n_classes": "n_classes"},
    "model": {},
}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or "(no message)"


@contextlib.contextmanager
def _input_errors(source: str, section: str, key: str):
    """Any error inside is the input's: re-raised as one SpecError naming the file and
    the [section] key (the key the message speaks of, else key)."""
    try:
        yield
    except SpecError as error:  # already names its key
        raise SpecError(f"{source}: {error}") from None
    except Exception as error:
        text = _one_line(error)
        key = next((k for word, k in MESSAGE_KEYS[section].items() if word in text), key)
        raise SpecError(f"{source}: [{section}] {key}: {type(error).__name__}: {text}; "
                        "choose a value this accepts") from None


def check_job(spec: JobSpec, source: str = "job") -> None:
    """Build what every worker will build, in this process, so bad input fails before launch:
    the data, the model (and one forward pass of it), the optimizer and the scheduler.

    Raises SpecError naming the file and key; what was built is dropped.
    """
    d = spec.data
    with _input_errors(source, "data", "name"):
        train, val = build_datasets(spec)
    samples = d.n_samples if d.name == "synthetic" else len(train) + len(val)
    if len(train) == 0 or len(val) == 0:
        which = "training" if len(train) == 0 else "validation"
        raise SpecError(f"{source}: [data] val_fraction: {d.val_fraction} of {samples} "
                        f"samples leaves no {which} samples; choose another val_fraction"
                        + (" or more n_samples" if d.name == "synthetic" else ""))
    x, y = train.arrays[0], train.arrays[1]
    if spec.job.batch_size > len(y):
        raise SpecError(f"{source}: [job] batch_size: {spec.job.batch_size} is larger than the "
                        f"{len(y)} training samples; choose at most {len(y)}")
    classes = int(max(y.max(), val.arrays[1].max())) + 1
    model_key = "factory" if spec.model.kind == "custom" else "sizes"
    with _input_errors(source, "model", model_key):
        model = build_model(spec, x.shape[1], classes)
    try:  # one forward pass on two samples: a model that does not fit fails here, not later
        with no_grad():
            model.eval()
            nn.CrossEntropyLoss()(model(Tensor._make(x[:2])), Tensor._make(y[:2])).item()
    except Exception as error:
        raise SpecError(f"{source}: [model] {model_key}: the model fails on a batch of the data "
                        f"({x.shape[1]} features, {classes} classes): {type(error).__name__}: "
                        f"{_one_line(error)}; make its input and output sizes fit") from None
    with _input_errors(source, "optimizer", "name"):
        optimizer = build_optimizer(spec, model.parameters())
    with _input_errors(source, "scheduler", "name"):
        build_scheduler(spec, optimizer)
