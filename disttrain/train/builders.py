"""Turn the sections of a JobSpec into a model, datasets, an optimizer and a scheduler."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np

from .. import nn, optim
from ..data import get_dataset
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
        except Exception as error:  # the user's code: report it as their input's problem
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
                raise SpecError(f"[model] factory: file {target} does not exist")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except SpecError:
        raise
    except Exception as error:  # ImportError, or any error while running the user's module
        raise SpecError(f"[model] factory: cannot import {target!r}: "
                        f"{type(error).__name__}: {error}") from None
    if not hasattr(module, name):
        raise SpecError(f"[model] factory: {target} has no function {name!r}")
    return getattr(module, name)


def build_datasets(spec: JobSpec):
    """(train, val) datasets of the [data] table, in the job's dtype."""
    d, dtype = spec.data, dtype_of(spec)
    if d.name == "digits":
        kwargs = dict(val_fraction=d.val_fraction, dtype=dtype)
    else:
        kwargs = dict(n_samples=d.n_samples, n_features=d.n_features, n_classes=d.n_classes,
                      seed=spec.job.seed, dtype=dtype, val_fraction=d.val_fraction)
    return get_dataset(d.name, split="train", **kwargs), get_dataset(d.name, split="val",
                                                                      **kwargs)


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


def check_job(spec: JobSpec, source: str = "job") -> None:
    """Build what the workers will build, in this process, so bad input fails before launch.

    Raises SpecError naming the file and key; the model is built and dropped.
    """
    try:
        train, val = build_datasets(spec)
        x, y = train.arrays[0], train.arrays[1]
        classes = int(max(y.max(), val.arrays[1].max())) + 1
        build_model(spec, x.shape[1], classes)
    except SpecError as error:
        raise SpecError(f"{source}: {error}") from None
    if spec.job.batch_size > len(y):
        raise SpecError(f"{source}: [job] batch_size: {spec.job.batch_size} is larger than the "
                        f"{len(y)} training samples; choose at most {len(y)}")
