"""Adam and AdamW (decoupled weight decay), as torch.optim.Adam and torch.optim.AdamW."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_unsupported
from .workspace import Workspace, descent_grad

__all__ = ["Adam", "AdamW", "adam", "check_adam_arguments", "update_moments"]


def update_moments(exp_avg, exp_avg_sq, g, beta1, beta2, scratch) -> None:
    """The Adam family's moments in place, as torch's: exp_avg.lerp_(g, 1 - beta1) and
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2), in torch's order of products."""
    _lerp_(exp_avg, g, 1 - beta1, scratch)
    exp_avg_sq *= beta2
    square = np.multiply(g, 1 - beta2, out=scratch)
    exp_avg_sq += np.multiply(square, g, out=square)


def check_adam_arguments(lr, eps, betas, weight_decay) -> None:
    """torch's checks for the Adam family, in torch's order (`not 0.0 <= x` rejects NaN)."""
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


class Adam(Optimizer):
    """Adam; state per parameter: step, exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad)."""

    _LATE_KEYS = (
        ("amsgrad", False), ("maximize", False), ("foreach", None), ("capturable", False),
        ("differentiable", False), ("decoupled_weight_decay", False), ("fused", None),
    )

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False) -> None:
        check_adam_arguments(lr, eps, betas, weight_decay)
        if not (isinstance(betas[0], float) and isinstance(betas[1], float)):
            raise ValueError("betas must be either both floats or both Tensors")
        _check_unsupported(capturable=capturable, differentiable=differentiable, fused=fused)
        defaults = {
            "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
            "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
            "capturable": capturable, "differentiable": differentiable, "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)
        self._workspace = Workspace()

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss, if any."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p._grad is not None]
            states = [self._init_state(p, group["amsgrad"]) for p in with_grad]
            steps = [s["step"] for s in states]
            beta1, beta2 = group["betas"]
            adam([p.data for p in with_grad], [p._grad.data for p in with_grad],
                 [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                 [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [], steps,
                 amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"],
                 maximize=group["maximize"],
                 decoupled_weight_decay=group["decoupled_weight_decay"],
                 workspace=self._workspace)
            for s, step in zip(states, steps):
                s["step"] = step
        return loss

    def _init_state(self, p, amsgrad: bool) -> dict:
        state = self.state[p]
        if len(state) == 0:
            # torch keeps step as a 0-d float32 tensor; a Python float holds the same values
            state["step"] = 0.0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            if amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
        return state


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the moments."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, amsgrad,
         beta1, beta2, lr, weight_decay, eps, maximize, decoupled_weight_decay,
         workspace: Workspace | None = None) -> None:
    """One Adam step on numpy arrays in place; state_steps (numbers) are incremented in place."""
    # workspace slots: "grad" (g after maximize and weight decay, alive all iteration),
    # "denom" (the second-moment denominator) and "term" (each short-lived product)
    ws = workspace or Workspace()
    for i, (p, g) in enumerate(zip(params, grads)):
        state_steps[i] = step = state_steps[i] + 1
        if weight_decay != 0 and decoupled_weight_decay:  # AdamW: decay p, not g
            p *= 1 - lr * weight_decay
        g = descent_grad(p, g, maximize, 0 if decoupled_weight_decay else weight_decay, ws)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        update_moments(exp_avg, exp_avg_sq, g, beta1, beta2, ws.like(p, "term"))
        if amsgrad:
            np.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            exp_avg_sq = max_exp_avg_sqs[i]
        step_size = lr / (1 - beta1**step)
        denom = np.sqrt(exp_avg_sq, out=ws.like(p, "denom"))
        denom /= (1 - beta2**step) ** 0.5
        denom += eps
        update = np.multiply(exp_avg, -step_size, out=ws.like(p, "term"))  # addcdiv's order
        update /= denom
        p += update


def _lerp_(start, end, weight, work) -> None:
    """start.lerp_(end, weight) with torch's two formulas (chosen by weight < 0.5)."""
    diff = np.subtract(end, start, out=work)
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - weight
        np.subtract(end, diff, out=start)
