"""Turn the sections of a JobSpec into a model, datasets, a loss, an optimizer and a
scheduler."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import math
from pathlib import Path

import numpy as np

from .. import nn, optim
from ..autograd import no_grad
from ..autograd.tensor import Tensor
from ..data import get_dataset
from ..data.datasets import split_indices, synthetic_regression
from ..data.files import DataFileError, check_classification, check_regression, load_arrays
from ..data.rows import Rows, RowsDataset
from ..nn import functional as F
from .spec import MAX_PARAMETERS, NEEDS_TENSORBOARDX, JobSpec, SpecError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
               "mish": nn.Mish, "hardswish": nn.Hardswish, "relu6": nn.ReLU6,
               "softplus": nn.Softplus}
# [job] loss: torch's functions with their defaults (reduction="mean"); huber's delta is
# [job] huber_delta (build_loss).
LOSSES = {"cross_entropy": F.cross_entropy, "nll": F.nll_loss, "mse": F.mse_loss,
          "l1": F.l1_loss, "huber": F.huber_loss}


def dtype_of(spec: JobSpec):
    """The numpy float dtype that [job] dtype names."""
    return np.float64 if spec.job.dtype == "float64" else np.float32


def build_model(spec: JobSpec, n_features: int, n_outputs: int):
    """The model the [model] table describes, initialised from the job's seed; n_outputs is
    the number of classes (classification) or target columns (regression)."""
    m, dtype = spec.model, dtype_of(spec)
    if spec.data.shape and math.prod(spec.data.shape) != n_features:
        raise SpecError(f"[data] shape: {spec.data.shape} is {math.prod(spec.data.shape)} "
                        f"values per sample, but the data has {n_features} features; give "
                        "the [channels, height, width] its rows were flattened from")
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
        model = _cnn(spec, image_shape(spec, n_features), n_outputs)
    else:
        model = nn.Sequential(*_fully_connected(spec, mlp_widths(spec, n_features, n_outputs)))
    if spec.loss() == "nll":  # NLLLoss takes log-probabilities, as a torch user's model ends
        model.append(nn.LogSoftmax(dim=1))
    return model


def mlp_widths(spec: JobSpec, n_features: int, n_outputs: int) -> list:
    """Every width of the MLP, input first: [model] hidden between the data's features and
    its outputs, or [model] sizes, with the data's features put first unless it starts
    with them already (the input width may be left out), checked to end with the outputs."""
    sizes = list(spec.model.sizes)
    if not sizes:
        return _checked_size([n_features, *spec.model.hidden, n_outputs])
    if sizes[-1] != n_outputs:
        outputs = (f"{n_outputs} classes" if spec.job.task == "classification" else
                   f"{n_outputs} target column{'s' if n_outputs > 1 else ''}")
        raise SpecError(f"[model] sizes: {sizes} must end with the data's {outputs} (and may "
                        f"start with its {n_features} features)")
    if len(sizes) == 1 or sizes[0] != n_features:  # the input width left out
        sizes = [n_features, *sizes]
    return _checked_size(sizes, name="sizes")


def _checked_size(widths: list, conv_parameters: int = 0, name: str = "hidden") -> list:
    """The fully connected widths, unless they and the convolutions make more than
    MAX_PARAMETERS (counted before anything is built); the error names the larger part."""
    linear = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    parameters = linear + conv_parameters
    key = name if linear >= conv_parameters else "channels"
    if parameters > MAX_PARAMETERS:
        raise SpecError(f"[model] {key}: the model has {parameters:,} parameters with "
                        f"layers {widths} for this data, more than {MAX_PARAMETERS:,}; choose "
                        "smaller layers" + (" or more pooling" if conv_parameters else ""))
    return widths


def _fully_connected(spec: JobSpec, widths: list) -> list:
    """Linear layers through widths, each hidden one followed by the activation (and
    dropout); the last one is the output, bare."""
    m, dtype, layers = spec.model, dtype_of(spec), []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[m.activation]())
            if m.dropout:
                layers.append(nn.Dropout(m.dropout))
    return layers


def image_shape(spec: JobSpec, n_features: int) -> tuple:
    """(channels, height, width) of each sample: [data] shape, or for a built-in data set
    a square 1-channel image (digits: 1x8x8). A file's images need their shape: a square
    feature count can as well be 4 channels of a square half as wide."""
    d = spec.data
    if d.shape:
        return tuple(d.shape)
    side = math.isqrt(n_features)
    if d.path:
        raise SpecError(f"[model] kind: 'cnn' needs the shape of the images in {d.path}; "
                        "set [data] shape = [channels, height, width], as [1, 28, 28] for "
                        "grey 28x28 images")
    if side * side != n_features:
        raise SpecError(f"[model] kind: 'cnn' needs images, but the data's {n_features} "
                        "features are not a square 1-channel image; set [data] shape = "
                        "[channels, height, width], or use kind = 'mlp'")
    return 1, side, side


def cnn_layout(spec: JobSpec, shape: tuple) -> list:
    """(channels, height, width) after each convolution block of [model] channels, the
    image first; a block that would shrink the image below 1x1 is an error naming it."""
    m = spec.model
    k, pad = m.kernel_size, (m.kernel_size // 2 if m.padding == "same" else 0)
    layout = [tuple(shape)]
    for i, out in enumerate(m.channels, 1):
        _, h, w = layout[-1]
        fewer = f", or fewer conv layers (channels = {m.channels[:i - 1]})" if i > 1 else ""
        if min(h, w) + 2 * pad < k:
            raise SpecError(f"[model] kernel_size: conv {i} of channels {m.channels} gets a "
                            f"{h}x{w} image, smaller than its {k}x{k} kernel with padding "
                            f"{pad}; choose kernel_size <= {min(h, w) + 2 * pad}"
                            f"{' or padding = ' + repr('same') if not pad else ''}{fewer}")
        h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        if min(h, w) < m.pool:
            raise SpecError(f"[model] pool: the max-pool after conv {i} of channels "
                            f"{m.channels} gets a {h}x{w} image, smaller than its {m.pool}x"
                            f"{m.pool} window; choose pool <= {min(h, w)}{fewer}")
        layout.append((out, h // m.pool, w // m.pool))
    return layout


def _cnn(spec: JobSpec, shape: tuple, n_outputs: int):
    """LeNet's stack: per [model] channels entry a convolution, the activation and a
    max-pool; then flatten and the fully connected layers of [model] hidden."""
    m, dtype = spec.model, dtype_of(spec)
    if m.sizes:  # checked after the image, so a job that is no CNN at all hears that first
        raise SpecError("[model] sizes: kind = 'cnn' takes the width of its fully connected "
                        "input from the convolutions; drop sizes and give the widths between "
                        "them and the output as hidden = [...] (the output comes from the data)")
    layout = cnn_layout(spec, shape)
    k, pad = m.kernel_size, (m.kernel_size // 2 if m.padding == "same" else 0)
    convs = list(zip([c for c, _, _ in layout[:-1]], m.channels))
    widths = _checked_size([math.prod(layout[-1]), *m.hidden, n_outputs],
                           sum((c_in * k * k + 1) * c_out for c_in, c_out in convs))
    layers = [nn.Unflatten(1, shape)]
    for c_in, c_out in convs:
        layers += [nn.Conv2d(c_in, c_out, k, padding=pad, dtype=dtype),
                   ACTIVATIONS[m.activation]()]
        if m.pool > 1:
            layers.append(nn.MaxPool2d(m.pool))
    return nn.Sequential(*layers, nn.Flatten(), *_fully_connected(spec, widths))


def load_factory(factory: str, key: str = "[model] factory"):
    """Import 'package.module:function' or 'path/to/file.py:function'; errors name `key`."""
    target, _, name = factory.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise SpecError(f"{key}: file {target} does not exist (a relative "
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
        raise SpecError(f"{key}: cannot import {target!r}: "
                        f"{type(error).__name__}: {error}") from None
    if not callable(getattr(module, name, None)):
        raise SpecError(f"{key}: {target} has no function {name!r}")
    return getattr(module, name)


def build_loss(spec: JobSpec):
    """fn(output, target) -> the batch's mean loss, as [job] loss names it.

    Mean, not sum, as torch's default: DDP averages the ranks' gradients, so a loss that
    is a mean over its samples gives the gradient of the global batch's mean."""
    name = spec.loss()
    if name == "huber":
        return functools.partial(F.huber_loss, delta=spec.job.huber_delta)
    return LOSSES[name] if name in LOSSES else load_factory(name, "[job] loss")


