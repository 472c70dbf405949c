"""The gradient rules: one row per differentiable primitive, in the style of HIPS autograd.

A row is Rule(name, vjps, uses): one vector-Jacobian product per input (None where no
gradient flows), and which saved values the vjps read ("x" the inputs, "o" the output).
A vjp that reads saved values is called vjp(g, out, *inputs, **params); one that reads
none is called vjp(g, **params). Broadcasting is undone by the engine (engine.sum_to),
never here. Every other op in disttrain is written from these.

A row may also give `into`: per input, None or into(dest, g, out, *inputs, **params),
the same product written straight into `dest` (a leaf's gradient buffer, e.g. its view
in a DDP bucket) by the matmul or sum itself, so the gradient is never made and then
copied. It returns False, having written nothing, when it cannot (dtype or shape), and
the engine then runs the vjp. Only the weight and bias gradients of the layers that
hold most parameters have one: there the copy is a step's largest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import kernels


class Rule(NamedTuple):
    """One differentiable primitive: its name, a vjp per input, and what they read."""
    name: str
    vjps: tuple
    uses_inputs: bool
    uses_out: bool
    # reads[i]: the inputs vjps[i] reads (None: all). An input only one vjp reads may be
    # modified in place when that vjp will not run, as PyTorch saves only what it needs.
    reads: tuple | None = None
    saves: bool = False  # uses_inputs or uses_out, stored: the engine reads it on every node
    into: tuple | None = None  # per input: None or into(dest, g, out, *inputs, **params)


class PerInput:
    """vjps for an op with any number of inputs (cat): vjps[i] is fn bound to i."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __getitem__(self, i: int) -> Callable:
        return lambda g, **params: self.fn(i, g, **params)


