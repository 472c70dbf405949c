"""torch.nn.functional's functions, written from the engine's ops (disttrain.autograd.ops)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..autograd import grad_mode, ops, random
from ..autograd.tensor import TORCH_DTYPE_NAMES, Tensor

_REDUCTIONS = ("none", "mean", "sum")


# -- layers ---------------------------------------------------------------------------
def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, one Addmm node whose gradients are all row-major."""
    return ops.linear(input, weight, bias)


def _conv_pair(value, name: str) -> tuple:
    """(height, width) from an int or a pair, with torch's conv2d text for anything else."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise RuntimeError(f"expected {name} to be a single integer value or a list of 2 "
                               "values to match the convolution dimensions, but got "
                               f"{name}={list(value)}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _pool_pair(op: str, value, name: str, verb: str = "must either be") -> tuple:
    """(height, width) from an int or a pair, with torch's pooling text otherwise."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, 2):
            raise RuntimeError(f"{op}: {name} {verb} a single int, or a tuple of two ints")
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _sizes(shape) -> str:
    return ", ".join(str(n) for n in shape)


def _batched(op, input, *args):
    """op on a (N, C, H, W) input; a (C, H, W) one runs as a batch of one, as torch's."""
    if input.ndim == 3:
        return ops.squeeze(op(ops.unsqueeze(input, 0), *args), 0)
    return op(input, *args)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of (N, C, H, W) or (C, H, W) input with (out, in, kh, kw) weight.
    stride and dilation: an int or a (height, width) pair; padding: an int, a pair, or
    "valid" (none) or "same" (the output as large as the input, stride 1 only; an even
    kernel's odd pixel goes to the bottom and right, as torch's). groups splits the
    channels: weight is (out, in / groups, kh, kw), group g's outputs see its inputs only."""
    stride = _conv_pair(stride, "stride")
    dilation = _conv_pair(dilation, "dilation")
    # torch's checks and texts, before numpy would fail deep inside im2col with its own
    if min(stride) <= 0:
        raise RuntimeError("non-positive stride is not supported")
    if min(dilation) <= 0:  # torch names the values only when none is negative
        raise RuntimeError("dilation should be greater than zero" + (
            f", but got {list(dilation)}" if min(dilation) == 0 else ""))
    if input.ndim not in (3, 4):
        raise RuntimeError("Expected 3D (unbatched) or 4D (batched) input to conv2d, but got "
                           f"input of size: [{_sizes(input.shape)}]")
    if weight.ndim != 4:
        raise RuntimeError(f"conv2d: weight of size [{_sizes(weight.shape)}] must be 4-D "
                           "(out_channels, in_channels, kernel height, kernel width)")
    padding = _conv_padding(padding, stride, dilation, weight.shape[2:])
    if min(padding) < 0:
        raise RuntimeError("negative padding is not supported")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if weight.shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size [[{_sizes(weight.shape)}]] "
                           "instead")
    if min(weight.shape[2:]) <= 0:
        raise RuntimeError("kernel size should be greater than zero, but got kernel_height: "
                           f"{weight.shape[2]} kernel_width: {weight.shape[3]}")
    batched = input.shape if input.ndim == 4 else (1, *input.shape)
    if batched[1] != weight.shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size [{_sizes(weight.shape)}], expected input"
            f"[{_sizes(batched)}] to have {weight.shape[1] * groups} channels, but got "
            f"{batched[1]} channels instead")
    if bias is not None and tuple(bias.shape) != tuple(weight.shape[:1]):
        raise RuntimeError(
            f"Given weight of size [{_sizes(weight.shape)}], expected bias to be 1-dimensional "
            f"with {weight.shape[0]} elements, but got bias of size [{_sizes(bias.shape)}] "
            "instead")
    height, width = batched[2] + padding[0] + padding[1], batched[3] + padding[2] + padding[3]
    kernel_h, kernel_w = (d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:]))
    if kernel_h > height or kernel_w > width:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({height} x {width}). Kernel size: "
            f"({kernel_h} x {kernel_w}). Kernel size can't be greater than "
            "actual input size")
    if groups == 1:
        return _batched(ops.conv2d, input, weight, bias, stride, padding, dilation)
    # one convolution per group on its slice of the channels, joined: the slices' and
    # cat's gradients route each group's back where it came from
    ins, outs = weight.shape[1], weight.shape[0] // groups
    axis = input.ndim - 3
    parts = [_batched(ops.conv2d, ops.getitem(input, (slice(None),) * axis
                                             + (slice(g * ins, (g + 1) * ins),)),
                      ops.getitem(weight, slice(g * outs, (g + 1) * outs)),
                      None if bias is None else ops.getitem(bias, slice(g * outs, (g + 1) * outs)),
                      stride, padding, dilation)
             for g in range(groups)]
    return ops.cat(parts, axis)