def output_width(spec: JobSpec, train, val) -> int:
    """The model's output width the data asks for: its classes (the largest label + 1) or
    its target columns."""
    y = train.arrays[1]
    if spec.job.task == "regression":
        return y.shape[1]
    return int(max(y.max(), val.arrays[1].max())) + 1


# (train, val) handed in for data that comes from no file (a Ray Dataset): see handed_datasets
_HANDED = contextvars.ContextVar("handed_datasets", default=None)


@contextlib.contextmanager
def handed_datasets(datasets):
    """Inside, build_datasets gives `datasets` (train, val) instead of the [data] table's,
    so check_job checks data from no file (a Ray Dataset) as it checks a file's."""
    token = _HANDED.set(datasets)
    try:
        yield
    finally:
        _HANDED.reset(token)


def build_datasets(spec: JobSpec):
    """(train, val) datasets of the [data] table (or those handed in), in the job's dtype."""
    if _HANDED.get() is not None:
        return _HANDED.get()
    d, dtype = spec.data, dtype_of(spec)
    if d.path:
        return _file_datasets(spec, dtype)
    if spec.job.task == "regression":  # "synthetic": y = x @ W + b + noise, seeded
        kwargs = dict(n_samples=d.n_samples, n_features=d.n_features, n_targets=d.n_targets,
                      seed=spec.job.seed, dtype=dtype, val_fraction=d.val_fraction)
        return (synthetic_regression(split="train", **kwargs),
                synthetic_regression(split="val", **kwargs))
    if d.name == "digits":
        kwargs = dict(val_fraction=d.val_fraction, dtype=dtype)
    else:
        kwargs = dict(n_samples=d.n_samples, n_features=d.n_features, n_classes=d.n_classes,
                      seed=spec.job.seed, dtype=dtype, val_fraction=d.val_fraction)
    return get_dataset(d.name, split="train", **kwargs), get_dataset(d.name, split="val",
                                                                      **kwargs)


