"""disttrain.nn.utils against torch.nn.utils: the same parameters and gradients in both
libraries, then the same calls; norms, clipped gradients and error texts must agree."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import disttrain
import disttrain.nn.utils
from disttrain.nn import Parameter
from disttrain.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)

# Norms are summed in a different order than torch's (and float32 in float64), so they
# agree to rounding, not bit for bit: torch's own float32 sums drift by ~1e-6.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
SHAPES = [(4, 3), (7,), (2, 3, 5), ()]
NORM_TYPES = [2.0, 1, 3.5, float("inf"), 0.5, "inf", 0.0, -1.0, float("-inf")]


def _twins(dtypes, seed=0, without_grad=(), scale=1.0):
    """Parameters of SHAPES in both libraries with equal data and equal .grad; those at
    the positions in without_grad have no gradient."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for i, (shape, dtype) in enumerate(zip(SHAPES, dtypes, strict=True)):
        ours.append(Parameter(np.asarray(rng.standard_normal(shape), dtype)))
        theirs.append(torch.nn.Parameter(torch.from_numpy(ours[-1].data.copy())))
        if i not in without_grad:
            grad = np.asarray(scale * rng.standard_normal(shape), dtype)
            ours[-1].grad = disttrain.tensor(grad)
            theirs[-1].grad = torch.from_numpy(grad.copy())
    return ours, theirs


def _assert_grads_match(ours, theirs, rtol):
    for o, t in zip(ours, theirs, strict=True):
        if t.grad is None:
            assert o.grad is None
            continue
        assert o.grad.dtype == t.grad.numpy().dtype
        np.testing.assert_allclose(o.grad.data, t.grad.numpy(), rtol=rtol, atol=0)


def _assert_norm_matches(ours, theirs, rtol):
    assert isinstance(ours, disttrain.Tensor)
    assert ours.shape == () and ours.dtype == theirs.numpy().dtype
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=rtol, atol=0)


