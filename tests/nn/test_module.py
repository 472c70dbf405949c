"""Module mechanics against torch.nn.Module: names, orders, state_dict, errors, modes."""

from __future__ import annotations

import copy
import pickle
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn
from disttrain.nn.module import _IncompatibleKeys

from .helpers import copy_weights


def make_net(lib, tensors):
    """The same nested model in either library (lib is nn or torch.nn)."""

    class Block(lib.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = lib.Linear(4, 8)
            self.act = lib.Tanh()
            self.inner = lib.Sequential(lib.Linear(8, 8), lib.ReLU(), lib.Dropout(0.1),
                                        lib.Linear(8, 3, bias=False))
            self.scale = lib.Parameter(tensors.ones(3))
            self.register_buffer("running", tensors.zeros(3))
            self.register_buffer("scratch", tensors.zeros(2), persistent=False)
            self.heads = lib.ModuleList([lib.Linear(3, 2), lib.LayerNorm(2)])
            self.shared = self.fc1  # the same module twice: walks list it once

        def forward(self, x):
            h = self.inner(self.act(self.fc1(x))) * self.scale
            return self.heads[1](self.heads[0](h))

    return lib.Sequential(Block(), lib.Sequential(lib.Conv2d(1, 2, 3), lib.Flatten()))


@pytest.fixture
def nets():
    return make_net(nn, disttrain), make_net(torch.nn, torch)


def test_named_parameters_buffers_modules_match_torch(nets):
    ours, theirs = nets
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours[0].named_parameters(prefix="block", recurse=False)] == [
        n for n, _ in theirs[0].named_parameters(prefix="block", recurse=False)]
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert len(list(ours.modules())) == len(list(theirs.modules()))
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())


def test_state_dict_keys_match_torch_and_values_are_detached_views(nets):
    ours, theirs = nets
    state = ours.state_dict()
    assert isinstance(state, OrderedDict)
    assert list(state) == list(theirs.state_dict())
    weight = state["0.fc1.weight"]
    assert type(weight) is disttrain.Tensor and not weight.requires_grad
    assert weight.data is ours[0].fc1.weight.data  # shares storage, as torch's does
    assert ours.state_dict(keep_vars=True)["0.fc1.weight"] is ours[0].fc1.weight


def test_repr_matches_torch(nets):
    ours, theirs = nets
    assert repr(ours) == repr(theirs)
    assert repr(nn.Conv2d(2, 3, (1, 3), stride=2, bias=False)) == repr(
        torch.nn.Conv2d(2, 3, (1, 3), stride=2, bias=False))
    assert repr(nn.LayerNorm((2, 3), elementwise_affine=False)) == repr(
        torch.nn.LayerNorm((2, 3), elementwise_affine=False))


def test_parameter_repr_and_nature():
    p = nn.Parameter(disttrain.tensor([1.0, 2.0]))
    assert repr(p).startswith("Parameter containing:\ntensor([1., 2.]")
    assert repr(p).endswith("requires_grad=True)")
    assert p.requires_grad and p.is_leaf and isinstance(p, disttrain.Tensor)
    assert not nn.Parameter(disttrain.ones(2), requires_grad=False).requires_grad
    array = np.ones(3, dtype=np.float32)
    assert nn.Parameter(array).data is array  # wraps, as torch.nn.Parameter shares storage
    assert type(p.detach()) is disttrain.Tensor
    assert type(p * 2) is disttrain.Tensor
    assert type(nn.Parameter._make(array)) is nn.Parameter


def _torch_words(message: str) -> str:
    # Our shapes print as tuples, torch's as torch.Size([...]); the words are the same.
    return re.sub(r"torch\.Size\(\[([^\]]*)\]\)",
                  lambda m: str(tuple(int(n) for n in m.group(1).split(", ") if n)), message)


def _load_both(ours, theirs, edit, strict=True):
    state = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    edit(state)
    results = []
    for model, values in ((ours, state), (theirs, {k: torch.from_numpy(v)
                                                   for k, v in state.items()})):
        try:
            results.append(model.load_state_dict(values, strict=strict))
        except RuntimeError as error:
            results.append(error)
    return results


