"""The padding layers against torch's (values, input gradients, reprs), and Dropout1d /
Dropout2d: whole channels kept and scaled by 1/(1-p) or zeroed, with about p of them zeroed,
the gradient through the same mask, identity in eval, torch's errors and warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import same_error
from .test_activations_more import compare

PADS = [
    ("ConstantPad1d", ((1, 2), 3.5), (2, 3, 4)), ("ConstantPad2d", (2, -1.0), (2, 3, 4)),
    ("ConstantPad3d", ((1, 0, 2, 1, 0, 1), 0.5), (1, 2, 3, 4)),
    ("ZeroPad1d", (2,), (3, 4)), ("ZeroPad2d", ((1, 2, 3, 0),), (1, 2, 3, 4)),
    ("ZeroPad3d", (1,), (1, 2, 3, 4)),
    ("ReflectionPad1d", ((2, 1),), (2, 3, 4)), ("ReflectionPad2d", (1,), (1, 2, 3, 4)),
    ("ReflectionPad3d", ((1, 1, 0, 2, 1, 0),), (1, 2, 3, 4, 5)),
    ("ReplicationPad1d", (3,), (2, 4)), ("ReplicationPad2d", ((0, 2, 3, 1),), (2, 3, 4)),
    ("ReplicationPad3d", (2,), (1, 2, 2, 3, 4)),
    ("CircularPad1d", ((1, 3),), (2, 3, 4)), ("CircularPad2d", (2,), (1, 2, 3, 4)),
    ("CircularPad3d", ((1, 0, 1, 1, 2, 0),), (1, 1, 3, 3, 4)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, args, shape", PADS, ids=[p[0] for p in PADS])
def test_padding_layers_as_torch(name, args, shape, dtype):
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(ours) == repr(theirs)
    assert ours.padding == theirs.padding
    x = np.random.default_rng(0).standard_normal(shape)
    compare(ours, theirs, x, dtype)


@pytest.mark.parametrize("name, fn, shape, batched", [
    ("Dropout1d", F.dropout1d, (40, 50, 3), True), ("Dropout1d", F.dropout1d, (400, 3), False),
    ("Dropout2d", F.dropout2d, (20, 100, 2, 3), True),
    ("Dropout2d", F.dropout2d, (400, 2, 3), True),  # 3-D: (N, C, L), as torch (warned)
], ids=str)
def test_channel_dropout_zeroes_whole_channels(name, fn, shape, batched):
    disttrain.manual_seed(3)
    x = disttrain.tensor(np.random.default_rng(1).uniform(1, 2, shape), requires_grad=True)
    layer = getattr(nn, name)(0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = layer(x)
    lead = 2 if batched else 1
    ratio = (out.data / x.data).reshape(int(np.prod(shape[:lead])), -1)
    kept = ratio[:, 0] > 0
    np.testing.assert_allclose(ratio[kept], 1 / 0.7, rtol=1e-12)  # a channel all kept
    assert (ratio[~kept] == 0).all()  # or all zeroed
    assert 0.25 < 1 - kept.mean() < 0.35  # about p of the channels
    g = np.random.default_rng(2).standard_normal(shape)
    out.backward(disttrain.tensor(g))
    np.testing.assert_allclose(x.grad.data, g * out.data / x.data, rtol=1e-12)
    layer.eval()
    assert layer(x) is x or np.array_equal(layer(x).data, x.data)


def test_channel_dropout_reprs_as_torch():
    assert repr(nn.Dropout2d()) == repr(torch.nn.Dropout2d())
    assert repr(nn.Dropout1d(0.3, True)) == repr(torch.nn.Dropout1d(0.3, True))


@pytest.mark.parametrize("shape", [(2, 2, 2, 2), (2,)], ids=str)
def test_dropout1d_refuses_other_ranks_as_torch(shape):
    same_error(lambda: F.dropout1d(disttrain.zeros(*shape)),
               lambda: TF.dropout1d(torch.zeros(shape)), RuntimeError)


def test_channel_dropout_probability_error_as_torch():
    same_error(lambda: F.dropout2d(disttrain.zeros(2, 3, 4), 1.5),
               lambda: TF.dropout2d(torch.zeros(2, 3, 4), 1.5), ValueError)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3), (1, 2, 3, 4, 5)], ids=str)
def test_dropout2d_warns_as_torch(shape):
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        F.dropout2d(disttrain.zeros(*shape))
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        TF.dropout2d(torch.zeros(shape))
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert ours


def test_channel_dropout_edges():
    x = disttrain.ones(2, 3, 4)
    assert np.array_equal(F.dropout1d(x, 0.0).data, x.data)
    assert not F.dropout1d(x, 1.0).data.any()
    assert np.array_equal(F.dropout2d(disttrain.ones(1, 2, 2, 2), 0.5, training=False).data,
                          np.ones((1, 2, 2, 2)))