def _file_datasets(spec: JobSpec, dtype):
    """The user's file, split into train and val by [data] val_fraction (seeded by the
    job's seed, so every rank and every run splits alike), or all of it for training and
    [data] val_path for validation.

    Class labels become int64; regression targets become the job's float dtype, always as
    (samples, columns): a 1-D y is one column, so it matches a model ending in width 1
    (torch's mse_loss wants the output's shape, and (N, 1) against (N,) would broadcast).
    The features stay where they are (a .npy on disk) and are read a batch at a time."""
    d = spec.data
    x, y = _file_arrays(spec, "path", d.path, d.y_path, dtype)
    if d.val_path:
        val_x, val_y = _file_arrays(spec, "val_path", d.val_path, d.val_y_path, dtype)
        for what, train, val in (("features", x, val_x), ("target columns", y, val_y)):
            if train.ndim == 2 and train.shape[1] != val.shape[1]:
                raise SpecError(f"[data] val_path: {d.val_path} has {val.shape[1]} {what} "
                                f"but {d.path} has {train.shape[1]}; give a validation file "
                                "of the same data")
        return RowsDataset(Rows(x, dtype=dtype), y), RowsDataset(Rows(val_x, dtype=dtype), val_y)
    return split_datasets(x, y, d.val_fraction, spec.job.seed, dtype)


def split_datasets(x, y, val_fraction: float, seed: int, dtype):
    """(train, val) of the seeded val_fraction split, the features as lazy rows: each batch
    is read and cast to dtype when asked for, so neither split is ever copied whole (a
    .npy larger than memory trains; x may be any array-like of rows)."""
    datasets = []
    for split in ("train", "val"):
        keep = split_indices(len(y), split, val_fraction, seed)
        datasets.append(RowsDataset(Rows(x, keep, dtype), y[keep]))
    return tuple(datasets)


