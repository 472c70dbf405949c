"""Adamax (Adam with an infinity norm), with weight decay and maximize, as torch.optim.Adamax."""

from __future__ import annotations

import numpy as np

from .adam import _lerp_, check_adam_arguments
from .optimizer import Optimizer, _check_unsupported
from .workspace import Workspace, descent_grad

__all__ = ["Adamax", "adamax"]


class Adamax(Optimizer):
    """Adamax; state per parameter: step, exp_avg, exp_inf."""

    _LATE_KEYS = (
        ("foreach", None), ("maximize", False), ("differentiable", False), ("capturable", False),
    )

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False,
                 capturable=False) -> None:
        check_adam_arguments(lr, eps, betas, weight_decay)
        _check_unsupported(capturable=capturable, differentiable=differentiable)
        # betas as given (torch keeps a list a list), so the state_dict's groups are torch's
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)
        self._workspace = Workspace()

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss, if any."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p._grad is not None]
            states = [self._init_state(p) for p in with_grad]
            steps = [s["step"] for s in states]
            beta1, beta2 = group["betas"]
            adamax([p.data for p in with_grad], [p._grad.data for p in with_grad],
                   [s["exp_avg"] for s in states], [s["exp_inf"] for s in states], steps,
                   eps=group["eps"], beta1=beta1, beta2=beta2, lr=group["lr"],
                   weight_decay=group["weight_decay"], maximize=group["maximize"],
                   workspace=self._workspace)
            for s, step in zip(states, steps):
                s["step"] = step
        return loss

    def _init_state(self, p) -> dict:
        state = self.state[p]
        if len(state) == 0:
            # torch keeps step as a 0-d float32 tensor; a Python float holds the same values
            state["step"] = 0.0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_inf"] = np.zeros_like(p.data)
        return state


def adamax(params, grads, exp_avgs, exp_infs, state_steps, *, eps, beta1, beta2, lr,
           weight_decay, maximize, workspace: Workspace | None = None) -> None:
    """One Adamax step on numpy arrays in place; state_steps (numbers) are incremented."""
    # workspace slots: "grad" (g after maximize and weight decay, alive all iteration)
    # and "term" (each short-lived product: |g| + eps, then the update)
    ws = workspace or Workspace()
    for i, (p, g) in enumerate(zip(params, grads)):
        state_steps[i] = step = state_steps[i] + 1
        g = descent_grad(p, g, maximize, weight_decay, ws)
        exp_avg, exp_inf = exp_avgs[i], exp_infs[i]
        _lerp_(exp_avg, g, 1 - beta1, ws.like(p, "term"))
        # the infinity norm: max(beta2 * u, |g| + eps), NaN propagating as torch.maximum
        exp_inf *= beta2
        norm = np.abs(g, out=ws.like(p, "term"))
        norm += eps
        np.maximum(exp_inf, norm, out=exp_inf)
        clr = lr / (1 - beta1**step)
        update = np.multiply(exp_avg, -clr, out=ws.like(p, "term"))  # addcdiv's order
        update /= exp_inf
        p += update
