"""Optimizer: param groups, per-parameter state and PyTorch-format state dicts."""

from __future__ import annotations

import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain

import numpy as np

from ..autograd.grad_mode import enable_grad
from ..autograd.tensor import Tensor, zero_grads

__all__ = ["Optimizer", "required"]

# torch's legacy type names, used in its error texts ("torch.FloatTensor")
_TYPE_NAMES = {
    np.float16: "HalfTensor", np.float32: "FloatTensor", np.float64: "DoubleTensor",
    np.int8: "CharTensor", np.uint8: "ByteTensor", np.int16: "ShortTensor",
    np.int32: "IntTensor", np.int64: "LongTensor", np.bool_: "BoolTensor",
}


class _RequiredParameter:
    """Marks a default that every param group must set, as torch.optim.optimizer.required."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def typename(obj) -> str:
    """The type name torch.typename would print, with disttrain in place of torch."""
    if isinstance(obj, Tensor):
        return "disttrain." + _TYPE_NAMES.get(obj.dtype.type, f"Tensor[{obj.dtype}]")
    module = getattr(obj, "__module__", "") or ""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if qualname is None:
        module, qualname = type(obj).__module__ or "", type(obj).__qualname__
    return qualname if module in ("", "builtins") else f"{module}.{qualname}"


class Optimizer:
    """Base class: holds param_groups and state; subclasses implement step()."""

    def __init__(self, params, defaults: dict) -> None:
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                "dicts, but got " + typename(params)
            )
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            text += "".join(f"    {k}: {group[k]}\n" for k in sorted(group) if k != "params")
        return text + ")"

    # (key, value) pairs a group saved by an older torch may lack, filled on load as torch's
    # __setstate__ does; each optimizer lists its own
    _LATE_KEYS: tuple = ()

    def __setstate__(self, state: dict) -> None:
        """Install loaded state and groups, filling the keys older dicts lack."""
        self.__dict__.update(state)
        for group in self.param_groups:
            for key, value in self._LATE_KEYS:
                group.setdefault(key, value)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters, with its own hyperparameters, to optimize."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list instead."
            )
        _split_names(param_group, list(params))
        for param in param_group["params"]:
            if not isinstance(param, Tensor):
                raise TypeError(
                    "optimizer can only optimize Tensors, but one of the params is "
                    + typename(param)
                )
            if not (param.is_leaf or param.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    "parameter group didn't specify a value of required optimization "
                    f"parameter {name}"
                )
            param_group.setdefault(name, default)
        self._check_new_group(param_group)
        self.param_groups.append(param_group)

    def _check_new_group(self, param_group: dict) -> None:
        params = param_group["params"]
        if len(params) != len(set(params)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, "
                "this will cause an error; see github.com/pytorch/pytorch/issues/40967 for "
                "more information",
                stacklevel=4,
            )
        seen = set()
        for group in self.param_groups:
            seen.update(group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                kind = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {kind} to the optimizer"
                )
        if not seen.isdisjoint(params):
            raise ValueError("some parameters appear in more than one parameter group")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's .grad: to None, or to zeros in the same array."""
        zero_grads(chain.from_iterable(g["params"] for g in self.param_groups), set_to_none)

    def _run_closure(self, closure):
        """Start a step: re-evaluate the loss, with grad enabled, when a closure is given."""
        self._opt_called = True  # lets LRScheduler warn when it steps before the optimizer
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def step(self, closure=None):
        """Update the parameters once; implemented by each optimizer."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """PyTorch's format: {"state": {index: {...}}, "param_groups": [...]}, params as indices."""
        index: dict[int, int] = {}
        groups, start = [], 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index.setdefault(id(p), i)
            packed["params"] = [index[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        # copies: the step updates state arrays in place, a saved dict must not follow
        state = {index[id(p)] if isinstance(p, Tensor) else p: _copy_state(v)
                 for p, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict(): state arrays are copied and cast to each parameter's dtype."""
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of "
                "optimizer's group"
            )
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        state: defaultdict = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                state[id_map[key]] = _cast_state(id_map[key], value)
            else:
                state[key] = value  # state not tied to a param is kept as is, as torch does
        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
        self.__setstate__({"state": state, "param_groups": saved_groups})


def _split_names(param_group: dict, params: list) -> None:
    """Accept (name, tensor) pairs, as torch does for named_parameters()."""
    names = [p[0] for p in params if isinstance(p, tuple)]
    param_group["params"] = [p[1] if isinstance(p, tuple) else p for p in params]
    if names:
        if len(names) != len(params):
            raise ValueError(
                "all optimizer params should be with/without names. Some param names are missing"
            )
        param_group["param_names"] = names


def _copy_state(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy_state(v) for k, v in value.items()}
    return value


def _cast_state(param: Tensor, value, key=None):
    """Deep-copy loaded state; arrays take the param's float dtype, except "step" (as torch)."""
    if isinstance(value, np.ndarray):
        if key != "step" and param.dtype.kind == "f":
            return np.array(value, dtype=param.dtype, copy=True)
        return value.copy()
    if isinstance(value, dict):
        return {k: _cast_state(param, v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v) for v in value)
    return value


def _check_unsupported(**flags) -> None:
    """Reject torch options whose math a numpy optimizer cannot reproduce."""
    for name, value in flags.items():
        if value:
            raise NotImplementedError(f"{name}=True is not supported by disttrain's optimizers")