def _conv_padding(padding, stride, dilation, kernel) -> tuple:
    """(top, bottom, left, right) from conv2d's padding argument."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if stride != (1, 1):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2
    ph, pw = _conv_pair(padding, "padding")
    return ph, ph, pw, pw


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over kernel_size windows of a (N, C, H, W) or (C, H, W) input, as torch's: sizes
    an int or a (height, width) pair, stride defaulting to kernel_size, padding (never
    chosen) at most half the dilated kernel, ceil_mode for windows that run off the end;
    return_indices adds each maximum's flat index in its (H, W) plane."""
    sizes = _pool_sizes("max_pool2d", kernel_size, stride, padding, dilation)
    if input.ndim not in (3, 4) or input.data.size == 0:
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    kernel, stride, pad, dilation = sizes
    extra = _pool_ceil_extra(input.shape, *sizes, ceil_mode)
    padding4 = (pad[0], pad[0] + extra[0], pad[1], pad[1] + extra[1])
    if not return_indices:
        return _batched(ops.max_pool2d, input, kernel, stride, padding4, dilation)
    if input.ndim == 3:
        out, indices = ops.max_pool2d(ops.unsqueeze(input, 0), kernel, stride, padding4,
                                      dilation, True)
        return ops.squeeze(out, 0), ops.squeeze(indices, 0)
    return ops.max_pool2d(input, kernel, stride, padding4, dilation, True)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over kernel_size windows of a (N, C, H, W) or (C, H, W) input, as torch's: zero
    padding (counted in the divisor with count_include_pad), ceil_mode's windows cut at
    the padding's far side, or every window divided by divisor_override."""
    sizes = _pool_sizes("avg_pool2d", kernel_size, stride, padding, 1)
    if input.ndim not in (3, 4) or 0 in input.shape[-3:]:
        raise RuntimeError("Expected 3D or 4D (batch mode) tensor with optional 0 dim batch "
                           f"size for input, but got:[{_sizes(input.shape)}]")
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    extra = _pool_ceil_extra(input.shape, *sizes, ceil_mode)
    return _batched(ops.avg_pool2d, input, sizes[0], sizes[1], sizes[2], extra,
                    count_include_pad, divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """Means over the windows torch's adaptive pooling picks for output_size (an int, or a
    pair whose None keeps that input size): rows floor(i*H/H') to ceil((i+1)*H/H')."""
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) != 2:
        raise RuntimeError("adaptive_avg_pool2d: output_size must be 2")
    if input.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got "
                           f"[{_sizes(input.shape)}]")
    if input.dtype.kind != "f":
        name = TORCH_DTYPE_NAMES.get(input.dtype.name, input.dtype.name)
        raise NotImplementedError(f'"adaptive_avg_pool2d" not implemented for \'{name}\'')
    for dim in range(input.ndim - 3, input.ndim):
        if input.shape[dim] == 0:
            raise RuntimeError("adaptive_avg_pool2d(): Expected input to have non-zero size for "
                               f"non-batch dimensions, but input has sizes [{_sizes(input.shape)}] "
                               f"with dimension {dim} being empty")
    height, width = input.shape[-2:]
    out_h, out_w = (size if n is None else int(n) for n, size in zip(sizes, (height, width)))
    if min(out_h, out_w) < 0:
        raise RuntimeError("adaptive_avg_pool2d: elements of output_size must be greater than "
                           f"or equal to 0 but received {{{out_h}, {out_w}}}")
    if out_h and out_w and height % out_h == 0 and width % out_w == 0:
        # even windows: plain average pooling, the same sums in the same order as torch
        kernel = (height // out_h, width // out_w)
        return avg_pool2d(input, kernel, kernel)
    rows = Tensor._make(_adaptive_weights(height, out_h, input.dtype))
    columns = Tensor._make(_adaptive_weights(width, out_w, input.dtype).T)
    return ops.matmul(ops.matmul(rows, input), columns)


def _adaptive_weights(size: int, out: int, dtype) -> np.ndarray:
    """(out, size): row i averages torch's adaptive window i of an axis of `size`."""
    weights = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        weights[i, start:end] = 1 / (end - start)
    return weights


def _pool_sizes(op: str, kernel_size, stride, padding, dilation) -> tuple:
    """(kernel, stride, padding, dilation) as (height, width) pairs, with torch's checks."""
    kernel = _pool_pair(op, kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pool_pair(
        op, stride, "stride", "must either be omitted,")
    pad = _pool_pair(op, padding, "padding")
    dilation = _pool_pair(op, dilation, "dilation", "must be either")
    if 0 in stride:
        raise RuntimeError("stride should not be zero")
    if min(kernel) <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kH: {kernel[0]} "
                           f"kW: {kernel[1]}")
    if min(stride) < 0:
        raise RuntimeError(f"stride should be greater than zero, but got dH: {stride[0]} "
                           f"dW: {stride[1]}")
    if min(dilation) <= 0:
        raise RuntimeError("dilation should be greater than zero, but got dilationH: "
                           f"{dilation[0]} dilationW: {dilation[1]}")
    if min(pad) < 0:
        raise RuntimeError(f"pad must be non-negative, but got pad: {min(pad)}")
    for p, k, d in zip(pad, kernel, dilation):
        if p > (d * (k - 1) + 1) // 2:
            raise RuntimeError("pad should be at most half of effective kernel size, but got "
                               f"pad={p}, kernel_size={k} and dilation={d}")
    return kernel, stride, pad, dilation


def _pool_ceil_extra(shape, kernel, stride, pad, dilation, ceil_mode) -> list:
    """What ceil_mode's last windows need beyond the bottom and right padding (zero
    without it); raises torch's error when a side has no window at all."""
    channels, height, width = shape[-3:]
    out_h, out_w = (_pool_out_size(size, k, s, p, d, ceil_mode) for size, k, s, p, d
                    in zip((height, width), kernel, stride, pad, dilation))
    if out_h < 1 or out_w < 1:
        raise RuntimeError(
            f"Given input size: ({channels}x{height}x{width}). Calculated output size: "
            f"({channels}x{max(out_h, 0)}x{max(out_w, 0)}). Output size is too small")
    return [max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p)) for o, s, d, k, size, p
            in zip((out_h, out_w), stride, dilation, kernel, (height, width), pad)]


def _pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: with ceil_mode, a last window must start inside the
    input or its left padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    """Merge dims start_dim..end_dim into one."""
    return ops.flatten(input, start_dim, end_dim)


