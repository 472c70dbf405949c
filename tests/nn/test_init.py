"""Initialisation: torch's bounds and distributions, reproducible through manual_seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn
from disttrain.nn import init


def _kaiming_bound(fan_in: int) -> float:
    # The weight bound of torch's Linear/Conv reset_parameters, from torch's own functions.
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    return gain * math.sqrt(3.0 / fan_in)


@pytest.mark.parametrize("make,fan_in", [
    (lambda lib, **kw: lib.Linear(20, 30, **kw), 20),
    (lambda lib, **kw: lib.Conv2d(3, 8, 5, **kw), 75),
    (lambda lib, **kw: lib.Conv2d(4, 2, (1, 3), **kw), 12),
])
@pytest.mark.parametrize("dtype", [None, np.float64])
def test_weights_and_bias_lie_within_torchs_bounds(make, fan_in, dtype):
    layer = make(nn, dtype=dtype)
    assert layer.weight.dtype == np.dtype(dtype or np.float32)
    bound = _kaiming_bound(fan_in)
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.bias.data).max() <= 1 / math.sqrt(fan_in)
    theirs = make(torch.nn)
    assert theirs.weight.abs().max().item() <= bound  # the bound is torch's, checked on torch
    assert math.isclose(bound, 1 / math.sqrt(fan_in), rel_tol=1e-12)


def test_a_big_layer_has_the_theoretical_mean_and_std():
    disttrain.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    bound = 1 / math.sqrt(1000)
    weight = layer.weight.data.astype(np.float64)
    assert abs(weight.mean()) < 0.01 * bound
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.01 * bound / math.sqrt(3)
    assert weight.max() > 0.999 * bound and weight.min() < -0.999 * bound  # fills the range
    torch.manual_seed(0)
    theirs = torch.nn.Linear(1000, 1000).weight.detach().numpy().astype(np.float64)
    assert abs(weight.std() - theirs.std()) < 0.01 * theirs.std()


def test_same_seed_gives_the_same_weights():
    def build():
        return nn.Sequential(nn.Linear(4, 5), nn.Conv2d(1, 2, 3), nn.Embedding(3, 2))
    disttrain.manual_seed(7)
    first = build().state_dict()
    disttrain.manual_seed(7)
    second = build().state_dict()
    disttrain.manual_seed(8)
    third = build().state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key].data, second[key].data)
        assert not np.array_equal(first[key].data, third[key].data)


def test_fan_in_and_fan_out_and_gain_match_torch():
    for shape in [(3, 4), (5, 3, 2, 2), (6, 2, 3)]:
        assert init._calculate_fan_in_and_fan_out(disttrain.zeros(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(*shape))
    with pytest.raises(ValueError) as ours:
        init._calculate_fan_in_and_fan_out(disttrain.zeros(3))
    with pytest.raises(ValueError) as theirs:
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(3))
    assert str(ours.value) == str(theirs.value)
    for name, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                        ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2),
                        ("leaky_relu", math.sqrt(5)), ("selu", None)]:
        assert init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)


@pytest.mark.parametrize("fill,bound", [
    (lambda t: init.kaiming_uniform_(t), math.sqrt(2) * math.sqrt(3 / 40)),
    (lambda t: init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
     math.sqrt(2) * math.sqrt(3 / 50)),
    (lambda t: init.xavier_uniform_(t, gain=2.0), 2.0 * math.sqrt(6 / 90)),
    (lambda t: init.uniform_(t, -0.3, 0.3), 0.3),
])
def test_uniform_fills_stay_in_their_bound_in_place(fill, bound):
    param = nn.Parameter(disttrain.zeros(50, 40, dtype=np.float64))
    array = param.data
    assert fill(param) is param
    assert param.data is array and param.requires_grad and param.grad_fn is None
    assert np.abs(array).max() <= bound and np.abs(array).max() > 0.9 * bound


def test_normal_constant_zeros_ones():
    t = disttrain.zeros(200, 200, dtype=np.float64)
    init.normal_(t, 1.0, 0.5)
    assert abs(t.data.mean() - 1.0) < 0.01 and abs(t.data.std() - 0.5) < 0.01
    init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(t.data.std() - math.sqrt(2 / 200)) < 0.002
    init.xavier_normal_(t)
    assert abs(t.data.std() - math.sqrt(2 / 400)) < 0.002
    assert np.all(init.zeros_(t).data == 0) and np.all(init.ones_(t).data == 1)
    assert np.all(init.constant_(t, 0.25).data == 0.25)
    layer_norm = nn.LayerNorm(3)
    assert np.all(layer_norm.weight.data == 1) and np.all(layer_norm.bias.data == 0)
