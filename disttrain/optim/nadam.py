"""NAdam (Adam with Nesterov momentum) and NAdamW (decoupled weight decay), as torch.optim.NAdam."""

from __future__ import annotations

import numpy as np

from .adam import check_adam_arguments, update_moments
from .optimizer import Optimizer, _check_unsupported
from .workspace import Workspace, descent_grad

__all__ = ["NAdam", "nadam"]


class NAdam(Optimizer):
    """NAdam; state per parameter: step, mu_product, exp_avg, exp_avg_sq."""

    _LATE_KEYS = (
        ("maximize", False), ("foreach", None), ("capturable", False),
        ("differentiable", False), ("decoupled_weight_decay", False),
    )

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False) -> None:
        check_adam_arguments(lr, eps, betas, weight_decay)
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        _check_unsupported(capturable=capturable, differentiable=differentiable)
        # betas as given (torch keeps a list a list), so the state_dict's groups are torch's
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "momentum_decay": momentum_decay, "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize, "foreach": foreach, "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)
        self._workspace = Workspace()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # torch turns a loaded number into its 0-d tensor; we turn a loaded array (a state
        # converted from torch's) into our number, which the checkpoint and ShardedOptimizer
        # carry as a value
        for values in self.state.values():
            if isinstance(values, dict) and "mu_product" in values:
                values["mu_product"] = float(values["mu_product"])

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss, if any."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p._grad is not None]
            states = [self._init_state(p) for p in with_grad]
            steps = [s["step"] for s in states]
            mu_products = [s["mu_product"] for s in states]
            beta1, beta2 = group["betas"]
            nadam([p.data for p in with_grad], [p._grad.data for p in with_grad],
                  [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                  mu_products, steps, beta1=beta1, beta2=beta2, lr=group["lr"],
                  weight_decay=group["weight_decay"], momentum_decay=group["momentum_decay"],
                  eps=group["eps"], decoupled_weight_decay=group["decoupled_weight_decay"],
                  maximize=group["maximize"], workspace=self._workspace)
            for s, step, mu_product in zip(states, steps, mu_products):
                s["step"], s["mu_product"] = step, mu_product
        return loss

    def _init_state(self, p) -> dict:
        state = self.state[p]
        if len(state) == 0:
            # torch keeps step and mu_product as 0-d float32 tensors; Python floats hold the
            # same values (nadam rounds each new mu_product to float32, as torch's *= does)
            state["step"] = 0.0
            state["mu_product"] = 1.0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        return state


def nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, state_steps, *, beta1, beta2, lr,
          weight_decay, momentum_decay, eps, decoupled_weight_decay, maximize,
          workspace: Workspace | None = None) -> None:
    """One NAdam step on numpy arrays in place; state_steps and mu_products (numbers) are
    replaced by their new values in place."""
    # workspace slots: "grad" (g after maximize and weight decay, alive all iteration),
    # "denom" (the second-moment denominator) and "term" (each short-lived product)
    ws = workspace or Workspace()
    for i, (p, g) in enumerate(zip(params, grads)):
        state_steps[i] = step = state_steps[i] + 1
        bias_correction2 = 1 - beta2**step
        if weight_decay != 0 and decoupled_weight_decay:  # NAdamW: decay p, not g
            p *= 1 - lr * weight_decay
        g = descent_grad(p, g, maximize, 0 if decoupled_weight_decay else weight_decay, ws)
        # the momentum schedule: mu_t and mu_{t+1}; their running product is a float32
        # tensor in torch, so each product is rounded to float32 (both factors first)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_products[i] = mu_product = float(np.float32(mu_products[i]) * np.float32(mu))
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        update_moments(exp_avg, exp_avg_sq, g, beta1, beta2, ws.like(p, "term"))
        # sqrt(v / bias_correction2) + eps: torch divides before the root (Adam after)
        denom = np.divide(exp_avg_sq, bias_correction2, out=ws.like(p, "denom"))
        np.sqrt(denom, out=denom)
        denom += eps
        mu_product_next = mu_product * mu_next  # in float64, as torch's Python numbers
        # two addcdiv_s, each (value * t1) / denom: the gradient's share, then the momentum's
        update = np.multiply(g, -lr * (1.0 - mu) / (1.0 - mu_product), out=ws.like(p, "term"))
        update /= denom
        p += update
        update = np.multiply(exp_avg, (-lr * mu_next) / (1.0 - mu_product_next), out=update)
        update /= denom
        p += update