@pytest.mark.parametrize("edit", [
    lambda s: s.pop("0.bias"),
    lambda s: s.update(extra=np.zeros(1), more=np.zeros(2)),
    lambda s: s.update({"0.weight": np.zeros((3, 4), np.float32)}),
    lambda s: (s.pop("0.bias"),
               s.update({"0.weight": np.zeros((3, 4), np.float32), "x": np.ones(1)})),
], ids=["missing", "unexpected", "size", "all"])
def test_load_state_dict_strict_errors_match_torch(edit):
    ours = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    our_error, torch_error = _load_both(ours, theirs, edit)
    assert isinstance(our_error, RuntimeError) and isinstance(torch_error, RuntimeError)
    assert str(our_error) == _torch_words(str(torch_error))


def test_load_state_dict_non_strict_returns_the_keys_as_torch():
    def edit(state):
        state.pop("2.bias")
        state["stray"] = np.zeros(1)

    ours = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    our_keys, torch_keys = _load_both(ours, theirs, edit, strict=False)
    assert isinstance(our_keys, _IncompatibleKeys)
    assert our_keys.missing_keys == torch_keys.missing_keys == ["2.bias"]
    assert our_keys.unexpected_keys == torch_keys.unexpected_keys == ["stray"]
    assert repr(our_keys) == repr(torch_keys)
    matched = ours.load_state_dict(ours.state_dict())
    assert repr(matched) == repr(theirs.load_state_dict(theirs.state_dict()))


def test_load_state_dict_copies_in_place_keeping_array_identity(nets):
    ours, theirs = nets
    arrays = {name: p.data for name, p in ours.state_dict(keep_vars=True).items()}
    params = list(ours.parameters())
    copy_weights(ours, theirs)
    for name, value in ours.state_dict(keep_vars=True).items():
        assert value.data is arrays[name], name
        np.testing.assert_array_equal(value.data, theirs.state_dict()[name].numpy())
    assert all(a is b for a, b in zip(ours.parameters(), params))
    # Tensors are accepted too, and float64 values are cast into the float32 arrays.
    state = {k: disttrain.tensor(v.data.astype(np.float64) + 1) for k, v in
             ours.state_dict().items()}
    ours.load_state_dict(state)
    assert ours[0].fc1.weight.data is arrays["0.fc1.weight"]
    assert ours[0].fc1.weight.dtype == np.float32


def test_train_eval_is_recursive(nets):
    ours, theirs = nets
    assert all(m.training for m in ours.modules())
    assert ours.eval() is ours
    assert not any(m.training for m in ours.modules())
    ours[0].train()
    assert ours[0].inner[2].training and not ours.training
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        ours.train("yes")


def test_zero_grad_to_none_and_in_place(nets):
    ours, _ = nets
    block = ours[0]
    block(disttrain.randn(5, 4)).sum().backward()
    grads = [p.grad for p in block.parameters()]
    assert all(g is not None for g in grads)
    block.zero_grad(set_to_none=False)
    assert all(p.grad is g and not p.grad.data.any() for p, g in zip(block.parameters(), grads))
    block.zero_grad()
    assert all(p.grad is None for p in block.parameters())


def test_to_double_and_float_cast_in_place(nets):
    ours, _ = nets
    params = list(ours.parameters())
    ours[0](disttrain.randn(5, 4)).sum().backward()
    assert ours.double() is ours
    assert all(p.dtype == np.float64 for p in ours.parameters())
    assert all(b.dtype == np.float64 for b in ours.buffers())
    assert all(a is b for a, b in zip(ours.parameters(), params))  # same Parameter objects
    assert ours[0].fc1.weight.grad.dtype == np.float64
    out = ours[0](disttrain.randn(2, 4, dtype=np.float64))
    assert out.dtype == np.float64
    assert ours.float()[0].fc1.weight.dtype == np.float32
    assert ours.to(np.float64)[0].fc1.weight.dtype == np.float64
    assert ours.to("cpu", dtype=np.float32)[0].fc1.weight.dtype == np.float32