def batch_norm(input, running_mean, running_var, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5):
    """Normalise each channel (dim 1) of an (N, C, ...) input, as torch's batch_norm: by
    the batch's mean and biased variance when training (then running_mean and running_var,
    if given, move toward them by momentum, the variance unbiased), else by the running
    ones; then scale by weight and shift by bias."""
    if input.dtype.kind != "f":
        name = TORCH_DTYPE_NAMES.get(input.dtype.name, input.dtype.name)
        raise NotImplementedError(f'"batch_norm" not implemented for \'{name}\'')
    channels = input.shape[1] if input.ndim > 1 else 0
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.data.size != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {t.data.size}")
    per_channel = input.data.size // max(channels, 1)
    if training and per_channel <= 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size torch.Size([{_sizes(input.shape)}])")
    if not training and running_mean is None:
        raise RuntimeError("running_mean must be defined in evaluation mode")
    dims = (0, *range(2, input.ndim))
    shape = (1, channels) + (1,) * (input.ndim - 2)
    if training:
        mean = ops.mean(input, dims, keepdim=True)
        centered = ops.sub(input, mean)
        var = ops.mean(ops.mul(centered, centered), dims, keepdim=True)
        if running_mean is not None:  # torch's update, outside the graph
            batch_mean = mean.data.reshape(channels)
            unbiased = var.data.reshape(channels) * (per_channel / (per_channel - 1))
            running_mean.data[...] = momentum * batch_mean + (1 - momentum) * running_mean.data
            running_var.data[...] = momentum * unbiased + (1 - momentum) * running_var.data
    else:
        centered = ops.sub(input, ops.reshape(running_mean, shape))
        var = ops.reshape(running_var, shape)
    out = ops.div(centered, ops.sqrt(ops.add(var, eps)))
    if weight is not None:
        out = ops.mul(out, ops.reshape(weight, shape))
    if bias is not None:
        out = ops.add(out, ops.reshape(bias, shape))
    return out


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """Normalise each sample's channels (dim 1) in num_groups groups by the group's mean
    and biased variance, then scale and shift per channel, as torch's group_norm."""
    if input.ndim < 2:
        raise RuntimeError("Expected at least 2 dimensions for input tensor but received "
                           f"{input.ndim}")
    n, channels = input.shape[:2]
    if channels % num_groups:
        raise RuntimeError("Expected number of channels in input to be divisible by "
                           f"num_groups, but got input of shape [{_sizes(input.shape)}] and "
                           f"num_groups={num_groups}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or t.shape[0] != channels):
            raise RuntimeError(f"Expected {name} to be a vector of size equal to the number of "
                               f"channels in input, but got {name} of shape "
                               f"[{_sizes(t.shape)}] and input of shape "
                               f"[{_sizes(input.shape)}]")
    grouped = ops.reshape(input, (n, num_groups, -1))
    centered = ops.sub(grouped, ops.mean(grouped, 2, keepdim=True))
    var = ops.mean(ops.mul(centered, centered), 2, keepdim=True)
    out = ops.reshape(ops.div(centered, ops.sqrt(ops.add(var, eps))), input.shape)
    shape = (1, channels) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = ops.mul(out, ops.reshape(weight, shape))
    if bias is not None:
        out = ops.add(out, ops.reshape(bias, shape))
    return out


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


def silu(input, inplace: bool = False):
    """x * sigmoid(x); the product rule gives torch's sigmoid(x) * (1 + x * (1 - sigmoid(x)))."""
    return ops.mul(input, ops.sigmoid(input))


def _with_value(graph, value):
    """graph's gradient with value, numpy's accurate one: graph + (value - graph).

    For log(1 + exp(x)) at every finite x, which no single op gives without overflow, and
    for elu's expm1. The graph (the ops below) gives torch's backward formula exactly; the
    constant added is only the graph's rounding error where the log or exp cancels, which
    has no derivative of its own."""
    return ops.add(graph, value - graph.data)


def _log1p_exp(x):
    """log(1 + exp(x)) for every finite x, with log1p's tiny values (3.7e-44 at x = -100).

    The graph is the logits-BCE op with a zero target, x - log_sigmoid(x): finite for all
    x, gradient sigmoid(x) (torch's softplus_backward z / (z + 1)), but it cancels to 0
    below x = -37; logaddexp gives the value as torch's max(x, 0) + log1p(exp(-|x|))."""
    with np.errstate(invalid="ignore"):  # NaN in, NaN out, as torch: no warning
        value = np.logaddexp(0, x.data)
    return _with_value(ops.binary_cross_entropy_with_logits(x, 0), value)


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    """log(1 + exp(beta * x)) / beta, and x itself (gradient 1) where beta * x > threshold."""
    scaled = ops.mul(input, beta)
    return ops.where(scaled.data > threshold, input, ops.div(_log1p_exp(scaled), beta))


def _expm1(x):
    """exp(x) - 1 with expm1's value, as torch's elu forward, and exp(x) as its gradient, as
    torch's elu backward (ops.expm1's gradient, expm1(x) + 1, rounds differently near 0)."""
    return _with_value(ops.sub(ops.exp(x), 1.0), np.expm1(x.data))


def elu(input, alpha: float = 1.0, inplace: bool = False):
    """alpha * (exp(x) - 1) where x <= 0, else x; the gradient at 0 is alpha, as torch's."""
    # exp sees min(x, 0): exp of a large x, unused, would overflow and its gradient be NaN.
    negative = ops.mul(_expm1(ops.clamp(input, max=0.0)), alpha)
    return ops.where(input.data <= 0, negative, input)  # torch's test: NaN takes the x branch


def hardtanh(input, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
    """x clamped to [min_val, max_val]. The gradient is 0 at the bounds themselves, as
    torch's hardtanh_backward (clamp's would pass it there); NaN passes g, as in torch's
    scalar loop (its vectorised loop gives 0, so torch's own answer depends on position)."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    x = input.data
    outside = (x <= min_val) | (x >= max_val)
    return ops.where(outside, ops.clamp(input.detach(), min_val, max_val), input)


def logsigmoid(input):
    """log(sigmoid(x)) = -softplus(-x), finite for every finite x; gradient sigmoid(-x)."""
    return ops.neg(_log1p_exp(ops.neg(input)))


def mish(input, inplace: bool = False):
    """x * tanh(softplus(x)), softplus without a threshold, as torch's mish."""
    return ops.mul(input, ops.tanh(_log1p_exp(input)))


def softsign(input):
    """x / (1 + |x|)."""
    return ops.div(input, ops.add(ops.abs(input), 1))


def relu6(input, inplace: bool = False):
    """x clamped to [0, 6]: hardtanh's, so the gradient is 0 at 0 and 6, as torch's."""
    return hardtanh(input, 0.0, 6.0)


def hardsigmoid(input, inplace: bool = False):
    """relu6(x + 3) / 6, with torch's gradient (see the Hardsigmoid rule)."""
    return ops.hardsigmoid(input)


def hardswish(input, inplace: bool = False):
    """x * relu6(x + 3) / 6, with torch's gradient (see the Hardswish rule)."""
    return ops.hardswish(input)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input, inplace: bool = False):
    """scale * elu(x, alpha) with torch's constants."""
    return ops.mul(elu(input, _SELU_ALPHA), _SELU_SCALE)


def celu(input, alpha: float = 1.0, inplace: bool = False):
    """alpha * (exp(x / alpha) - 1) where x <= 0, else x."""
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    negative = ops.mul(_expm1(ops.div(ops.clamp(input, max=0.0), alpha)), alpha)
    return ops.where(input.data <= 0, negative, input)


def prelu(input, weight):
    """x where x > 0, else weight * x, weight per channel (dim 1) or one for all."""
    channels = input.shape[1] if input.ndim >= 2 else 1
    if weight.data.size not in (1, channels) or (weight.data.size > 1 and input.ndim < 2):
        raise RuntimeError("Mismatch of parameter numbers and input channel size. Found "
                           f"parameter numbers = {weight.data.size} and channel size = "
                           f"{channels}.")
    slope = weight if weight.data.size == 1 or input.ndim < 2 else ops.reshape(
        weight, (1, channels) + (1,) * (input.ndim - 2))
    return ops.where(input.data > 0, input, ops.mul(input, slope))


def threshold(input, threshold: float, value: float, inplace: bool = False):
    """x where x > threshold, else value."""
    return ops.where(input.data > threshold, input, ops.mul(input.detach(), 0.0) + value)


def tanhshrink(input):
    """x - tanh(x)."""
    return ops.sub(input, ops.tanh(input))


def softshrink(input, lambd: float = 0.5):
    """x - lambd above lambd, x + lambd below -lambd, else 0."""
    if lambd < 0:
        name = TORCH_DTYPE_NAMES.get(input.dtype.name, input.dtype.name).capitalize()
        raise RuntimeError(f"lambda must be in range [0, 3.40282e+38] for input dtype {name}, "
                           f"but found {lambd:g}")
    x = input.data
    return ops.where(x > lambd, ops.sub(input, lambd),
                     ops.where(x < -lambd, ops.add(input, lambd), ops.mul(input, 0.0)))


def hardshrink(input, lambd: float = 0.5):
    """x where |x| > lambd, else 0."""
    x = input.data
    return ops.where((x > lambd) | (x < -lambd), input, ops.mul(input, 0.0))


def glu(input, dim: int = -1):
    """a * sigmoid(b), a and b the two halves of input along dim."""
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    dim = dim % input.ndim
    if input.shape[dim] % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {dim} is size "
                           f"{input.shape[dim]}")
    half = input.shape[dim] // 2
    a = ops.getitem(input, (slice(None),) * dim + (slice(0, half),))
    b = ops.getitem(input, (slice(None),) * dim + (slice(half, None),))
    return ops.mul(a, ops.sigmoid(b))