def _pow_base(g, out, a, b):
    # d(a**b)/da = b * a**(b-1); PyTorch defines it as 0 where b == 0.
    if not np.ndim(b):
        return g * 0.0 if b == 0 else g * b * a ** (b - 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # the masked entries may be inf
        return np.where(b == 0, 0.0, g * b * a ** (b - 1))


def _pow_exponent(g, out, a, b):
    # d(a**b)/db = a**b * log(a); PyTorch masks it to 0 where a == 0 and b >= 0.
    # A Python base is logged in out's dtype: np.log(2.0) would be a (strong) float64.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_a = np.log(a if isinstance(a, np.ndarray) else np.asarray(a, dtype=out.dtype))
        return np.where((a == 0) & (b >= 0), 0.0, g * out * log_a)


def _half_on_ties(g, a, b, loses):
    # maximum/minimum: a tie splits the gradient, the loser gets none, as in PyTorch. Where
    # a NaN makes the comparison false, neither side loses, so both keep the whole gradient.
    return np.where(a == b, g / 2, np.where(loses, 0.0, g))


def _gelu_vjp(g, out, x, approximate):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        inner = k * (x + 0.044715 * x**3)
        t = np.tanh(inner)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x))
    cdf = 0.5 * (1 + kernels.erf(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return g * (cdf + x * pdf)


def _relu_vjp(g, o):
    """PyTorch's threshold_backward: 0 where o <= 0, else g (so g where o is NaN).

    g * (o > 0) is that, ten times faster than a masked copy, whenever g and o are finite; a
    NaN or infinity in either (one BLAS dot each to find) takes the exact np.where."""
    if not kernels.all_finite(g, o):
        return np.where(o <= 0, 0, g)
    out = kernels.reusable_like(g, "relu_grad")
    if out is None or g.shape != o.shape:
        return g * (o > 0)
    return np.multiply(g, np.greater(o, 0, out=kernels.scratch_like(o, "relu_mask", bool)),
                       out=out)


def _unreduce(g, shape, dim, keepdim):
    """Spread a reduction's gradient back over the reduced dims."""
    if dim is not None and not keepdim:
        g = np.expand_dims(g, dim)
    return np.broadcast_to(g, shape)


def _amax_vjp(g, out, x, dim, keepdim, nan_is_max=False):
    # Full max/min reduction: PyTorch shares the gradient evenly among tied maxima. max() and
    # min() of all elements (nan_is_max) count every NaN as the maximum when the result is NaN;
    # amax/amin count none, so a NaN result spreads g / 0 (NaN) everywhere.
    expanded = out if (dim is None or keepdim) else np.expand_dims(out, dim)
    mask = x == expanded
    if nan_is_max and np.isnan(out).any():
        mask |= np.isnan(x)
    count = mask.sum(axis=dim, keepdims=True).astype(g.dtype)  # int64 would promote g
    return mask * (_unreduce(g, x.shape, dim, keepdim) / count)


def _pick_vjp(g, shape, dim, keepdim, indices):
    # max(dim)/min(dim): the gradient goes to the returned index only.
    grad = np.zeros(shape, dtype=g.dtype)
    if not keepdim:
        g, indices = np.expand_dims(g, dim), np.expand_dims(indices, dim)
    np.put_along_axis(grad, indices, g, axis=dim)
    return grad


def _zero_vjp(g):
    # sign, floor, ceil, round: steps, flat almost everywhere; torch defines their gradient
    # as 0 everywhere (the result still requires grad), so gradients through them vanish.
    return np.zeros_like(g)


def _logsumexp_vjp(g, out, x, dim, keepdim):
    # g * softmax(x). As torch's, a slice of all -inf or holding +inf gets NaN (x - out is
    # -inf - -inf or inf - inf there): torch special-cases only the forward.
    with np.errstate(invalid="ignore"):
        return _unreduce(g, x.shape, dim, keepdim) * np.exp(x - _unreduce(out, x.shape, dim,
                                                                              keepdim))


def _vector_norm_vjp(g, out, x, p, dim, keepdim):
    """torch's norm_backward: its cases for p = 0, 1, 2, +-inf, below 1, below 2 and above."""
    g, out = _unreduce(g, x.shape, dim, keepdim), _unreduce(out, x.shape, dim, keepdim)
    if p == 0:  # a count: no gradient
        return np.zeros_like(x)
    if p == 1:
        return g * kernels.sgn(x)
    if p == 2:  # x / norm, but 0 where the norm is 0 (a zero vector), not NaN
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(out == 0, 0, g * (x / out))
    if not math.isinf(p):
        return _p_norm_vjp(g, out, x, x.dtype.type(p))
    # +-inf: the entries whose |x| is the norm share g evenly. A NaN makes the norm NaN and
    # is then the only entry in the mask, and its sgn is 0: no entry gets gradient, as torch.
    mask = (np.abs(x) == out) | np.isnan(x)
    count = mask.sum(axis=dim, keepdims=True).astype(g.dtype)  # int64 would promote g
    return kernels.sgn(x) * mask * (g / count)


def _p_norm_vjp(g, out, x, p):
    """d/dx (sum |x|^p)^(1/p) = sgn(x) |x|^(p-1) / norm^(p-1), with torch's masks: below 1,
    0 where x is 0 (times norm^(1-p)); else 0 where the norm is 0."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = np.abs(x)
        if p < 1:
            scaled = np.where(x == 0, 0, kernels.sgn(x) * a ** (p - 1))
            return scaled * g * out ** (1 - p)
        scaled = kernels.sgn(x) * a ** (p - 1) if p < 2 else x * a ** (p - 2)
        return scaled * np.where(out == 0, 0, g / out ** (p - 1))


def _hardswish_vjp(g, o, x):
    with np.errstate(invalid="ignore"):
        return g * np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1)).astype(g.dtype)


def _cumsum_vjp(g, dim):
    # Input i feeds every output from i on, so its gradient is g summed from the end.
    return np.flip(np.cumsum(np.flip(g, dim), axis=dim), dim)


def _index_vjp(g, shape, key, advanced):
    grad = np.zeros(shape, dtype=g.dtype)
    if advanced:
        np.add.at(grad, key, g)  # repeated indices add up, never overwrite
    else:
        grad[key] = g
    return grad


def _matmul_vjp(g, a, b, first: bool):
    # Promote 1-D operands as matmul does, then undo the promotion on the way out.
    A = a[None, :] if a.ndim == 1 else a
    B = b[:, None] if b.ndim == 1 else b
    if b.ndim == 1:  # first, so a 0-d g (1-D @ 1-D) grows to (1,) before -2 is used
        g = np.expand_dims(g, -1)
    if a.ndim == 1:
        g = np.expand_dims(g, -2)
    if first:
        grad = g @ np.swapaxes(B, -1, -2)
        return grad[..., 0, :] if a.ndim == 1 else grad
    grad = np.swapaxes(A, -1, -2) @ g
    return grad[..., 0] if b.ndim == 1 else grad


def _rows(a: np.ndarray) -> np.ndarray:
    """Leading dims folded into one: (..., n) -> (rows, n)."""
    return a.reshape(-1, a.shape[-1])


def _matmul_into(dest: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """dest[...] = a @ b, with dest (any shape of a.rows x b.cols elements, contiguous)
    as the matmul's own output: numpy hands it to BLAS as it would a fresh array."""
    if (dest.dtype != np.result_type(a, b) or not dest.flags.c_contiguous
            or dest.size != a.shape[0] * b.shape[1]):
        return False
    np.matmul(a, b, out=dest.reshape(a.shape[0], b.shape[1]))
    return True


def _sum_rows_into(dest: np.ndarray, rows: np.ndarray) -> bool:
    """dest[...] = rows.sum(0), the same reduction written into dest."""
    if dest.dtype != rows.dtype or dest.shape != rows.shape[1:]:
        return False
    np.sum(rows, axis=0, out=dest)
    return True


def _sum_channels(g: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A conv bias's gradient: g (N, O, H', W') summed to (O,), over the images first
    (contiguous rows: 0.04 ms at 64x6x28x28, where one sum over axes (0, 2, 3) took 0.1)."""
    n, o = g.shape[:2]
    return np.sum(np.sum(g.reshape(n, o, -1), axis=0), axis=1, out=out)


def _sum_channels_into(dest: np.ndarray, g: np.ndarray) -> bool:
    """_sum_channels written into dest, the same reductions (bit for bit)."""
    if dest.dtype != g.dtype or dest.shape != g.shape[1:2]:
        return False
    _sum_channels(g, dest)
    return True


# Binary cross-entropy, elementwise (the reduction is a separate sum/mean node). Inputs are
# (x, target, weight or None[, pos_weight or None]); weights get no gradient, as in torch.
_BCE_EPS = float(np.float32(1e-12))  # torch's EPSILON is a C float, in every dtype


def _bce_input_vjp(g, out, x, t, w):
    # torch's binary_cross_entropy_backward: (x - t) / max((1 - x) x, 1e-12), so a
    # probability of exactly 0 or 1 gives a large finite gradient, not inf.
    grad = g * (x - t) / np.maximum((1 - x) * x, _BCE_EPS)
    return grad if w is None else grad * w


def _bce_target_vjp(g, out, x, t, w):
    # torch's binary_cross_entropy_target_backward: -logit(x), unclamped (inf at 0 and 1)
    with np.errstate(divide="ignore"):
        grad = -np.log(x / (1 - x)) * g
    return grad if w is None else grad * w


def _bce_logits_input_vjp(g, out, x, t, w, pos_weight):
    if pos_weight is None:
        grad = kernels.sigmoid(x) - t
    else:
        weighted = pos_weight * t
        grad = (weighted + 1 - t) * kernels.sigmoid(x) - weighted
    if w is not None:
        grad = grad * w
    return grad * g


def _bce_logits_target_vjp(g, out, x, t, w, pos_weight):
    if pos_weight is None:
        grad = x * -g
    else:
        grad = (kernels.log_sigmoid(-x) - kernels.log_sigmoid(x) * pos_weight) * g
    return grad if w is None else grad * w


def _cat_vjp(i, g, dim, bounds):
    return g[(slice(None),) * (dim % g.ndim) + (slice(bounds[i], bounds[i + 1]),)]


def rule(name: str, *vjps, uses: str = "", reads: tuple | None = None,
         into: tuple | None = None) -> Rule:
    """A Rule of vjps; uses holds "x" if they read the inputs, "o" if the output."""
    if into is not None and not uses:
        raise ValueError(f"{name}: an into() reads the saved inputs, so uses must hold 'x'")
    return Rule(name, vjps, "x" in uses, "o" in uses, reads, bool(uses), into)


# -- helpers of the rules for ops_shape.py (torch's derivatives.yaml formulas) ------------
def _exclusive_prod(x, axis):
    """prod of every element of x along axis but this one: exclusive cumprods from both ends,
    torch's prod_safe_zeros_backward, exact however many zeros a slice holds."""
    ones = np.ones_like(np.take(x, [0], axis=axis))
    before = np.cumprod(np.concatenate([ones, np.delete(x, -1, axis=axis)], axis=axis), axis)
    after = np.flip(np.cumprod(np.concatenate([ones, np.delete(np.flip(x, axis), -1, axis=axis)],
                                              axis=axis), axis), axis)
    return before * after


def _prod_vjp(g, out, x, dim, keepdim):
    # torch's prod_backward: g * out / x when x holds no zero, else the product of the others
    if x.ndim == 0:
        return g
    if dim is None:
        flat = x.reshape(-1)
        if not (flat == 0).any():
            return g * out / x
        return g * _exclusive_prod(flat, 0).reshape(x.shape) if flat.size else np.zeros_like(x)
    g, out = _unreduce(g, x.shape, dim, keepdim), _unreduce(out, x.shape, dim, keepdim)
    if not (x == 0).any() or x.shape[dim] == 0:
        return g * out / x
    return g * _exclusive_prod(x, dim)


def _cumprod_vjp(g, out, x, dim):
    """torch's cumprod_backward: the reversed cumsum of g * out, over x, when x has no zero;
    else the exact sum over i >= k of g_i * prod_{j <= i, j != k} x_j."""
    if x.size == 0:
        return np.zeros_like(x)
    if not (x == 0).any():
        return _cumsum_vjp(g * out, dim) / x
    xm, gm = np.moveaxis(x, dim, -1), np.moveaxis(g, dim, -1)
    n = xm.shape[-1]
    grad = np.empty_like(xm)
    for k in range(n):  # only slices with a zero come here; n cumprods of n, as torch's loop
        others = xm.copy()
        others[..., k] = 1
        partial = np.cumprod(others, axis=-1)[..., k:]
        grad[..., k] = np.sum(gm[..., k:] * partial, axis=-1)
    return np.moveaxis(grad, -1, dim)


def scatter_key(index: np.ndarray, dim: int) -> tuple:
    """The numpy key of scatter's and gather's places: index along dim, elsewhere its own
    position (index may be smaller than self off dim, which put_along_axis refuses)."""
    key = list(np.indices(index.shape, sparse=True))
    key[dim] = index
    return tuple(key)


def _scatter_self_vjp(g, out, x, src, dim, index):
    # the places scatter overwrote take no gradient back to self
    grad = g.copy()
    grad[scatter_key(index, dim)] = 0
    return grad


def _scattered_src_vjp(g, out, x, src, dim, index):
    """grad.gather(dim, index), as torch's, placed in src's (maybe larger) shape."""
    picked = g[scatter_key(index, dim)]
    if picked.shape == np.shape(src):
        return picked
    grad = np.zeros(np.shape(src), dtype=g.dtype)
    grad[tuple(slice(0, n) for n in index.shape)] = picked
    return grad


def _hypot_vjp(i: int) -> Callable:
    """g * operand / hypot: NaN where both are 0, as torch's (0 / 0)."""
    def vjp(g, o, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return g * (a, b)[i] / o
    return vjp


def _logit_vjp(g, out, x, eps):
    # torch's logit_backward: NaN outside [0, 1] without eps; 0 outside [eps, 1 - eps] with it
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = g / (x * (1 - x))
        if eps is None:
            return np.where((x < 0) | (x > 1), np.nan, grad).astype(g.dtype, copy=False)
        return np.where((x < eps) | (x > 1 - eps), 0, grad).astype(g.dtype, copy=False)


def _einsum_grad(i, g, operands, subs, out_subs, sizes):
    """The gradient of operand i of einsum(subs -> out_subs) (letters only, no ellipsis):
    g contracted with the other operands onto operand i's labels. A label only operand i
    holds (summed away) is broadcast back; a repeated label (a diagonal) is written onto
    that diagonal of zeros; a size-1 dim that broadcast is summed back to 1."""
    own = subs[i]
    labels = "".join(dict.fromkeys(own))  # each label once, in order
    others = [s for j, s in enumerate(subs) if j != i]
    known = set(out_subs).union(*others)
    kept = "".join(c for c in labels if c in known)
    spec = ",".join([out_subs, *others]) + "->" + kept
    full = np.einsum(spec, g, *(o for j, o in enumerate(operands) if j != i))
    full = np.expand_dims(full, [k for k, c in enumerate(labels) if c not in known])
    full = np.broadcast_to(full, tuple(sizes[c] for c in labels))
    grad = np.zeros(tuple(sizes[c] for c in own), dtype=g.dtype)
    np.einsum(f"{own}->{labels}", grad)[...] = full  # a writable view, the diagonal if repeated
    shape = np.shape(operands[i])
    stretched = tuple(k for k, n in enumerate(shape) if n == 1 and grad.shape[k] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


class EinsumVjps:
    """vjps of einsum, one per operand: the output gradient contracted with the others."""

    def __getitem__(self, i: int) -> Callable:
        return lambda g, out, *operands, **params: _einsum_grad(i, g, operands, **params)


def _in_dtype(fn):
    """vjp(g, o, x) in g's dtype: numpy constants (ln 2, 2/sqrt(pi)) would stay float64."""
    return lambda g, o, *x, **p: np.asarray(fn(g, o, *x, **p)).astype(g.dtype, copy=False)


_SHAPE_RULES = (
    rule("Log2", _in_dtype(lambda g, o, x: g / (x * math.log(2))), uses="x"),
    rule("Log10", _in_dtype(lambda g, o, x: g / (x * math.log(10))), uses="x"),
    rule("Exp2", _in_dtype(lambda g, o, x: g * o * math.log(2)), uses="o"),
    rule("Sinh", lambda g, o, x: g * np.cosh(x), uses="x"),
    rule("Cosh", lambda g, o, x: g * np.sinh(x), uses="x"),
    rule("Asin", lambda g, o, x: g / np.sqrt(1 - x * x), uses="x"),
    rule("Acos", lambda g, o, x: -g / np.sqrt(1 - x * x), uses="x"),
    rule("Atan", lambda g, o, x: g / (1 + x * x), uses="x"),
    rule("Erf", _in_dtype(lambda g, o, x: g * (2 / math.sqrt(math.pi)) * np.exp(-x * x)),
         uses="x"),
    rule("Trunc", _zero_vjp),
    rule("Logit", _logit_vjp, uses="x"),
    rule("Atan2", lambda g, o, a, b: g * b / (a * a + b * b),
         lambda g, o, a, b: g * -a / (a * a + b * b), uses="x"),
    rule("Hypot", _hypot_vjp(0), _hypot_vjp(1), uses="xo"),
    # torch's: self gets g / (1 + e^(other - self)), other the same with the roles swapped
    rule("Logaddexp", lambda g, o, a, b: g / (1 + np.exp(b - a)),
         lambda g, o, a, b: g / (1 + np.exp(a - b)), uses="x"),
    # remainder/fmod: self gets g; other -g times the quotient rounded as the op rounds
    rule("Remainder", lambda g, o, a, b: g, lambda g, o, a, b: -g * np.floor_divide(a, b),
         uses="x"),
    rule("Fmod", lambda g, o, a, b: g, lambda g, o, a, b: -g * np.trunc(np.true_divide(a, b)),
         uses="x"),
    rule("Prod", _prod_vjp, uses="xo"),
    rule("Cumprod", _cumprod_vjp, uses="xo"),
    rule("Scatter", _scatter_self_vjp, _scattered_src_vjp, uses="x"),
    rule("ScatterAdd", lambda g, o, x, src, dim, index: g, _scattered_src_vjp, uses="x"),
    Rule("Einsum", EinsumVjps(), True, False, None, True),
)


RULES = {r.name: r for r in (
    rule("Add", lambda g: g, lambda g: g),
    rule("Sub", lambda g: g, lambda g: -g),
    rule("Neg", lambda g: -g),
    rule("Mul", lambda g, o, a, b: g * b, lambda g, o, a, b: g * a, uses="x",
         reads=((1,), (0,))),
    rule("Div", lambda g, o, a, b: g / b, lambda g, o, a, b: -g * a / (b * b), uses="x",
         reads=((1,), (0, 1))),
    rule("Pow", _pow_base, _pow_exponent, uses="xo"),
    rule("Exp", lambda g, o, x: g * o, uses="o"),
    rule("Log", lambda g, o, x: g / x, uses="x"),
    rule("Sqrt", lambda g, o, x: g / (2 * o), uses="o"),
    rule("Log1p", lambda g, o, x: g / (1 + x), uses="x"),
    rule("Expm1", lambda g, o, x: g * (o + 1), uses="o"),
    rule("Sin", lambda g, o, x: g * np.cos(x), uses="x"),
    rule("Cos", lambda g, o, x: -g * np.sin(x), uses="x"),
    *(rule(name, _zero_vjp) for name in ("Sign", "Floor", "Ceil", "Round")),
    rule("Abs", lambda g, o, x: g * kernels.sgn(x), uses="x"),
    rule("Tanh", lambda g, o, x: g * (1 - o * o), uses="o"),
    rule("Sigmoid", lambda g, o, x: g * o * (1 - o), uses="o"),
    rule("Relu", lambda g, o, x: _relu_vjp(g, o), uses="o"),
    # torch's kernels: hardsigmoid's slope is 1/6 rounded to float32 (in float64 too),
    # strictly inside (-3, 3); hardswish's is x / 3 + 1/2 there, 0 up to -3, 1 from 3 on
    rule("Hardsigmoid", lambda g, o, x: g * np.where((x > -3) & (x < 3), np.float32(1 / 6),
                                                     0).astype(g.dtype), uses="x"),
    rule("Hardswish", _hardswish_vjp, uses="x"),
    rule("Gelu", lambda g, o, x, approximate: _gelu_vjp(g, o, x, approximate), uses="x"),
    rule("Clamp", lambda g, o, x, lo, hi: np.where(kernels.inside(x, lo, hi), g, 0), uses="x"),
    rule("Where", None, lambda g, o, c, a, b: np.where(c, g, 0),
         lambda g, o, c, a, b: np.where(c, 0, g), uses="x"),
    rule("Maximum", lambda g, o, a, b: _half_on_ties(g, a, b, a < b),
         lambda g, o, a, b: _half_on_ties(g, a, b, b < a), uses="x"),
    rule("Minimum", lambda g, o, a, b: _half_on_ties(g, a, b, a > b),
         lambda g, o, a, b: _half_on_ties(g, a, b, b > a), uses="x"),
    rule("MatMul", lambda g, o, a, b: _matmul_vjp(g, a, b, True),
         lambda g, o, a, b: _matmul_vjp(g, a, b, False), uses="x", reads=((1,), (0,))),
    # x @ w.T + b in one node, as torch's addmm: every gradient comes out fresh and
    # row-major, with no transposed view for the weight's leaf to copy.
    rule("Addmm", lambda g, o, x, w, b: g @ w, lambda g, o, x, w, b: _rows(g).T @ _rows(x),
         lambda g, o, x, w, b: _rows(g).sum(0), uses="x", reads=((1,), (0,), ()),
         into=(None, lambda d, g, o, x, w, b: _matmul_into(d, _rows(g).T, _rows(x)),
               lambda d, g, o, x, w, b: _sum_rows_into(d, _rows(g)))),
    rule("Sum", lambda g, shape, dim, keepdim: _unreduce(g, shape, dim, keepdim)),
    rule("Amax", _amax_vjp, uses="xo"),
    rule("Max", _pick_vjp),
    rule("Logsumexp", _logsumexp_vjp, uses="xo"),
    rule("LinalgVectorNorm", _vector_norm_vjp, uses="xo"),
    rule("Cumsum", _cumsum_vjp),
    rule("Softmax", lambda g, o, x, dim: o * (g - (g * o).sum(dim, keepdims=True)), uses="o"),
    rule("LogSoftmax", lambda g, o, x, dim: g - np.exp(o) * g.sum(dim, keepdims=True),
         uses="o"),
    # View also carries casts (to/float/double): dtype, when given, is the input's.
    rule("View", lambda g, shape, dtype=None: (
        g.reshape(shape) if dtype is None else g.reshape(shape).astype(dtype, copy=False))),
    rule("Permute", lambda g, axes: g.transpose(np.argsort(axes))),
    rule("Expand", lambda g: g),
    rule("Index", _index_vjp),
    Rule("Cat", PerInput(_cat_vjp), False, False),
    # Inputs (x, w, bias or None). As torch's ConvolutionBackward0, x and w are checked for
    # in-place changes whichever gradients run, the bias never (it is not saved).
    rule("Conv2d", lambda g, o, x, w, b, **p: kernels.conv2d_grad_input(g, w, **p),
         lambda g, o, x, w, b, **p: kernels.conv2d_grad_weight(g, w, **p),
         lambda g, o, x, w, b, **p: _sum_channels(g), uses="x", reads=((0, 1),) * 3,
         into=(None, lambda d, g, o, x, w, b, **p: kernels.conv2d_grad_weight_into(d, g, w, **p),
               lambda d, g, o, x, w, b, **p: _sum_channels_into(d, g))),
    rule("MaxPool2d", kernels.max_pool2d_grad),
    rule("AvgPool2d", kernels.avg_pool2d_grad),
    rule("BinaryCrossEntropy", _bce_input_vjp, _bce_target_vjp, None, uses="x"),
    rule("BinaryCrossEntropyWithLogits", _bce_logits_input_vjp, _bce_logits_target_vjp, None,
         None, uses="x"),
    # ops_shape.py's primitives (elementwise math, prod/cumprod, scatter, einsum)
    *_SHAPE_RULES,
)}