def _torch_error(call):
    """The exception torch raises for a call, to compare texts and types with ours."""
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def _raises_like(expected, call):
    with pytest.raises(type(expected)) as caught:
        call()
    assert str(caught.value) == str(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("ratio", [0.3, 3.0])  # max_norm below, then above, the norm
def test_clip_grad_norm_matches_torch(dtype, norm_type, ratio):
    ours, theirs = _twins([dtype] * len(SHAPES))
    max_norm = ratio * float(torch.nn.utils.get_total_norm(
        [t.grad for t in theirs], norm_type))
    total_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    before = [o.grad.data.copy() for o in ours]
    total_ours = clip_grad_norm_(ours, max_norm, norm_type)
    rtol = RTOL[np.dtype(dtype)]
    _assert_norm_matches(total_ours, total_theirs, rtol)
    _assert_grads_match(ours, theirs, rtol)
    changed = any(not np.array_equal(o.grad.data, b) for o, b in zip(ours, before))
    assert changed == (ratio < 1)  # the coefficient is clamped to 1: never scaled up


@pytest.mark.parametrize("norm_type", [-1.0, -0.5, float("-inf"), 0.0, 2.0])
def test_zero_gradient_elements(norm_type):
    # a zero element makes every negative norm 0, and the 0-"norm" counts the nonzeros
    ours, theirs = _twins([np.float32] * len(SHAPES))
    ours[0].grad.data[1] = 0.0
    theirs[0].grad[1] = 0.0
    total_theirs = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    _assert_norm_matches(clip_grad_norm_(ours, 0.5, norm_type), total_theirs, 1e-5)
    _assert_grads_match(ours, theirs, 1e-5)


def test_grads_are_scaled_in_place():
    ours, theirs = _twins([np.float32] * len(SHAPES))
    grads = [o.grad for o in ours]
    arrays = [g.data for g in grads]
    versions = [g._version_number for g in grads]
    versions_torch = [t.grad._version for t in theirs]
    clip_grad_norm_(ours, 0.1)
    torch.nn.utils.clip_grad_norm_(theirs, 0.1)
    assert all(o.grad is g and g.data is a for o, g, a in zip(ours, grads, arrays))
    # each grad's version moves as torch's does, so saved tensors see the change
    assert [g._version_number - v for g, v in zip(grads, versions)] == [
        t.grad._version - v for t, v in zip(theirs, versions_torch)]
    assert float(get_total_norm(grads)) == pytest.approx(0.1, rel=1e-5)


def test_clipping_writes_through_to_a_ddp_bucket_view():
    # DistributedDataParallel's grads are views into one flat bucket that the all-reduce
    # reads: clipping must change the bucket, not rebind .grad to a new array.
    param = Parameter(np.ones((2, 3), np.float32))
    bucket = np.zeros(10, np.float32)
    param.set_grad_buffer(bucket[2:8].reshape(2, 3))
    (param * 4.0).sum().backward()
    clip_grad_norm_([param], 1.0)
    np.testing.assert_allclose(bucket[2:8], np.full(6, 4.0 / (np.sqrt(6 * 16) + 1e-6)),
                               rtol=1e-6)
    assert np.shares_memory(param.grad.data, bucket)
    bucket[2:8] = -1.0
    clip_grad_value_(param, 0.5)
    np.testing.assert_array_equal(bucket[2:8], np.full(6, -0.5, np.float32))


@pytest.mark.parametrize("without_grad", [(0,), (1, 3), (0, 1, 2, 3)])
def test_parameters_without_grad_are_skipped(without_grad):
    ours, theirs = _twins([np.float64] * len(SHAPES), without_grad=without_grad)
    total_theirs = torch.nn.utils.clip_grad_norm_(theirs, 0.5, 3.5)
    total_ours = clip_grad_norm_(ours, 0.5, 3.5)
    _assert_norm_matches(total_ours, total_theirs, 1e-12)
    _assert_grads_match(ours, theirs, 1e-12)


def test_no_grads_at_all_give_a_float32_zero():
    ours, theirs = _twins([np.float64] * len(SHAPES), without_grad=range(len(SHAPES)))
    for total in (clip_grad_norm_(ours, 1.0), torch.nn.utils.clip_grad_norm_(theirs, 1.0),
                  get_total_norm([])):
        assert (str(np.asarray(total).dtype), np.asarray(total).shape, total.item()) == (
            "float32", (), 0.0)


def test_a_single_tensor_and_a_generator():
    ours, theirs = _twins([np.float32] * len(SHAPES))
    single = (clip_grad_norm_(ours[0], 0.2, 1), torch.nn.utils.clip_grad_norm_(theirs[0], 0.2, 1))
    _assert_norm_matches(*single, 1e-5)
    rest = (clip_grad_norm_((p for p in ours[1:]), 0.2),
            torch.nn.utils.clip_grad_norm_((p for p in theirs[1:]), 0.2))
    _assert_norm_matches(*rest, 1e-5)
    _assert_grads_match(ours, theirs, 1e-5)


def test_an_empty_generator_warns_as_torch():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.nn.utils.clip_grad_norm_((p for p in []), 1.0)
        clip_grad_norm_((p for p in []), 1.0)
        clip_grad_norm_([], 1.0)  # a list is not a generator: no warning
    assert [str(w.message) for w in caught] == [str(caught[0].message)] * 2
    assert caught[1].category is caught[0].category is UserWarning
    assert caught[1].filename == __file__  # points at the caller, not at utils.py


def test_mixed_dtypes_give_a_float64_norm_as_torch():
    ours, theirs = _twins([np.float32, np.float64, np.float32, np.float64])
    _assert_norm_matches(clip_grad_norm_(ours, 0.5), torch.nn.utils.clip_grad_norm_(theirs, 0.5),
                         1e-6)
    _assert_grads_match(ours, theirs, 1e-6)


@pytest.mark.parametrize("bad", [np.inf, np.nan, -np.inf])
@pytest.mark.parametrize("norm_type", [2.0, float("inf"), 1])
def test_nonfinite_norm(bad, norm_type):
    ours, theirs = _twins([np.float32] * len(SHAPES))
    ours[1].grad.data[3] = bad
    theirs[1].grad[3] = float(bad)
    expected = _torch_error(
        lambda: torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type, error_if_nonfinite=True))
    _raises_like(expected, lambda: clip_grad_norm_(ours, 1.0, norm_type, error_if_nonfinite=True))
    assert "non-finite" in str(expected)
    # without the check, both scale by the non-finite norm alike (NaN or zero gradients)
    total_theirs = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type)
    total_ours = clip_grad_norm_(ours, 1.0, norm_type)
    np.testing.assert_array_equal(total_ours.data, total_theirs.numpy())
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(o.grad.data, t.grad.numpy())


@pytest.mark.parametrize("norm_type", ["inf", -1.0, float("-inf")])
def test_max_like_norm_of_an_empty_grad_is_torch_error(norm_type):
    ours, theirs = Parameter(np.zeros(0, np.float32)), torch.nn.Parameter(torch.zeros(0))
    ours.grad, theirs.grad = disttrain.zeros(0), torch.zeros(0)
    expected = _torch_error(lambda: torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type))
    _raises_like(expected, lambda: clip_grad_norm_(ours, 1.0, norm_type))


def test_norms_with_an_identity_of_an_empty_grad_are_zero():
    ours, theirs = Parameter(np.zeros(0, np.float32)), torch.nn.Parameter(torch.zeros(0))
    ours.grad, theirs.grad = disttrain.zeros(0), torch.zeros(0)
    for norm_type in (2.0, 1.0, 0.5, 0.0):
        assert clip_grad_norm_(ours, 1.0, norm_type).item() == torch.nn.utils.clip_grad_norm_(
            theirs, 1.0, norm_type).item() == 0.0