def _file_arrays(spec: JobSpec, key: str, path: str, y_path: str, dtype):
    """(features as rows, targets) of one data file, checked for the task; errors name
    [data] key."""
    d, regression = spec.data, spec.job.task == "regression"
    try:
        x, y = load_arrays(path, x_key=d.x_key, y_key=d.y_key, y_path=y_path,
                           label_column=d.label_column)
        (check_regression if regression else check_classification)(x, y, path)
    except DataFileError as error:
        raise SpecError(f"[data] {key}: {error}") from None
    x = x.reshape(len(x), -1)  # images and the like: one row of features per sample
    y = np.asarray(y, dtype=dtype).reshape(len(y), -1) if regression else y.astype(np.int64)
    return x, y


def build_optimizer(spec: JobSpec, params):
    """The optimizer the [optimizer] table describes, over params."""
    o = spec.optimizer
    eps = {"eps": o.eps} if o.eps else {}  # 0: the optimizer's own default
    if o.name == "sgd":
        return optim.SGD(params, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                         weight_decay=o.weight_decay, nesterov=o.nesterov)
    if o.name == "rmsprop":
        return optim.RMSprop(params, lr=o.lr, alpha=o.alpha, weight_decay=o.weight_decay,
                             momentum=o.momentum, centered=o.centered, **eps)
    if o.name == "adagrad":
        return optim.Adagrad(params, lr=o.lr, lr_decay=o.lr_decay, weight_decay=o.weight_decay,
                             initial_accumulator_value=o.initial_accumulator_value, **eps)
    betas = {"lr": o.lr, "betas": tuple(o.betas), "weight_decay": o.weight_decay, **eps}
    if o.name == "adamax":
        return optim.Adamax(params, **betas)
    if o.name == "nadam":
        return optim.NAdam(params, **betas, momentum_decay=o.momentum_decay,
                           decoupled_weight_decay=o.decoupled_weight_decay)
    if o.name == "radam":
        return optim.RAdam(params, **betas, decoupled_weight_decay=o.decoupled_weight_decay)
    cls = optim.Adam if o.name == "adam" else optim.AdamW
    kwargs = dict(lr=o.lr, betas=tuple(o.betas), **eps)
    if o.name == "adam" or o.weight_decay:
        kwargs["weight_decay"] = o.weight_decay
    return cls(params, **kwargs)


def build_scheduler(spec: JobSpec, optimizer):
    """A per-epoch learning-rate scheduler, or None."""
    s, schedulers = spec.scheduler, optim.lr_scheduler
    if s.name == "step":
        return schedulers.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "multistep":
        return schedulers.MultiStepLR(optimizer, milestones=s.milestones, gamma=s.gamma)
    if s.name == "exponential":
        return schedulers.ExponentialLR(optimizer, gamma=s.gamma)
    if s.name == "cosine":
        return schedulers.CosineAnnealingLR(optimizer, T_max=s.t_max or spec.job.epochs,
                                            eta_min=s.eta_min)
    if s.name == "linear":
        return schedulers.LinearLR(optimizer, start_factor=s.start_factor,
                                   end_factor=s.end_factor, total_iters=s.total_iters)
    return None


