"""Module.load_state_dict(assign=True) against torch's: the state_dict's tensors take the
parameters' and buffers' places (dtype, storage, identity of a Parameter), the module's
requires_grad is kept, size mismatches and missing keys are reported as without assign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn


def test_assign_puts_the_given_tensors_in_place_as_torch():
    ours, theirs = nn.Linear(2, 3), torch.nn.Linear(2, 3)
    weight = np.arange(6, dtype=np.float64).reshape(3, 2)
    bias_ours = nn.Parameter(disttrain.zeros(3), requires_grad=False)
    bias_theirs = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    result_ours = ours.load_state_dict({"weight": disttrain.tensor(weight), "bias": bias_ours},
                                       assign=True)
    result_theirs = theirs.load_state_dict({"weight": torch.from_numpy(weight),
                                            "bias": bias_theirs}, assign=True)
    assert (result_ours.missing_keys, result_ours.unexpected_keys) == (
        result_theirs.missing_keys, result_theirs.unexpected_keys)
    assert ours.weight.dtype == np.float64 and theirs.weight.dtype == torch.float64
    assert isinstance(ours.weight, nn.Parameter) and isinstance(theirs.weight, torch.nn.Parameter)
    assert ours.bias is bias_ours and theirs.bias is bias_theirs
    assert (ours.weight.requires_grad, ours.bias.requires_grad) == (
        theirs.weight.requires_grad, theirs.bias.requires_grad) == (True, True)
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(ours.weight.detach().numpy(), theirs.weight.detach().numpy())


def test_assign_replaces_buffers_and_keeps_their_dtype_as_torch():
    ours, theirs = nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    state = {k: v.double() for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(state, assign=True)
    ours.load_state_dict({k: disttrain.tensor(v.numpy()) for k, v in state.items()}, assign=True)
    for name, buffer in theirs.named_buffers():
        assert dict(ours.named_buffers())[name].dtype == buffer.numpy().dtype, name


def test_assign_still_reports_size_mismatches():
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        nn.Linear(2, 3).load_state_dict({"weight": disttrain.ones(2, 2),
                                         "bias": disttrain.zeros(3)}, assign=True)
