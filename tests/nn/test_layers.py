"""Every layer against its torch.nn twin: same weights, same input, outputs and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import assert_close, check_module

DTYPES = [np.float64, np.float32]


def _x(*shape, seed=1):
    return np.random.default_rng(seed).uniform(-2, 2, size=shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
def test_linear(dtype, bias, shape):
    check_module(nn.Linear(4, 3, bias=bias), torch.nn.Linear(4, 3, bias=bias), _x(*shape),
                 dtype)


def test_linear_dtype_argument_and_default():
    assert nn.Linear(2, 3).weight.dtype == np.float32
    layer = nn.Linear(2, 3, dtype=np.float64)
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64
    assert layer(disttrain.ones(4, 2, dtype=np.float64)).dtype == np.float64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,padding,bias", [
    (3, 1, 0, True), (3, 2, 1, True), (2, 2, 0, False), ((3, 3), (1, 1), (2, 2), True),
    ((1, 3), 1, 1, True),
])
def test_conv2d(dtype, kernel, stride, padding, bias):
    ours = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, bias=bias)
    theirs = torch.nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, bias=bias)
    check_module(ours, theirs, _x(2, 3, 7, 6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 1), (2, 3)])
def test_max_pool2d(dtype, kernel, stride):
    check_module(nn.MaxPool2d(kernel, stride), torch.nn.MaxPool2d(kernel, stride),
                 _x(2, 3, 7, 8), dtype)


@pytest.mark.parametrize("ours,theirs", [
    (nn.ReLU(), torch.nn.ReLU()), (nn.Tanh(), torch.nn.Tanh()),
    (nn.Sigmoid(), torch.nn.Sigmoid()), (nn.GELU(), torch.nn.GELU()),
    (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)), (nn.LogSoftmax(-1), torch.nn.LogSoftmax(-1)),
    (nn.Identity(), torch.nn.Identity()), (nn.Flatten(), torch.nn.Flatten()),
    (nn.Flatten(0, 1), torch.nn.Flatten(0, 1)),
], ids=lambda m: repr(m))
@pytest.mark.parametrize("dtype", DTYPES)
def test_parameterless_layers(ours, theirs, dtype):
    x = _x(3, 4, 5) * 3
    if isinstance(ours, nn.ReLU | nn.LeakyReLU):
        x[np.abs(x) < 1e-3] = 0.5  # no ties at the kink
    check_module(ours, theirs, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kwargs", [
    ((4,), {}), ((3, 4), {}), ((4,), {"elementwise_affine": False}), ((4,), {"bias": False}),
    ((4,), {"eps": 1e-2}),
])
def test_layer_norm(dtype, shape, kwargs):
    ours, theirs = nn.LayerNorm(shape, **kwargs), torch.nn.LayerNorm(shape, **kwargs)
    with torch.no_grad():  # non-trivial affine parameters, so their gradients mean something
        for p in theirs.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    check_module(ours, theirs, _x(2, 3, 4), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_with_repeated_indices(dtype, padding_idx):
    index = np.array([[1, 2, 1, 4], [2, 2, 0, 1]])
    ours = nn.Embedding(5, 3, padding_idx=padding_idx)
    theirs = torch.nn.Embedding(5, 3, padding_idx=padding_idx)
    check_module(ours, theirs, index, dtype)
    assert np.all(ours.weight.grad.data[3] == 0)  # a row no index picked


def test_embedding_init_and_padding_row():
    layer = nn.Embedding(10, 4, padding_idx=-1)
    assert layer.padding_idx == 9 and np.all(layer.weight.data[9] == 0)
    with pytest.raises(RuntimeError, match="indices"):
        layer(disttrain.tensor([0.5]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_cnn(dtype):
    def build(lib):
        return lib.Sequential(
            lib.Conv2d(1, 4, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),
            lib.Conv2d(4, 6, 3, stride=2), lib.GELU(), lib.Flatten(),
            lib.Linear(6 * 1 * 1, 8), lib.LayerNorm(8), lib.Tanh(), lib.Linear(8, 3),
        )
    check_module(build(nn), build(torch.nn), _x(2, 1, 8, 8), dtype)


def test_dropout_eval_is_identity():
    layer = nn.Dropout(0.3).eval()
    x = disttrain.tensor(_x(50, 20), requires_grad=True)
    assert layer(x) is x
    assert F.dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_train_zeros_about_p_and_scales_the_rest_exactly(dtype, p):
    disttrain.manual_seed(0)
    x = disttrain.tensor(_x(200, 100) + 3.0, dtype=dtype, requires_grad=True)  # no zeros
    out = nn.Dropout(p)(x)
    kept = out.data != 0
    assert abs((~kept).mean() - p) < 0.02
    scale = np.asarray(1 / (1 - p), dtype=dtype)
    np.testing.assert_array_equal(out.data[kept], x.data[kept] * scale)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.where(kept, scale, 0).astype(dtype))


def test_dropout_uses_the_global_generator_and_edge_probabilities():
    x = disttrain.ones(30, 30)
    disttrain.manual_seed(5)
    first = F.dropout(x, 0.5).data
    disttrain.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, first)
    assert np.all(F.dropout(x, 1.0).data == 0)
    assert F.dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [1.5, -0.1])
def test_dropout_probability_is_validated_with_torchs_message(p):
    with pytest.raises(ValueError) as theirs:
        torch.nn.Dropout(p)
    with pytest.raises(ValueError) as ours:
        nn.Dropout(p)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        F.dropout(disttrain.ones(2), 1.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_wrappers_match_torch(dtype):
    x = _x(3, 5).astype(dtype)
    ours, theirs = disttrain.tensor(x), torch.tensor(x)
    pairs = [
        (F.softmax(ours, dim=0), torch.nn.functional.softmax(theirs, dim=0)),
        (F.log_softmax(ours, dim=1), torch.nn.functional.log_softmax(theirs, dim=1)),
        (F.gelu(ours, approximate="tanh"), torch.nn.functional.gelu(theirs, approximate="tanh")),
        (F.relu(ours), torch.nn.functional.relu(theirs)),
        (F.sigmoid(ours), torch.sigmoid(theirs)),
        (F.tanh(ours), torch.tanh(theirs)),
        (F.flatten(ours), torch.flatten(theirs)),
        (F.layer_norm(ours, (5,)), torch.nn.functional.layer_norm(theirs, (5,))),
    ]
    for a, b in pairs:
        assert_close(a, b, dtype)


def test_layer_norm_shape_error_names_the_shapes():
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[4\]"):
        F.layer_norm(disttrain.ones(2, 3), (4,))


def test_linear_output_feeds_on_like_any_tensor():
    # The fast path returns a transposed (F-ordered) result; reshape and indexing still work.
    layer = nn.Linear(4, 6, dtype=np.float64)
    out = layer(disttrain.tensor(_x(5, 4)))
    np.testing.assert_allclose(out.reshape(5, 2, 3).data, out.data.reshape(5, 2, 3))
    np.testing.assert_allclose(out.data, _x(5, 4) @ layer.weight.data.T + layer.bias.data)