def softmin(input, dim=None):
    """softmax(-x) along dim."""
    return ops.softmax(ops.neg(input), _softmax_dim(input.ndim, dim, "softmin"))


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


def _channel_dropout(input, p: float, training: bool, batched: bool):
    """Zero whole channels with probability p (one draw per sample and channel, broadcast
    over the rest) and scale the others by 1/(1-p), when training."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    lead = 2 if batched else 1
    shape = input.shape[:lead] + (1,) * (input.ndim - lead)
    if p == 1.0:
        return ops.mul(input, np.zeros(shape, dtype=input.dtype))
    keep = random.generator().random(shape) >= p
    return ops.mul(input, keep.astype(input.dtype) * input.dtype.type(1.0 / (1.0 - p)))


def dropout1d(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Channel-wise dropout of (N, C, L) or (C, L) input, as torch's dropout1d."""
    if input.ndim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {input.ndim}D input. Note that "
            "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
            "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
            "inputs).")
    return _channel_dropout(input, p, training, batched=input.ndim == 3)


def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Channel-wise dropout of (N, C, H, W) input, as torch's dropout2d: with torch's
    warnings, a 3-D input is taken as (N, C, L) and other ranks as (N, C, ...)."""
    if input.ndim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is deprecated and "
            "will result in an error in a future release. To retain the behavior and silence "
            "this warning, please use dropout instead. Note that dropout2d exists to provide "
            "channel-wise dropout on inputs with 2 spatial dimensions, a channel dimension, and "
            "an optional batch dimension (i.e. 3D or 4D inputs).", UserWarning, stacklevel=2)
    if input.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D "
            "dropout behavior is desired - input is interpreted as shape (N, C, L), where C is "
            "the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            UserWarning, stacklevel=2)
    return _channel_dropout(input, p, training, batched=input.ndim >= 2)


# -- tensor utilities -----------------------------------------------------------------
def one_hot(tensor, num_classes: int = -1):
    """(*, num_classes) int64 tensor with a 1 at each index; num_classes=-1 infers max + 1."""
    if not isinstance(tensor, Tensor):
        raise TypeError("one_hot(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(tensor).__name__}")
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
        raise TypeError("one_hot(): argument 'num_classes' (position 2) must be int, not "
                        f"{type(num_classes).__name__}")
    index = tensor.data
    if index.dtype != np.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    num_classes = _class_count(index, int(num_classes))
    return Tensor._make((index[..., None] == np.arange(num_classes)).astype(np.int64))


def _class_count(index, num_classes: int) -> int:
    """num_classes checked against the indices, in torch's order and words."""
    if index.size == 0:
        if num_classes <= 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        return num_classes
    if index.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    if num_classes == -1:
        return int(index.max()) + 1
    if index.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    return num_classes


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input, pad, mode: str = "constant", value=None):
    """Pad (or, with negative sizes, crop) the last len(pad) // 2 dims: pad is (left, right)
    of the last dim, then of the one before, and so on. mode "constant" fills with value;
    "reflect", "replicate" and "circular" (as torch's: 1 to 3 dims of an input with one
    or two more) gather from the input, so the gradient adds back where each came from."""
    _check_pad(input, pad, mode, value)
    if mode != "constant":
        return _pad_gathered(input, pad, mode)
    out = input
    for k in range(len(pad) // 2):
        out = _pad_dim(out, input.ndim - 1 - k, pad[2 * k], pad[2 * k + 1], value or 0)
    return ops.clone(input) if out is input else out  # always a new tensor, as torch's


def _pad_gathered(input, pad, mode: str):
    """reflect / replicate / circular: one integer-index gather per padded dim."""
    out = input
    for k in range(len(pad) // 2):
        dim, (left, right) = input.ndim - 1 - k, pad[2 * k:2 * k + 2]
        size = out.shape[dim]
        if mode == "circular":  # torch wraps what is left after cropping
            kept = slice(max(-left, 0), size - max(-right, 0))
            out = ops.getitem(out, (slice(None),) * dim + (kept,))
            size, left, right = out.shape[dim], max(left, 0), max(right, 0)
        source = np.arange(-left, size + right)
        if mode == "reflect":
            source = np.abs(source)
            source = np.where(source >= size, 2 * (size - 1) - source, source)
        elif mode == "replicate":
            source = np.clip(source, 0, size - 1)
        else:
            source = source % size
        out = ops.getitem(out, (slice(None),) * dim + (source,))
    return out


def _check_pad(input, pad, mode, value) -> None:
    if not isinstance(pad, (tuple, list)):
        raise TypeError("pad(): argument 'pad' (position 2) must be tuple of ints, not "
                        f"{type(pad).__name__}")
    for pos, size in enumerate(pad):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise TypeError("pad(): argument 'pad' (position 2) must be tuple of ints, but "
                            f"found element of type {type(size).__name__} at pos {pos}")
    if value is not None and not isinstance(value, (int, float, np.number)):
        raise TypeError("pad(): argument 'value' (position 4) must be float, not "
                        f"{type(value).__name__}")
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if mode != "constant":
        _check_gathered_pad(input, pad, mode, value)
    elif len(pad) // 2 > input.ndim:
        raise RuntimeError(
            "Padding length should be less than or equal to two times the input dimension but "
            f"got padding length {len(pad)} and input of dimension {input.ndim}")


def _check_gathered_pad(input, pad, mode, value) -> None:
    """torch's checks and texts for the reflect, replicate and circular modes."""
    if value is not None:
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    dims = len(pad) // 2
    if not 1 <= dims <= 3 or input.ndim not in (dims + 1, dims + 2):
        raise NotImplementedError(
            f"Padding size {len(pad)} is not supported for {input.ndim}D input tensor.\n"
            "Supported combinations for non-constant padding:\n"
            "  - 2D or 3D input: padding size = 2 (pads last dimension)\n"
            "  - 3D or 4D input: padding size = 4 (pads last 2 dimensions)\n"
            "  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)")
    if 0 in input.shape[input.ndim - dims - 1:]:  # all but a batch dim
        raise RuntimeError(f"Expected {dims + 1}D or {dims + 2}D (batch mode) tensor with "
                           "possibly 0 batch size and other non-zero dimensions for input, but "
                           f"got: [{_sizes(input.shape)}]")
    for k in range(dims):
        dim, (left, right) = input.ndim - 1 - k, pad[2 * k:2 * k + 2]
        size = input.shape[dim]
        if mode == "reflect" and (left >= size or right >= size):
            raise RuntimeError(
                f"Argument #{4 + 2 * k}: Padding size should be less than the corresponding "
                f"input dimension, but got: padding ({left}, {right}) at dimension {dim} of "
                f"input [{_sizes(input.shape)}]")
        if mode == "circular" and (left > size or right > size):
            raise RuntimeError("Padding value causes wrapping around more than once.")


def _pad_dim(x, dim: int, left: int, right: int, value):
    """Crop the negative sides of dim with a slice, then join constant blocks to the positive
    ones: the gradient is the slice of g that x's elements landed in."""
    size = x.shape[dim]
    if size + min(left, 0) + min(right, 0) < 0:  # torch crops first, with narrow()
        raise RuntimeError("narrow(): length must be non-negative.")
    if left < 0 or right < 0:
        kept = slice(max(-left, 0), size - max(-right, 0))
        x = ops.getitem(x, (slice(None),) * dim + (kept,))
    blocks = [_filled(x, dim, left, value), x, _filled(x, dim, right, value)]
    blocks = [b for b in blocks if b is not None]
    return x if len(blocks) == 1 else ops.cat(blocks, dim)


def _filled(x, dim: int, count: int, value):
    """A block of count constants to join to x along dim, or None for count <= 0."""
    if count <= 0:
        return None
    shape = x.shape[:dim] + (count,) + x.shape[dim + 1:]
    return Tensor._make(np.full(shape, value, dtype=x.dtype))


def normalize(input, p: float = 2.0, dim=1, eps: float = 1e-12):
    """input / max(||input||_p, eps) along dim (an int or a tuple), as torch's normalize."""
    dims = _reduced_dims(dim, input.ndim)
    if input.dtype.kind != "f":
        name = TORCH_DTYPE_NAMES.get(input.dtype.name, input.dtype.name)
        raise RuntimeError("linalg.vector_norm: Expected a floating point or complex tensor as "
                           f"input. Got {name}")
    return ops.div(input, ops.clamp(_vector_norm(input, p, dims), min=eps))


def _reduced_dims(dim, ndim: int) -> tuple:
    """dim (int or tuple) checked and wrapped as torch's reductions do; a 0-d has dim 0/-1."""
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    span = max(ndim, 1)
    for d in dims:
        if not -span <= d < span:
            raise IndexError("Dimension out of range (expected to be in range of "
                             f"[{-span}, {span - 1}], but got {d})")
    wrapped = [d % span for d in dims]
    for d in wrapped:
        if wrapped.count(d) > 1:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return tuple(wrapped) if ndim else ()


def _vector_norm(x, p, dims):
    """The p-norm over dims, kept; p > 0 or inf (the max of |x|, ties sharing the gradient)."""
    if p == math.inf:
        return ops.amax(ops.abs(x), dims, keepdim=True)
    if not p > 0:
        raise NotImplementedError(f"normalize: p={p} is not supported, only p > 0 or inf")
    return _pow_of_nonnegative(ops.sum(_pow_of_nonnegative(ops.abs(x), p), dims, keepdim=True),
                               1.0 / p)


def _pow_of_nonnegative(x, exponent: float):
    """x ** exponent for x >= 0, with gradient 0 at x == 0 as torch's norm backward masks
    it: the pow runs on 1 there, so its derivative (infinite at 0 for exponents below 1)
    never meets a zero gradient and makes NaN."""
    positive = x.data > 0
    return ops.where(positive, ops.pow(ops.where(positive, x, 1.0), exponent), 0.0)


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


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """0.5 * d**2 / beta where |d| < beta, else |d| - 0.5 * beta, for d = input - target;
    beta == 0 is l1_loss, as torch's. Both branches' gradients are d / beta = sign(d) at
    |d| == beta, torch's smooth_l1_loss_backward."""
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    diff = _difference(input, target, reduction)
    size = ops.abs(diff)
    if beta == 0:  # the quadratic branch would divide by 0, and its NaN reach the gradient
        return _reduce(size, reduction)
    quadratic = ops.div(ops.mul(ops.mul(diff, diff), 0.5), beta)
    linear = ops.sub(size, 0.5 * beta)
    return _reduce(ops.where(size.data < beta, quadratic, linear), reduction)


_KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


def kl_div(input, target, reduction: str = "mean", log_target: bool = False):
    """Pointwise KL divergence of target from input (log-probabilities): target * (log target
    - input), or exp(target) * (target - input) for log_target; "batchmean" is the sum over
    the first dim's size, the KL divergence per sample."""
    if reduction == "mean":
        warnings.warn(_KL_MEAN_WARNING, UserWarning, stacklevel=2)
    if reduction != "batchmean":
        _check_reduction(reduction)
    if not isinstance(target, Tensor):
        target = Tensor._make(np.asarray(target))
    if log_target:
        loss = ops.mul(ops.exp(target), ops.sub(target, input))
    else:
        loss = ops.sub(_xlogx(target), ops.mul(target, input))
    if reduction != "batchmean":
        return _reduce(loss, reduction)
    total = ops.sum(loss)
    return total if input.ndim == 0 else ops.div(total, input.shape[0])


def _xlogx(t):
    """torch's xlogy(t, t): t * log(t), 0 where t == 0. There the unused t * log(t) is NaN,
    so a target that requires grad gets NaN, as torch's xlogy backward gives (0 / 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return ops.where(t.data == 0, 0.0, ops.mul(t, ops.log(t)))


def soft_margin_loss(input, target, reduction: str = "mean"):
    """log(1 + exp(-target * input)) per element, for targets of +1 / -1, then reduced.

    Where -target * input passes exp's range (88 in float32, 709 in float64) torch's value
    overflows to inf and its gradient is NaN; this one stays exact: the margin itself."""
    _check_reduction(reduction)
    if isinstance(target, Tensor) and target.requires_grad and grad_mode.is_grad_enabled():
        raise RuntimeError("The function 'soft_margin_loss' is not differentiable with respect "
                           "to argument 'target'. This input cannot have requires_grad True.")
    margin = ops.mul(ops.neg(input), target)
    if margin.shape != input.shape:  # torch writes into an input-shaped output
        raise RuntimeError(f"output with shape [{_sizes(input.shape)}] doesn't match the "
                           f"broadcast shape [{_sizes(margin.shape)}]")
    return _reduce(_log1p_exp(margin), reduction)


# -- ranking, embedding and likelihood losses ---------------------------------------------
def _tensor(x):
    """x as a Tensor: targets may come as arrays or lists, as for the losses above."""
    return x if isinstance(x, Tensor) else Tensor._make(np.asarray(x))


def _broadcast_shape(*shapes) -> tuple:
    """The shape shapes broadcast to, joined left to right as torch's where() joins its
    operands; a clash raises torch's text for the shape so far (a) and the next (b)."""
    from ..autograd import shape_errors

    out = ()
    for shape in shapes:
        try:
            out = np.broadcast_shapes(out, tuple(shape))
        except ValueError:
            raise RuntimeError(shape_errors.broadcast(out, tuple(shape))) from None
    return out


def _where(condition, a, b):
    """ops.where with torch's broadcasting error (numpy's would name no sizes)."""
    _broadcast_shape(np.shape(condition), np.shape(_array(a)), np.shape(_array(b)))
    return ops.where(condition, a, b)


def _floor_in_value(x, low: float):
    """x raised to low where it is below, in value only: the gradient is x's own everywhere,
    as torch's clamp_min_ under no_grad gives (cosine_similarity's norms, gaussian_nll_loss's
    var). x - x.detach() is exactly 0, so the floored entries are exactly low."""
    below = x.data < low
    if not below.any():
        return x
    return ops.where(below, ops.add(ops.sub(x, x.detach()), low), x)


def margin_ranking_loss(input1, input2, target, margin: float = 0, reduction: str = "mean"):
    """max(0, -target * (input1 - input2) + margin) per element, targets +1 (input1 should
    rank higher) or -1; input1, input2 and target broadcast, each with the same ndim."""
    _check_reduction(reduction)
    target = _tensor(target)
    if not input1.ndim == input2.ndim == target.ndim:
        raise RuntimeError(
            "margin_ranking_loss : All input tensors should have same dimension but got sizes: "
            f"input1: torch.Size([{_sizes(input1.shape)}]), input2: "
            f"torch.Size([{_sizes(input2.shape)}]), target: torch.Size([{_sizes(target.shape)}]) ")
    unclamped = ops.add(ops.mul(ops.neg(target), ops.sub(input1, input2)), margin)
    return _reduce(ops.clamp(unclamped, min=0), reduction)


def hinge_embedding_loss(input, target, margin: float = 1.0, reduction: str = "mean"):
    """input where target is 1, max(0, margin - input) where it is -1, as torch's: any other
    target value gets both terms. The target only chooses, so it gets no gradient."""
    _check_reduction(reduction)
    t = _array(target)
    margin_clamp = ops.clamp(ops.sub(margin, input), min=0)
    output_margin = _where(t != 1, margin_clamp, 0.0)
    output_self = _where(t != -1, input, 0.0)
    return _reduce(ops.add(output_margin, output_self), reduction)


# torch's cosine_embedding_loss adds it to each squared magnitude; its C++ constant is a
# float, so the double it adds is 1e-12 rounded to float32 (it shows beside a zero input)
_COSINE_EPSILON = float(np.float32(1e-12))


def cosine_embedding_loss(input1, input2, target, margin: float = 0,
                          reduction: str = "mean"):
    """1 - cos(input1, input2) where target is 1, max(0, cos - margin) where it is -1, cos
    along the last dim of (N, D) inputs with an (N,) target, or of (D,) ones with a 0-d."""
    _check_reduction(reduction)
    t = _array(target)
    if t.ndim > 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    expected = 2 if t.ndim == 1 else 1
    if input1.ndim != expected or input2.ndim != expected:
        raise RuntimeError(
            f"{t.ndim}D target tensor expects {expected}D input tensors, but found inputs "
            f"with sizes [{_sizes(input1.shape)}] and [{_sizes(input2.shape)}].")
    dim = t.ndim
    # torch's formula: the product over the root of both squared magnitudes (not normalize)
    prod_sum = ops.sum(ops.mul(input1, input2), dim)
    mag_square1 = ops.add(ops.sum(ops.mul(input1, input1), dim), _COSINE_EPSILON)
    mag_square2 = ops.add(ops.sum(ops.mul(input2, input2), dim), _COSINE_EPSILON)
    cos = ops.div(prod_sum, ops.sqrt(ops.mul(mag_square1, mag_square2)))
    pos = ops.sub(1.0, cos)
    neg = ops.clamp(ops.sub(cos, margin), min=0)
    output = ops.add(_where(t == 1, pos, 0.0), _where(t == -1, neg, 0.0))
    return _reduce(output, reduction)


def pairwise_distance(x1, x2, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
    """||x1 - x2 + eps||_p along the last dim of the broadcast inputs, as torch's (eps keeps
    the norm's gradient finite where x1 == x2)."""
    innermost_dim = max(x1.ndim, x2.ndim) - 1
    return ops.norm(ops.add(ops.sub(x1, x2), eps), p, innermost_dim, keepdim)


def cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8):
    """sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) along dim of the broadcast inputs,
    as torch's: normalising first keeps the result in [-1, 1], and the eps floors are in
    value only, so a norm below eps still passes its gradient."""
    x1, x2 = _floating_pair(x1, x2)
    shape = _broadcast_shape(x1.shape, x2.shape)
    x1 = x1 if x1.shape == shape else ops.expand(x1, shape)
    x2 = x2 if x2.shape == shape else ops.expand(x2, shape)
    x1_norm = _floor_in_value(ops.norm(x1, 2, dim, keepdim=True), eps)
    x2_norm = _floor_in_value(ops.norm(x2, 2, dim, keepdim=True), eps)
    return ops.sum(ops.mul(ops.div(x1, x1_norm), ops.div(x2, x2_norm)), dim)


def _floating_pair(x1, x2):
    """x1 and x2 with integer (and bool) ones cast to the other's floating dtype, as
    torch's cosine_similarity; two integer ones are refused with torch's text."""
    floats = [x.dtype for x in (x1, x2) if x.dtype.kind == "f"]
    if not floats:
        common = np.result_type(x1.dtype, x2.dtype).name
        raise RuntimeError("expected common dtype to be floating point, yet common dtype is "
                           f"{TORCH_DTYPE_NAMES.get(common, common)}")
    return tuple(x if x.dtype.kind == "f" else ops.to(x, floats[0]) for x in (x1, x2))


def triplet_margin_loss(anchor, positive, negative, margin: float = 1.0, p: float = 2,
                        eps: float = 1e-6, swap: bool = False, reduction: str = "mean"):
    """max(0, margin + d(anchor, positive) - d(anchor, negative)), d the pairwise_distance;
    with swap, d(positive, negative) replaces the negative distance where it is smaller."""
    _check_reduction(reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise RuntimeError(
            "The anchor, positive, and negative tensors are expected to have the same number "
            f"of dimensions, but got: anchor {anchor.ndim}D, positive {positive.ndim}D, and "
            f"negative {negative.ndim}D inputs")
    dist_pos = pairwise_distance(anchor, positive, p, eps)
    dist_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        dist_neg = ops.minimum(dist_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce(ops.clamp(ops.sub(ops.add(dist_pos, margin), dist_neg), min=0), reduction)


def poisson_nll_loss(input, target, log_input: bool = True, full: bool = False,
                     eps: float = 1e-8, reduction: str = "mean"):
    """exp(input) - target * input (input a log-rate), or input - target * log(input + eps)
    for log_input=False; full adds Stirling's target * log(target) - target
    + log(2 pi target) / 2 where target > 1."""
    _check_reduction(reduction)
    target = _tensor(target)
    if log_input:
        loss = ops.sub(ops.exp(input), ops.mul(target, input))
    else:
        loss = ops.sub(input, ops.mul(target, ops.log(ops.add(input, eps))))
    if full:
        loss = ops.add(loss, _stirling(target))
    return _reduce(loss, reduction)


def _stirling(target):
    """torch's Stirling term, masked to 0 where target <= 1. The mask is a where() over the
    whole term, as torch's masked_fill, so a target of 0 that requires grad gets torch's
    NaN (0 * log 0 in the masked branch's backward)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # log of 0 and below: masked out
        term = ops.add(ops.sub(ops.mul(target, ops.log(target)), target),
                       ops.mul(ops.log(ops.mul(target, 2 * math.pi)), 0.5))
    return ops.where(target.data <= 1, 0.0, term)


def gaussian_nll_loss(input, target, var, full: bool = False, eps: float = 1e-6,
                      reduction: str = "mean"):
    """(log(var) + (input - target)**2 / var) / 2, plus log(2 pi) / 2 with full. var is a
    float, or a tensor of input's shape, or one with a single dim of size 1 (or without
    input's last dim), shared across it; it is floored at eps in value only, as torch's."""
    var = _checked_var(input, var)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not valid")
    var = _floor_in_value(var, eps)
    loss = ops.mul(ops.add(ops.log(var), ops.div(ops.pow(ops.sub(input, target), 2), var)), 0.5)
    if full:
        loss = ops.add(loss, 0.5 * math.log(2 * math.pi))
    return _reduce(loss, reduction)


_ANY_OF_BOOL = (
    "any() received an invalid combination of arguments - got (bool), but expected one of:\n"
    " * (Tensor input, *, Tensor out = None)\n"
    " * (Tensor input, tuple of ints dim = None, bool keepdim = False, *, Tensor out = None)\n"
    " * (Tensor input, int dim, bool keepdim = False, *, Tensor out = None)\n"
)


def _checked_var(input, var):
    """gaussian_nll_loss's var as a tensor that broadcasts against input, with torch's
    checks in torch's order: negative entries, then the shape."""
    if isinstance(var, float):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        return Tensor._make(np.full(input.shape, var, dtype=input.dtype))
    if isinstance(var, int):  # torch.any(var < 0) of a Python int's bool
        raise TypeError(_ANY_OF_BOOL)
    var = _tensor(var)
    if np.any(var.data < 0):
        raise ValueError("var has negative entry/entries")
    if var.shape == input.shape:
        return var
    if input.shape[:-1] == var.shape:  # one variance per row: share it along the last dim
        return ops.unsqueeze(var, -1)
    # one dim of size 1 to broadcast (torch sums the var sizes where the shapes differ)
    if var.ndim == input.ndim and sum(v for i, v in zip(input.shape, var.shape) if i != v) == 1:
        return var
    raise ValueError("var is of incorrect size")


def _check_python_reduction(reduction: str) -> None:
    """The reduction check, in the text of torch's losses written in Python
    (gaussian_nll_loss, multilabel_soft_margin_loss)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not valid")


def multilabel_soft_margin_loss(input, target, weight=None, reduction: str = "mean"):
    """-(target * log sigmoid(input) + (1 - target) * log sigmoid(-input)), weighted per
    class, averaged over the classes (the last dim), then reduced over the samples."""
    target = _tensor(target)
    loss = ops.neg(ops.add(ops.mul(target, logsigmoid(input)),
                           ops.mul(ops.sub(1, target), logsigmoid(ops.neg(input)))))
    if weight is not None:
        loss = ops.mul(loss, weight)
    if input.ndim == 0:  # torch's input.size(-1)
        raise IndexError("Dimension specified as -1 but tensor has no dimensions")
    class_dim = input.ndim - 1
    loss = ops.div(ops.sum(loss, class_dim), input.shape[class_dim])
    # torch checks the reduction last, after the shapes have met
    _check_python_reduction(reduction)
    return _reduce(loss, reduction)


def multi_margin_loss(input, target, p: int = 1, margin: float = 1.0, weight=None,
                      reduction: str = "mean"):
    """Per sample, the sum over the classes d other than the target y of max(0, margin -
    input[y] + input[d]) ** p (p 1 or 2), times weight[y], over the number of classes."""
    _check_reduction(reduction)
    if p != 1 and p != 2:
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and np.ndim(_array(weight)) != 1:
        raise ValueError("weight must be one-dimensional")
    if isinstance(weight, Tensor) and weight.requires_grad and grad_mode.is_grad_enabled():
        raise RuntimeError("The function 'multi_margin_loss' is not differentiable with respect "
                           "to argument 'weight'. This input cannot have requires_grad True.")
    t = _array(target)
    nframe, dim = _multi_margin_sizes(input, t, weight)
    rows = ops.reshape(input, (nframe, dim))
    t = t.reshape(nframe)
    picked = ops.unsqueeze(ops.getitem(rows, (np.arange(nframe), t)), 1)
    z = ops.add(ops.sub(margin, picked), rows)  # margin - input[y] + input[d], as torch's
    # only the other classes count, and only where z > 0 (z == 0 passes no gradient)
    counted = (z.data > 0) & (np.arange(dim) != t[:, None])
    h = z if p == 1 else ops.mul(z, z)
    if weight is not None:
        h = ops.mul(h, _array(weight)[t][:, None])
    loss = ops.div(ops.sum(ops.where(counted, h, 0.0), 1), dim)
    if reduction == "none":
        return loss if np.ndim(_array(target)) else ops.reshape(loss, ())
    total = ops.sum(loss)
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore"):  # an empty batch: 0 / 0
        return ops.div(total, nframe)


def _multi_margin_sizes(input, target, weight) -> tuple:
    """(samples, classes) of multi_margin_loss's input, with torch's checks in its order:
    shapes, then dtypes, then the target's classes."""
    if not ((input.ndim == 2 and input.shape[1]) or (input.ndim == 1 and input.shape[0])
            or input.ndim == 0):
        raise RuntimeError("Expected non-empty vector or matrix with optional 0-dim batch "
                           f"size, but got: [{_sizes(input.shape)}]")
    nframe = input.shape[0] if input.ndim == 2 else 1
    dim = 1 if input.ndim == 0 else input.shape[-1]
    if target.ndim > 1 or target.size != nframe:
        raise RuntimeError(
            "multi_margin_loss: target tensor should be 1-D with size equal to the number of "
            f"input samples (batch size). Expected target size [{nframe}], but got "
            f"[{_sizes(target.shape)}]. Input has shape [{_sizes(input.shape)}].")
    w = None if weight is None else _array(weight)
    if w is not None and w.size != dim:
        raise RuntimeError(f"inconsistent weight size, expected {dim} but got "
                           f"[{_sizes(w.shape)}]")
    if input.dtype.kind != "f":
        raise NotImplementedError('"multi_margin_loss_cpu_kernel" not implemented for '
                                  f"'{_dtype_name(input.dtype)}'")
    for expected, found in ((np.dtype(np.int64), target.dtype),
                            (input.dtype, input.dtype if w is None else w.dtype)):
        if found != expected:
            raise RuntimeError(f"expected scalar type {_dtype_name(expected)} but found "
                               f"{_dtype_name(found)}")
    if target.size and (target.min() < 0 or target.max() >= dim):
        raise RuntimeError("target out of range")
    return nframe, dim


def _dtype_name(dtype) -> str:
    return TORCH_DTYPE_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)