def test_get_total_norm_and_clip_grads_with_norm_match_torch():
    ours, theirs = _twins([np.float64] * len(SHAPES), scale=5.0)
    total_theirs = torch.nn.utils.get_total_norm([t.grad for t in theirs], 3.5)
    total_ours = get_total_norm([o.grad for o in ours], 3.5)
    _assert_norm_matches(total_ours, total_theirs, 1e-12)
    torch.nn.utils.clip_grads_with_norm_(theirs, 2.0, total_theirs)
    clip_grads_with_norm_(ours, 2.0, total_ours)
    _assert_grads_match(ours, theirs, 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_coefficient_is_bit_for_bit_torch(dtype):
    # Given the same total norm, the scaling is torch's to the last bit: torch computes
    # max_norm / (norm + 1e-6) as reciprocal() * max_norm in the norm's dtype.
    rng = np.random.default_rng(1)
    for total, max_norm in zip(rng.uniform(1e-3, 1e3, 300), rng.uniform(1e-3, 1e3, 300)):
        grad = rng.standard_normal(5).astype(dtype)
        ours = Parameter(np.zeros(5, dtype))
        theirs = torch.nn.Parameter(torch.from_numpy(np.zeros(5, dtype)))
        ours.grad, theirs.grad = disttrain.tensor(grad), torch.from_numpy(grad.copy())
        total = np.asarray(total, dtype)
        clip_grads_with_norm_(ours, max_norm, disttrain.tensor(total))
        torch.nn.utils.clip_grads_with_norm_(theirs, max_norm, torch.from_numpy(total))
        np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_value", [0.5, 0.0, -0.25])  # torch clamps to max when min > max
def test_clip_grad_value_matches_torch(dtype, clip_value):
    ours, theirs = _twins([dtype] * len(SHAPES), without_grad=(2,))
    ours[0].grad.data[0, 0] = np.nan
    theirs[0].grad[0, 0] = float("nan")
    arrays = [o.grad.data for o in ours if o.grad is not None]
    assert torch.nn.utils.clip_grad_value_(theirs, clip_value) is None
    assert clip_grad_value_(ours, clip_value) is None
    for o, t in zip(ours, theirs, strict=True):
        assert (o.grad is None) == (t.grad is None)
        if o.grad is not None:
            np.testing.assert_array_equal(o.grad.data, t.grad.numpy())
    assert all(a is b for a, b in zip([o.grad.data for o in ours if o.grad is not None], arrays))


def test_clip_grad_value_of_a_single_tensor():
    ours, theirs = _twins([np.float32] * len(SHAPES))
    clip_grad_value_(ours[1], 0.1)
    torch.nn.utils.clip_grad_value_(theirs[1], 0.1)
    np.testing.assert_array_equal(ours[1].grad.data, theirs[1].grad.numpy())
    assert np.abs(ours[1].grad.data).max() == np.float32(0.1)


def test_parameters_to_vector_matches_torch_and_is_differentiable():
    ours, theirs = _twins([np.float64] * len(SHAPES), without_grad=range(len(SHAPES)))
    vec, vec_torch = parameters_to_vector(ours), torch.nn.utils.parameters_to_vector(theirs)
    np.testing.assert_array_equal(vec.data, vec_torch.detach().numpy())
    weights = np.arange(vec.shape[0], dtype=np.float64)
    (vec * disttrain.tensor(weights)).sum().backward()
    (vec_torch * torch.from_numpy(weights)).sum().backward()
    _assert_grads_match(ours, theirs, 0)


def test_vector_round_trip_shares_the_vector_memory_as_torch():
    ours, theirs = _twins([np.float32] * len(SHAPES))
    vec = disttrain.tensor(np.arange(1.0, 1.0 + parameters_to_vector(ours).shape[0]))
    vec_torch = torch.from_numpy(vec.data.copy())
    vector_to_parameters(vec, ours)
    torch.nn.utils.vector_to_parameters(vec_torch, theirs)
    for o, t in zip(ours, theirs, strict=True):
        assert o.shape == t.shape and o.dtype == t.detach().numpy().dtype == np.float64
        np.testing.assert_array_equal(o.data, t.detach().numpy())
    np.testing.assert_array_equal(parameters_to_vector(ours).data, vec.data)
    vec.data[0] = -7.0  # as in torch, parameter data is now a view of the vector
    vec_torch[0] = -7.0
    assert ours[0].data[0, 0] == theirs[0].data[0, 0].item() == -7.0


def test_conversion_errors_match_torch():
    ours, theirs = _twins([np.float32] * len(SHAPES))
    for bad in (np.zeros(3), [1.0, 2.0], None):
        expected = _torch_error(lambda bad=bad: torch.nn.utils.vector_to_parameters(bad, theirs))
        _raises_like(expected, lambda bad=bad: vector_to_parameters(bad, ours))
    expected = _torch_error(lambda: torch.nn.utils.vector_to_parameters(torch.zeros(13), theirs))
    _raises_like(expected, lambda: vector_to_parameters(disttrain.zeros(13), ours))
    expected = _torch_error(lambda: torch.nn.utils.parameters_to_vector([]))
    _raises_like(expected, lambda: parameters_to_vector([]))


def test_the_module_is_importable_as_a_submodule():
    assert disttrain.nn.utils.clip_grad_norm_ is clip_grad_norm_
    assert set(disttrain.nn.utils.__all__) <= set(torch.nn.utils.__all__)
