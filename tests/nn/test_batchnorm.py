"""BatchNorm1d, BatchNorm2d, F.batch_norm and GroupNorm against torch: outputs, input and parameter
gradients, running statistics step by step (momentum, cumulative averages, none), eval
mode, state_dict and repr, error texts. Finite differences in tests/autograd/test_gradcheck.py;
DDP's per-forward broadcast of the statistics in tests/distributed/test_ddp.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import same_error

TOL = {np.float64: 1e-10, np.float32: 2e-5}

CONFIGS = [
    ("BatchNorm1d", (6, 4), {}),
    ("BatchNorm1d", (5, 4, 3), {"momentum": None}),
    ("BatchNorm1d", (6, 4), {"affine": False}),
    ("BatchNorm1d", (6, 4, 2), {"bias": False, "eps": 1e-3}),
    ("BatchNorm2d", (4, 3, 5, 5), {}),
    ("BatchNorm2d", (3, 3, 4, 6), {"momentum": 0.3, "track_running_stats": False}),
    ("BatchNorm2d", (2, 3, 3, 3), {"momentum": None, "affine": False}),
]


def _pair(kind, args, kwargs, dtype, seed=0):
    """The same layer in both libraries, with the same weights away from ones and zeros."""
    ours = getattr(nn, kind)(*args, **kwargs, dtype=dtype)
    theirs = getattr(torch.nn, kind)(*args, **kwargs,
                                     dtype=torch.float64 if dtype == np.float64 else torch.float32)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            value = rng.uniform(0.5, 1.5, p.shape).astype(dtype)
            p.copy_(torch.from_numpy(value))
            dict(ours.named_parameters())[name].data[...] = value
    return ours, theirs


def _close(a, b, dtype, what):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=TOL[dtype], atol=TOL[dtype],
                               err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind, shape, kwargs", CONFIGS, ids=str)
def test_batchnorm_trains_and_evaluates_as_torch(kind, shape, kwargs, dtype):
    ours, theirs = _pair(kind, (shape[1],), kwargs, dtype)
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(1)
    for step in range(3):  # training: batch statistics, the running ones move
        x = (rng.standard_normal(shape) * 2 + step).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        x_ours, x_theirs = disttrain.tensor(x, requires_grad=True), torch.from_numpy(x)
        x_theirs.requires_grad_()
        out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
        out_ours.backward(disttrain.tensor(g))
        out_theirs.backward(torch.from_numpy(g))
        _close(out_ours.data, out_theirs.detach().numpy(), dtype, f"step {step} output")
        _close(x_ours.grad.data, x_theirs.grad.numpy(), dtype, f"step {step} input grad")
        for name, p in theirs.named_parameters():
            _close(dict(ours.named_parameters())[name].grad.data, p.grad.numpy(), dtype,
                   f"step {step} {name}.grad")
            p.grad = None
        for p in ours.parameters():
            p.grad = None
        theirs_state = theirs.state_dict()
        assert list(ours.state_dict()) == list(theirs_state)
        for key, value in ours.state_dict().items():
            assert value.dtype == theirs_state[key].numpy().dtype, key
            _close(value.data, theirs_state[key].numpy(), dtype, f"step {step} {key}")
    ours.eval(), theirs.eval()
    x = rng.standard_normal(shape).astype(dtype)
    _close(ours(disttrain.tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(), dtype,
           "eval output")


def test_batchnorm_loads_torchs_state_dict_and_resets():
    theirs = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    theirs(torch.randn(4, 3, 2, 2, dtype=torch.float64))
    ours = nn.BatchNorm2d(3, dtype=np.float64)
    ours.load_state_dict({k: disttrain.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    assert int(ours.num_batches_tracked.data) == 1
    np.testing.assert_array_equal(ours.running_var.data, theirs.running_var.numpy())
    ours.reset_running_stats()
    assert ours.running_mean.data.tolist() == [0.0] * 3 and int(ours.num_batches_tracked.data) == 0


@pytest.mark.parametrize("training", [True, False])
def test_functional_batch_norm_as_torch(training):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 4))
    stats = [rng.standard_normal(3), rng.uniform(0.5, 2, 3)]
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    ours_stats = [disttrain.tensor(s.copy()) for s in stats]
    theirs_stats = [torch.from_numpy(s.copy()) for s in stats]
    ours = F.batch_norm(disttrain.tensor(x), *ours_stats, disttrain.tensor(w),
                        disttrain.tensor(b), training, 0.2, 1e-4)
    theirs = torch_F.batch_norm(torch.from_numpy(x), *theirs_stats, torch.from_numpy(w),
                                torch.from_numpy(b), training, 0.2, 1e-4)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-12, atol=1e-12)
    for a, t in zip(ours_stats, theirs_stats):
        np.testing.assert_allclose(a.data, t.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, channels, shape, error", [
    ("BatchNorm1d", 3, (1, 3), ValueError), ("BatchNorm1d", 3, (2, 3, 4, 4), ValueError),
    ("BatchNorm2d", 3, (2, 3, 4), ValueError), ("BatchNorm2d", 3, (2, 4, 4, 4), RuntimeError),
    ("BatchNorm1d", 3, (2, 4), RuntimeError),
], ids=str)
def test_batchnorm_bad_inputs_raise_torchs_text(kind, channels, shape, error):
    same_error(lambda: getattr(nn, kind)(channels)(disttrain.zeros(*shape)),
                lambda: getattr(torch.nn, kind)(channels)(torch.zeros(shape)), error)


def test_batch_norm_in_eval_needs_running_stats_and_floats_as_torch():
    same_error(lambda: F.batch_norm(disttrain.zeros(4, 3), None, None),
                lambda: torch_F.batch_norm(torch.zeros(4, 3), None, None), RuntimeError)
    same_error(lambda: nn.BatchNorm1d(2)(disttrain.tensor(np.zeros((3, 2), np.int64))),
                lambda: torch.nn.BatchNorm1d(2)(torch.zeros(3, 2, dtype=torch.long)),
                NotImplementedError)


def test_batchnorm_in_eval_takes_one_sample_as_torch():
    ours, theirs = nn.BatchNorm1d(3).eval(), torch.nn.BatchNorm1d(3).eval()
    x = np.random.default_rng(3).standard_normal((1, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(disttrain.tensor(x)).data,
                               theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)


# -- GroupNorm -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("groups, shape, kwargs", [
    (2, (3, 4, 5, 5), {}), (1, (2, 6, 3), {"eps": 1e-3}), (6, (2, 6, 2, 3), {}),
    (3, (4, 6), {"affine": False}), (2, (2, 4, 3, 3), {"bias": False}),
], ids=str)
def test_group_norm_as_torch(groups, shape, kwargs, dtype):
    ours, theirs = _pair("GroupNorm", (groups, shape[1]), kwargs, dtype, seed=8)
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    x_ours, x_theirs = disttrain.tensor(x, requires_grad=True), torch.from_numpy(x)
    x_theirs.requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    out_ours.backward(disttrain.tensor(g))
    out_theirs.backward(torch.from_numpy(g))
    _close(out_ours.data, out_theirs.detach().numpy(), dtype, "output")
    _close(x_ours.grad.data, x_theirs.grad.numpy(), dtype, "input grad")
    for name, p in theirs.named_parameters():
        _close(dict(ours.named_parameters())[name].grad.data, p.grad.numpy(), dtype, name)


def test_group_norm_module_error_as_torch():
    with pytest.raises(ValueError) as theirs:
        torch.nn.GroupNorm(3, 4)
    with pytest.raises(ValueError) as ours:
        nn.GroupNorm(3, 4)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("shape, groups, weight", [((2, 3, 4), 2, None), ((2, 4, 4), 2, (3,)),
                                                   ((2,), 2, None)], ids=str)
def test_group_norm_errors_as_torch(shape, groups, weight):
    same_error(
        lambda: F.group_norm(disttrain.zeros(*shape), groups,
                             None if weight is None else disttrain.zeros(*weight)),
        lambda: torch_F.group_norm(torch.zeros(shape), groups,
                                   None if weight is None else torch.zeros(weight)),
        RuntimeError)