# Words of the builders' own messages (torch's texts) and the key each one is about.
MESSAGE_KEYS = {
    "optimizer": {"learning rate": "lr", "epsilon": "eps", "beta": "betas", "alpha": "alpha",
                  "lr_decay": "lr_decay", "weight_decay": "weight_decay",
                  "initial_accumulator_value": "initial_accumulator_value",
                  "momentum": "momentum", "dampening": "dampening", "nesterov": "nesterov"},
    "scheduler": {"step_size": "step_size", "gamma": "gamma", "T_max": "t_max",
                  "eta_min": "eta_min", "Starting multiplicative": "start_factor",
                  "Ending multiplicative": "end_factor", "milestones": "milestones"},
    "data": {"val_fraction": "val_fraction", "n_samples": "n_samples",
             "n_features": "n_features", "n_classes": "n_classes", "n_targets": "n_targets"},
    "model": {},
    "job": {},
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


def check_job(spec: JobSpec, source: str = "job", with_model: bool = True) -> None:
    """Build what every worker will build, in this process, so bad input fails before launch:
    the data, the model and the loss (and one forward pass of them), the optimizer and the
    scheduler. with_model=False: a user's train loop builds its own model and optimizer,
    so only the data and the loss are checked.

    Raises SpecError naming the file and key; what was built is dropped.
    """
    if spec.job.tensorboard:  # the driver writes them: under mpiexec, rank 0 after launch
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise SpecError(f"{source}: {NEEDS_TENSORBOARDX}") from None
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
    width = output_width(spec, train, val)
    if not with_model:
        with _input_errors(source, "job", "loss"):
            build_loss(spec)
        return
    with _input_errors(source, "model", model_key(spec)):
        model = build_model(spec, x.shape[1], width)
    with _input_errors(source, "job", "loss"):
        loss_fn = build_loss(spec)
    _check_sample_batch(spec, source, model, loss_fn, x[:2], y[:2], width)
    with _input_errors(source, "optimizer", "name"):
        optimizer = build_optimizer(spec, model.parameters())
    with _input_errors(source, "scheduler", "name"):
        build_scheduler(spec, optimizer)


def model_key(spec: JobSpec) -> str:
    """The [model] key that decides the model's layers, for messages about them."""
    m = spec.model
    return ("factory" if m.kind == "custom" else "channels" if m.kind == "cnn" else
            "sizes" if m.sizes else "hidden")


def _check_sample_batch(spec: JobSpec, source: str, model, loss_fn, x, y, width: int) -> None:
    """Run the model and the loss on two samples, so one that does not fit the data (or a
    custom loss that fails or gives no scalar) fails here, naming its key, not in a worker."""
    key = f"[model] {model_key(spec)}"
    outputs = (f"{width} classes" if spec.job.task == "classification" else
               f"{width} target column{'s' * (width != 1)}")
    model.eval()
    try:
        with no_grad():
            output = model(Tensor._make(x))
            fits = _output_fits(spec, output, y, width)
            if fits and spec.loss() in LOSSES:  # a custom loss is checked below, as [job] loss
                loss_fn(output, Tensor._make(y)).item()
    except Exception as error:
        raise SpecError(f"{source}: {key}: the model fails on a batch of the data "
                        f"({x.shape[1]} features, {outputs}): {type(error).__name__}: "
                        f"{_one_line(error)}; make its input and output sizes fit") from None
    if not fits:
        raise SpecError(f"{source}: {key}: the model's output has shape "
                        f"{tuple(output.shape)} for a batch of {len(y)}, but the data needs "
                        f"({len(y)}, {width}) ({outputs}); make its last layer {width} wide"
                        + (" (1-D targets are one column)" if width == 1 else ""))
    if spec.loss() not in LOSSES:
        _check_custom_loss(spec, source, model, loss_fn, x, y)


def _output_fits(spec: JobSpec, output, y, width: int) -> bool:
    """Regression: the output's shape is the targets' (N, T), as mse_loss expects.
    Classification: (N, C) scores with a column for every class in the data."""
    if spec.job.task == "regression":
        return tuple(output.shape) == y.shape
    return output.ndim == 2 and output.shape[0] == len(y) and output.shape[1] >= width


def _check_custom_loss(spec: JobSpec, source: str, model, loss_fn, x, y) -> None:
    """A custom loss returns a scalar Tensor that backward() can start from."""
    where = f"{source}: [job] loss: {spec.job.loss}"
    try:
        output = model(Tensor._make(x))  # with the graph this time, for backward
        loss = loss_fn(output, Tensor._make(y))
    except (Exception, SystemExit) as error:  # the user's code: their input's problem
        raise SpecError(f"{where} raised {type(error).__name__}: {_one_line(error)} on a "
                        "batch of 2 samples") from None
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        got = (f"a Tensor of shape {tuple(loss.shape)}" if isinstance(loss, Tensor)
               else type(loss).__name__)
        raise SpecError(f"{where} returned {got}; it must return a scalar Tensor (reduce the "
                        "batch, e.g. with .mean())")
    if output.requires_grad and not loss.requires_grad:
        raise SpecError(f"{where} returned a Tensor that does not depend on the model's "
                        "output; compute it with disttrain's ops, not numpy or .item()")
    try:
        loss.backward()
    except Exception as error:
        raise SpecError(f"{where}: backward() through it fails: {type(error).__name__}: "
                        f"{_one_line(error)}") from None
