"""RMSprop with momentum, centering, weight decay and maximize, as torch.optim.RMSprop."""

from __future__ import annotations

import numpy as np

from .adam import _lerp_
from .optimizer import Optimizer, _check_unsupported
from .workspace import Workspace, descent_grad

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(Optimizer):
    """RMSprop; state per parameter: step, square_avg (and momentum_buffer, grad_avg)."""

    _LATE_KEYS = (
        ("momentum", 0), ("centered", False), ("foreach", None), ("maximize", False),
        ("differentiable", False), ("capturable", False),
    )

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False) -> None:
        # torch's checks, in torch's order (`not 0.0 <= x` also rejects NaN)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        _check_unsupported(capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
            "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable,
        }
        super().__init__(params, defaults)
        self._workspace = Workspace()

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss, if any."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            momentum, centered = group["momentum"], group["centered"]
            with_grad = [p for p in group["params"] if p._grad is not None]
            states = [self._init_state(p, momentum, centered) for p in with_grad]
            steps = [s["step"] for s in states]
            rmsprop([p.data for p in with_grad], [p._grad.data for p in with_grad],
                    [s["square_avg"] for s in states],
                    [s["grad_avg"] for s in states] if centered else [],
                    [s["momentum_buffer"] for s in states] if momentum > 0 else [], steps,
                    lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                    weight_decay=group["weight_decay"], momentum=momentum, centered=centered,
                    maximize=group["maximize"], workspace=self._workspace)
            for s, step in zip(states, steps):
                s["step"] = step
        return loss

    def _init_state(self, p, momentum, centered: bool) -> dict:
        state = self.state[p]
        if len(state) == 0:
            # torch keeps step as a 0-d float32 tensor; a Python float holds the same values
            state["step"] = 0.0
            state["square_avg"] = np.zeros_like(p.data)
            if momentum > 0:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if centered:
                state["grad_avg"] = np.zeros_like(p.data)
        return state


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, *, lr,
            alpha, eps, weight_decay, momentum, centered, maximize,
            workspace: Workspace | None = None) -> None:
    """One RMSprop step on numpy arrays in place; state_steps (numbers) are incremented."""
    # workspace slots: "grad" (g after maximize and weight decay, alive all iteration),
    # "avg" (the denominator) and "term" (each short-lived product)
    ws = workspace or Workspace()
    for i, (p, g) in enumerate(zip(params, grads)):
        state_steps[i] += 1  # torch counts steps here although the update never reads them
        g = descent_grad(p, g, maximize, weight_decay, ws)
        square_avg = square_avgs[i]
        square_avg *= alpha
        square = np.multiply(g, 1 - alpha, out=ws.like(p, "term"))  # torch's addcmul order
        square_avg += np.multiply(square, g, out=square)
        avg = ws.like(p, "avg")
        if centered:
            grad_avg = grad_avgs[i]
            _lerp_(grad_avg, g, 1 - alpha, ws.like(p, "term"))
            # square_avg + (-1 * grad_avg) * grad_avg: the same number as this subtraction
            np.multiply(grad_avg, grad_avg, out=avg)
            np.subtract(square_avg, avg, out=avg)
            np.sqrt(avg, out=avg)
        else:
            np.sqrt(square_avg, out=avg)
        avg += eps
        if momentum > 0:
            buf = momentum_buffers[i]
            buf *= momentum
            buf += np.divide(g, avg, out=avg)
            p -= np.multiply(buf, lr, out=ws.like(p, "term"))  # p.add_(buf, alpha=-lr)
        else:
            update = np.multiply(g, -lr, out=ws.like(p, "term"))  # addcdiv's order
            update /= avg
            p += update
