"""torch.nn.functional's functions, written from the engine's ops (disttrain.autograd.ops)."""

from __future__ import annotations

import warnings

import numpy as np

from ..autograd import ops, random
from ..autograd.tensor import Tensor

_REDUCTIONS = ("none", "mean", "sum")


# -- layers ---------------------------------------------------------------------------
def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, one Addmm node whose gradients are all row-major."""
    return ops.linear(input, weight, bias)


def _single(value, name: str) -> int:
    """An int from an int or a square pair; the engine's kernels take one size for both axes."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise NotImplementedError(f"{name}={tuple(value)}: only equal sizes are supported")
        return int(value[0])
    return int(value)


def _sizes(shape) -> str:
    return ", ".join(str(n) for n in shape)


def _batched(op, input, *args):
    """op on a (N, C, H, W) input; a (C, H, W) one runs as a batch of one, as torch's."""
    if input.ndim == 3:
        return ops.squeeze(op(ops.unsqueeze(input, 0), *args), 0)
    return op(input, *args)


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation of (N, C, H, W) or (C, H, W) input with (out, in, kh, kw) weight."""
    stride, padding = _single(stride, "stride"), _single(padding, "padding")
    # torch's checks and texts, before numpy would fail deep inside im2col with its own
    if input.ndim not in (3, 4):
        raise RuntimeError("Expected 3D (unbatched) or 4D (batched) input to conv2d, but got "
                           f"input of size: [{_sizes(input.shape)}]")
    if weight.ndim != 4:
        raise RuntimeError(f"conv2d: weight of size [{_sizes(weight.shape)}] must be 4-D "
                           "(out_channels, in_channels, kernel height, kernel width)")
    batched = input.shape if input.ndim == 4 else (1, *input.shape)
    if batched[1] != weight.shape[1]:
        raise RuntimeError(
            f"Given groups=1, weight of size [{_sizes(weight.shape)}], expected input"
            f"[{_sizes(batched)}] to have {weight.shape[1]} channels, but got {batched[1]} "
            "channels instead")
    if bias is not None and tuple(bias.shape) != tuple(weight.shape[:1]):
        raise RuntimeError(
            f"Given weight of size [{_sizes(weight.shape)}], expected bias to be 1-dimensional "
            f"with {weight.shape[0]} elements, but got bias of size [{_sizes(bias.shape)}] "
            "instead")
    height, width = batched[2] + 2 * padding, batched[3] + 2 * padding
    if weight.shape[2] > height or weight.shape[3] > width:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({height} x {width}). Kernel size: "
            f"({weight.shape[2]} x {weight.shape[3]}). Kernel size can't be greater than "
            "actual input size")
    return _batched(ops.conv2d, input, weight, bias, stride, padding)


def max_pool2d(input, kernel_size, stride=None):
    """Max over kernel_size windows of a (N, C, H, W) or (C, H, W) input; stride defaults to
    kernel_size."""
    kernel_size = _single(kernel_size, "kernel_size")
    stride = kernel_size if stride is None else _single(stride, "stride")
    if input.ndim not in (3, 4) or input.data.size == 0:
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    channels, height, width = input.shape[-3:]
    out_h, out_w = (height - kernel_size) // stride + 1, (width - kernel_size) // stride + 1
    if out_h < 1 or out_w < 1:
        raise RuntimeError(
            f"Given input size: ({channels}x{height}x{width}). Calculated output size: "
            f"({channels}x{max(out_h, 0)}x{max(out_w, 0)}). Output size is too small")
    return _batched(ops.max_pool2d, input, kernel_size, stride)


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    """Merge dims start_dim..end_dim into one."""
    return ops.flatten(input, start_dim, end_dim)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing normalized_shape dims with the biased variance."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(normalized_shape):]) != normalized_shape:
        raise RuntimeError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size"
            f"{list(input.shape)}"
        )
    return ops.layer_norm(input, normalized_shape, weight, bias, eps)


def embedding(input, weight, padding_idx: int | None = None):
    """Rows of weight picked by integer indices; repeated indices add their gradients."""
    index = np.asarray(input.data if isinstance(input, Tensor) else input)
    if index.dtype.kind not in "iu":
        raise RuntimeError(
            "Expected tensor for argument #1 'indices' to have one of the following scalar "
            f"types: Long, Int; but got {index.dtype} instead"
        )
    if index.size and (index.min() < 0 or index.max() >= weight.shape[0]):
        raise IndexError("index out of range in self")  # torch's text; numpy's would wrap -1
    out = ops.getitem(weight, index)
    if padding_idx is None:
        return out
    # The padding row's value is used but never learned: route its gradient nowhere.
    padding_idx = padding_idx % weight.shape[0]
    keep = (index != padding_idx)[..., None]
    return ops.where(keep, out, out.detach())


# -- activations ----------------------------------------------------------------------
def relu(input, inplace: bool = False):
    """max(x, 0); inplace is accepted and ignored (the result is new)."""
    return ops.relu(input)


def tanh(input):
    """Hyperbolic tangent."""
    return ops.tanh(input)


def sigmoid(input):
    """1 / (1 + exp(-x))."""
    return ops.sigmoid(input)


def gelu(input, approximate: str = "none"):
    """GELU, the exact erf form by default, or the tanh approximation."""
    return ops.gelu(input, approximate)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    """x where x > 0, else negative_slope * x."""
    return ops.where(input.data > 0, input, input * negative_slope)


def _softmax_dim(ndim: int, dim, name: str) -> int:
    if dim is not None:
        return dim
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include "
        "dim=X as an argument.", UserWarning, stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None):
    """exp(x) / sum(exp(x)) along dim."""
    return ops.softmax(input, _softmax_dim(input.ndim, dim, "softmax"))


def log_softmax(input, dim=None):
    """log(softmax(x)) along dim, computed stably."""
    return ops.log_softmax(input, _softmax_dim(input.ndim, dim, "log_softmax"))


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Zero each element with probability p and scale the rest by 1/(1-p), when training."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return ops.mul(input, np.zeros((), dtype=input.dtype))
    keep = random.generator().random(input.shape) >= p
    mask = keep.astype(input.dtype) * input.dtype.type(1.0 / (1.0 - p))
    return ops.mul(input, mask)


# -- losses ---------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")


def _reduce(loss, reduction: str):
    if reduction == "mean":
        return ops.mean(loss)
    return ops.sum(loss) if reduction == "sum" else loss


def _difference(input, target, reduction: str):
    """input - target for the elementwise losses, warning as torch does when the shapes
    differ (broadcasting then pairs every output with every target: rarely meant)."""
    _check_reduction(reduction)
    if tuple(np.shape(target)) != tuple(input.shape):
        warnings.warn(
            f"Using a target size ({tuple(np.shape(target))}) that is different to the input "
            f"size ({tuple(input.shape)}). This will likely lead to incorrect results due to "
            "broadcasting. Please ensure they have the same size.", UserWarning, stacklevel=3,
        )
    return ops.sub(input, target)


def mse_loss(input, target, reduction: str = "mean"):
    """Mean (or sum) of squared differences."""
    diff = _difference(input, target, reduction)
    return _reduce(ops.mul(diff, diff), reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """Mean (or sum) of absolute differences; the gradient at a zero difference is 0."""
    return _reduce(ops.abs(_difference(input, target, reduction)), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """0.5 * d**2 where |d| < delta, else delta * (|d| - 0.5 * delta), for d = input - target.

    Written from where(): each branch's own gradient (d, or delta * sign(d)) flows only
    where that branch is picked, which is torch's huber_loss_backward, and the two agree
    at |d| = delta."""
    if not delta > 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    diff = _difference(input, target, reduction)
    size = ops.abs(diff)
    quadratic = ops.mul(ops.mul(diff, diff), 0.5)
    linear = ops.mul(ops.sub(size, 0.5 * delta), delta)
    return _reduce(ops.where(size.data < delta, quadratic, linear), reduction)


def _same_size(input, target, what: str) -> None:
    if tuple(np.shape(_array(target))) != tuple(input.shape):
        raise ValueError(what.format(target=tuple(np.shape(_array(target))),
                                     input=tuple(input.shape)))


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """Binary cross-entropy of probabilities in [0, 1] against targets of the same shape;
    each log is clamped at -100, as torch's, so a probability of 0 or 1 stays finite."""
    _check_reduction(reduction)
    _same_size(input, target, "Using a target size ({target}) that is different to the input "
               "size ({input}) is deprecated. Please ensure they have the same size.")
    x = input.data
    if x.size and not (np.all(x >= 0) and np.all(x <= 1)):  # NaN fails both, as in torch
        raise RuntimeError("all elements of input should be between 0 and 1")
    return _reduce(ops.binary_cross_entropy(input, target, weight), reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",
                                     pos_weight=None):
    """Sigmoid and binary cross-entropy in one stable step, as torch's; pos_weight weighs
    the positive targets (broadcast along the last dim)."""
    _check_reduction(reduction)
    _same_size(input, target, "Target size ({target}) must be the same as input size ({input})")
    return _reduce(ops.binary_cross_entropy_with_logits(input, target, weight, pos_weight),
                   reduction)


