"""Training parity: the same MLP, data and hand-written SGD give torch's loss curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn

from .helpers import copy_weights

STEPS, LR = 50, 0.1


def _data(n=64, features=8, classes=3):
    # A fixed synthetic set: labels from a random linear teacher, so there is signal to fit.
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(n, features))
    y = (x @ rng.normal(size=(features, classes))).argmax(axis=1)
    return x, y


def _mlp(lib, activation):
    return lib.Sequential(
        lib.Linear(8, 16), getattr(lib, activation)(), lib.Linear(16, 16),
        getattr(lib, activation)(), lib.Linear(16, 3),
    )


def _ours_curve(model, x, y):
    loss_fn, losses = nn.CrossEntropyLoss(), []
    inputs = disttrain.tensor(x)
    for _ in range(STEPS):
        loss = loss_fn(model(inputs), y)
        loss.backward()
        for p in model.parameters():
            p.data -= LR * p.grad.data
            p.grad = None
        losses.append(loss.item())
    return losses


def _torch_curve(model, x, y):
    loss_fn, losses = torch.nn.CrossEntropyLoss(), []
    inputs, target = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(STEPS):
        loss = loss_fn(model(inputs), target)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= LR * p.grad
                p.grad = None
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("activation", ["Tanh", "ReLU"])
def test_mlp_loss_curve_matches_torch(activation):
    torch.manual_seed(0)
    theirs = _mlp(torch.nn, activation).double()
    ours = _mlp(nn, activation).double()
    copy_weights(ours, theirs)
    x, y = _data()
    ours_losses = _ours_curve(ours, x, y)
    torch_losses = _torch_curve(theirs, x, y)
    np.testing.assert_allclose(ours_losses, torch_losses, rtol=1e-6, atol=1e-6)
    assert ours_losses[-1] < 0.8 * ours_losses[0]  # it actually learned something
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name].data, value.numpy(), atol=1e-6)