def test_requires_grad_apply_children_and_get_submodule(nets):
    ours, _ = nets
    assert ours.requires_grad_(False) is ours
    assert not any(p.requires_grad for p in ours.parameters())
    ours.requires_grad_()
    seen = []
    ours.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Sequential" and seen[0] == "Linear"
    assert list(ours.children()) == [ours[0], ours[1]]
    assert ours.get_submodule("0.inner.3") is ours[0].inner[3]


def test_attribute_registration_rules():
    m = nn.Module()
    m.w = nn.Parameter(disttrain.ones(2))
    m.child = nn.Linear(2, 2)
    m.register_buffer("buf", disttrain.zeros(2))
    m.plain = 3
    assert list(m._parameters) == ["w"] and list(m._modules) == ["child"]
    assert m.w is m._parameters["w"] and m.buf is m._buffers["buf"] and m.plain == 3
    m.w = nn.Parameter(disttrain.zeros(2))  # re-assignment keeps the slot
    m.w = None
    assert list(m._parameters) == ["w"] and list(m.parameters()) == list(m.child.parameters())
    with pytest.raises(TypeError, match="cannot assign '.*' as parameter 'w'"):
        m.w = disttrain.ones(2)
    with pytest.raises(TypeError, match="torch.nn.Parameter or None required"):
        m.register_parameter("v", disttrain.ones(2))
    with pytest.raises(KeyError, match="attribute 'plain' already exists"):
        m.register_buffer("plain", disttrain.ones(1))
    with pytest.raises(KeyError, match="parameter name can"):
        m.register_parameter("a.b", None)
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'nope'"):
        m.nope  # noqa: B018
    with pytest.raises(NotImplementedError, match='missing the required "forward" function'):
        m(1)
    del m.child
    assert "child" not in m._modules
    with pytest.raises(AttributeError, match="before Module.__init__"):
        class Broken(nn.Module):
            def __init__(self):
                self.w = nn.Parameter(disttrain.ones(1))
        Broken()


def test_shared_parameters_are_listed_once_as_in_torch():
    def tied(lib):
        a = lib.Linear(3, 3)
        b = lib.Linear(3, 3)
        b.weight = a.weight
        return lib.Sequential(a, b)
    ours, theirs = tied(nn), tied(torch.nn)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_sequential_and_module_list_behave_like_lists():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert len(seq) == 2 and isinstance(seq[-1], nn.ReLU)
    seq.append(nn.Linear(3, 1))
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    assert isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    assert seq(disttrain.ones(4, 2)).shape == (4, 1)
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1"]
    with pytest.raises(IndexError, match="index 5 is out of range"):
        seq[5]
    named = nn.Sequential(OrderedDict(first=nn.Linear(2, 2), act=nn.Tanh()))
    assert list(named.state_dict()) == ["first.weight", "first.bias"]
    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers += [nn.Linear(2, 2)]
    layers.insert(0, nn.Identity())
    assert len(layers) == 3 and isinstance(layers[0], nn.Identity)
    assert list(layers.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    heads = nn.ModuleDict({"a": nn.Linear(2, 1)})
    assert "a" in heads and list(heads.state_dict()) == ["a.weight", "a.bias"]


def test_modules_deepcopy_and_pickle():
    ours = nn.Sequential(nn.Sequential(nn.Linear(2, 3)), nn.LayerNorm(3))
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert list(clone.state_dict()) == list(ours.state_dict())
        weight = clone[0][0].weight
        assert isinstance(weight, nn.Parameter) and weight.requires_grad
        assert weight.data is not ours[0][0].weight.data
        np.testing.assert_array_equal(weight.data, ours[0][0].weight.data)


def test_state_dict_round_trips_through_an_npz_file(tmp_path):
    disttrain.manual_seed(0)
    source = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    np.savez(tmp_path / "model.npz", **{k: v.numpy() for k, v in source.state_dict().items()})
    target = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    with np.load(tmp_path / "model.npz", allow_pickle=False) as saved:
        assert repr(target.load_state_dict(saved)) == "<All keys matched successfully>"
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key].data, value.data)
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like"):
        target.load_state_dict([1, 2])