def _rows(input, target):
    """(N, C) scores and (N,) targets from any of torch's layouts, plus the output shape."""
    target = np.asarray(target.data if isinstance(target, Tensor) else target)
    if input.ndim == 1:  # one sample, (C,) with a 0-d target
        return ops.unsqueeze(input, 0), target.reshape(1), ()
    if input.ndim > 2:  # (N, C, d1, ...): put classes last, flatten the rest into rows
        dims = (0,) + tuple(range(2, input.ndim)) + (1,)
        rows = ops.reshape(ops.permute(input, dims), (-1, input.shape[1]))
        return rows, target.reshape(-1), tuple(target.shape)
    if target.ndim == 1 and target.shape[0] != input.shape[0]:
        raise ValueError(
            f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0]})."
        )
    return input, target, tuple(target.shape)


def _pick(logp, target, weight, ignore_index: int, reduction: str, out_shape):
    """-logp[i, target[i]] per row, weighted, ignore_index rows dropped, then reduced."""
    if target.dtype.kind not in "iu":
        raise RuntimeError(f'"nll_loss" not implemented for \'{target.dtype}\'')
    rows = np.arange(target.shape[0])
    ignored = target == ignore_index
    any_ignored = bool(ignored.any())
    classes = np.where(ignored, 0, target) if any_ignored else target
    bad = (classes < 0) | (classes >= logp.shape[1])
    if bad.any():
        raise IndexError(f"Target {int(classes[bad][0])} is out of bounds.")
    picked = ops.getitem(logp, (rows, classes))
    scale = None
    if weight is not None:
        scale = np.asarray(weight.data if isinstance(weight, Tensor) else weight)[classes]
    if any_ignored:
        scale = np.where(ignored, 0, 1 if scale is None else scale)
    if scale is not None:
        scale = scale.astype(logp.dtype, copy=False)
    if reduction == "none":
        loss = ops.neg(picked) if scale is None else ops.mul(picked, -scale)
        return loss if loss.shape == out_shape else ops.reshape(loss, out_shape)
    # The minus sign and the 1/count ride on one scalar multiply: fewer graph nodes.
    total = ops.sum(picked if scale is None else ops.mul(picked, scale))
    if reduction == "sum":
        return ops.neg(total)
    count = float(scale.sum()) if scale is not None else float(target.shape[0])
    return ops.mul(total, -1.0 / count if count else np.nan)


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of integer class targets, given log-probabilities."""
    _check_reduction(reduction)
    logp, target, out_shape = _rows(input, target)
    return _pick(logp, target, weight, ignore_index, reduction, out_shape)


def cross_entropy(input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0):
    """log_softmax + nll_loss for class indices, or -sum(p * log_softmax) for probabilities."""
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    target_array = np.asarray(target.data if isinstance(target, Tensor) else target)
    if target_array.dtype.kind == "f":
        return _soft_cross_entropy(input, target_array, weight, reduction, label_smoothing)
    scores, target_array, out_shape = _rows(input, target_array)
    logp = ops.log_softmax(scores, 1)
    nll = _pick(logp, target_array, weight, ignore_index, reduction, out_shape)
    if label_smoothing == 0.0:
        return nll
    return _smoothed(nll, logp, target_array, weight, ignore_index, reduction, label_smoothing,
                     out_shape)


def _smoothed(nll, logp, target, weight, ignore_index, reduction, eps, out_shape):
    """Mix in the uniform-target loss, as torch's cross_entropy_loss_label_smoothing."""
    n_classes = logp.shape[1]
    w = None if weight is None else np.asarray(weight.data if isinstance(weight, Tensor)
                                               else weight).astype(logp.dtype)
    smooth = ops.neg(ops.sum(logp if w is None else ops.mul(logp, w), 1))
    ignored = target == ignore_index
    if ignored.any():
        smooth = ops.mul(smooth, (~ignored).astype(logp.dtype))
    if reduction == "none":
        smooth = ops.reshape(smooth, out_shape)
    elif reduction == "sum":
        smooth = ops.sum(smooth)
    else:
        kept = target[~ignored]
        count = float(w[kept].sum()) if w is not None else float(kept.size)
        smooth = ops.mul(ops.sum(smooth), np.float64(1.0) / count if count else np.nan)
    return ops.add(ops.mul(nll, 1.0 - eps), ops.mul(smooth, eps / n_classes))


def _soft_cross_entropy(input, target, weight, reduction, eps):
    """Cross-entropy against class probabilities (target has the input's shape)."""
    if target.shape != tuple(input.shape):
        raise RuntimeError(
            f"Expected target size {list(input.shape)}, got {list(target.shape)}"
        )
    class_dim = 0 if input.ndim == 1 else 1
    n_classes = input.shape[class_dim]
    if eps:
        target = target * (1 - eps) + eps / n_classes
    logp = ops.log_softmax(input, class_dim)
    if weight is not None:
        w = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
        shape = (n_classes,) + (1,) * (input.ndim - class_dim - 1)
        target = target * w.reshape(shape)
    loss = ops.neg(ops.sum(ops.mul(logp, target.astype(logp.dtype, copy=False)), class_dim))
    return _reduce(loss, reduction)
