"""Adagrad with learning-rate decay, weight decay and maximize, as torch.optim.Adagrad."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_unsupported
from .workspace import Workspace, descent_grad

__all__ = ["Adagrad", "adagrad"]


class Adagrad(Optimizer):
    """Adagrad; state per parameter: step and sum, created with the optimizer (as torch)."""

    _LATE_KEYS = (
        ("foreach", None), ("maximize", False), ("differentiable", False), ("fused", None),
    )

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False,
                 fused=None) -> None:
        # torch's checks, in torch's order (`not 0.0 <= x` also rejects NaN)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable, "fused": fused,
        }
        super().__init__(params, defaults)
        # torch checks these combinations after the params, so a bad param list wins
        if fused:
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        _check_unsupported(differentiable=differentiable, fused=fused)
        self._workspace = Workspace()
        for group in self.param_groups:
            for p in group["params"]:
                # the constructor's value, not the group's: a group's own
                # initial_accumulator_value is ignored, as in torch
                self._new_state(p, initial_accumulator_value)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss, if any."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p._grad is not None]
            # a parameter added by add_param_group has no state yet; torch then starts its
            # sum from the defaults' initial_accumulator_value
            states = [self.state[p] or self._new_state(
                p, self.defaults["initial_accumulator_value"]) for p in with_grad]
            steps = [s["step"] for s in states]
            adagrad([p.data for p in with_grad], [p._grad.data for p in with_grad],
                    [s["sum"] for s in states], steps, lr=group["lr"],
                    weight_decay=group["weight_decay"], lr_decay=group["lr_decay"],
                    eps=group["eps"], maximize=group["maximize"], workspace=self._workspace)
            for s, step in zip(states, steps):
                s["step"] = step
        return loss

    def _new_state(self, p, initial_accumulator_value) -> dict:
        state = self.state[p]
        # torch keeps step as a 0-d float32 tensor; a Python float holds the same values
        state["step"] = 0.0
        state["sum"] = np.full_like(p.data, initial_accumulator_value)
        return state


def adagrad(params, grads, state_sums, state_steps, *, lr, weight_decay, lr_decay, eps,
            maximize, workspace: Workspace | None = None) -> None:
    """One Adagrad step on numpy arrays in place; state_steps (numbers) are incremented."""
    # workspace slots: "grad" (g after maximize and weight decay, alive all iteration),
    # "std" (the denominator) and "term" (each short-lived product)
    ws = workspace or Workspace()
    for i, (p, g) in enumerate(zip(params, grads)):
        state_steps[i] = step = state_steps[i] + 1
        g = descent_grad(p, g, maximize, weight_decay, ws)
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state_sums[i]
        state_sum += np.multiply(g, g, out=ws.like(p, "term"))  # addcmul_ with value=1
        std = np.sqrt(state_sum, out=ws.like(p, "std"))
        std += eps
        update = np.multiply(g, -clr, out=ws.like(p, "term"))  # addcdiv's order
        update /= std
        p += update
