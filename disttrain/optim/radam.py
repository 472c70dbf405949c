"""RAdam (rectified Adam), with L2 or decoupled weight decay, as torch.optim.RAdam."""

from __future__ import annotations

import numpy as np

from .adam import check_adam_arguments, update_moments
from .optimizer import Optimizer, _check_unsupported
from .workspace import Workspace, descent_grad

__all__ = ["RAdam", "radam"]


class RAdam(Optimizer):
    """RAdam; state per parameter: step, exp_avg, exp_avg_sq."""

    _LATE_KEYS = (
        ("foreach", None), ("maximize", False), ("differentiable", False),
        ("decoupled_weight_decay", False), ("capturable", False),
    )

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False) -> None:
        check_adam_arguments(lr, eps, betas, weight_decay)
        _check_unsupported(capturable=capturable, differentiable=differentiable)
        # betas as given (torch keeps a list a list), so the state_dict's groups are torch's
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "maximize": maximize, "foreach": foreach, "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay, "differentiable": differentiable,
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
            radam([p.data for p in with_grad], [p._grad.data for p in with_grad],
                  [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], steps,
                  beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                  eps=group["eps"], decoupled_weight_decay=group["decoupled_weight_decay"],
                  maximize=group["maximize"], workspace=self._workspace)
            for s, step in zip(states, steps):
                s["step"] = step
        return loss

    def _init_state(self, p) -> dict:
        state = self.state[p]
        if len(state) == 0:
            # torch keeps step as a 0-d float32 tensor; a Python float holds the same values
            state["step"] = 0.0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        return state


def radam(params, grads, exp_avgs, exp_avg_sqs, state_steps, *, beta1, beta2, lr,
          weight_decay, eps, decoupled_weight_decay, maximize,
          workspace: Workspace | None = None) -> None:
    """One RAdam step on numpy arrays in place; state_steps (numbers) are incremented."""
    # workspace slots: "grad" (g after maximize and weight decay, alive all iteration),
    # "adaptive" (the adaptive learning rate) and "term" (the update as it is built)
    ws = workspace or Workspace()
    for i, (p, g) in enumerate(zip(params, grads)):
        state_steps[i] = step = state_steps[i] + 1
        if weight_decay != 0 and decoupled_weight_decay:  # RAdamW: decay p, not g
            p *= 1 - lr * weight_decay
        g = descent_grad(p, g, maximize, 0 if decoupled_weight_decay else weight_decay, ws)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        update_moments(exp_avg, exp_avg_sq, g, beta1, beta2, ws.like(p, "term"))
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        # the length of the approximated simple moving average, and its limit
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        # torch's product, left to right: exp_avg / bias_correction1 * lr (* adaptive * rect)
        update = np.divide(exp_avg, bias_correction1, out=ws.like(p, "term"))
        update *= lr
        if rho_t > 5.0:  # the variance is tractable: rectify the adaptive learning rate
            adaptive = np.sqrt(exp_avg_sq, out=ws.like(p, "adaptive"))
            adaptive += eps
            # bias_correction2**0.5 / adaptive is torch's reciprocal(adaptive) * the number
            np.reciprocal(adaptive, out=adaptive)
            adaptive *= bias_correction2**0.5
            update *= adaptive
            update *= ((rho_t - 4) * (rho_t - 2) * rho_inf
                       / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        p -= update  # p.add_(update, alpha=-1.0): the same number
