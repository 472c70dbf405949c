"""SGD with momentum, dampening, Nesterov, weight decay and maximize, as torch.optim.SGD."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_unsupported
from .workspace import SMALL, Workspace

__all__ = ["SGD", "sgd"]


class SGD(Optimizer):
    """Stochastic gradient descent; the state holds one momentum_buffer per parameter."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
            "foreach": foreach, "differentiable": differentiable, "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        _check_unsupported(differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)
        self._workspace = Workspace()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in (("nesterov", False), ("maximize", False), ("foreach", None),
                               ("differentiable", False), ("fused", False)):
                group.setdefault(key, value)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss, if any."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            momentum = group["momentum"]
            with_grad = [p for p in group["params"] if p._grad is not None]
            bufs = [self.state[p].get("momentum_buffer") for p in with_grad] if momentum else []
            new = [i for i, buf in enumerate(bufs) if buf is None]
            sgd([p.data for p in with_grad], [p._grad.data for p in with_grad], bufs,
                lr=group["lr"], momentum=momentum, dampening=group["dampening"],
                weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                maximize=group["maximize"], workspace=self._workspace)
            for i in new:  # the others were updated in place
                self.state[with_grad[i]]["momentum_buffer"] = bufs[i]
        return loss


def sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov,
        maximize, workspace: Workspace | None = None) -> None:
    """One SGD step on numpy arrays in place; None entries of momentum_buffers are filled."""
    # workspace slots: "direction" (the descent direction, then lr times it) and
    # "momentum" (the dampened or Nesterov term, alive while "direction" is)
    ws = workspace or Workspace()
    adjusted = weight_decay != 0 or maximize
    if momentum != 0 and dampening == 0 and not (adjusted or nesterov) and all(
            buf is not None for buf in momentum_buffers):
        return _heavy_ball(params, grads, momentum_buffers, lr, momentum, ws)
    for i, (p, g) in enumerate(zip(params, grads)):
        d_p = _descent_direction(p, g, weight_decay, maximize, ws) if adjusted else g
        owned = adjusted  # d_p is a workspace array of ours, free to overwrite
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:  # the first step copies g: no dampening, as torch
                buf = momentum_buffers[i] = np.array(d_p, copy=True)
            else:
                buf *= momentum
                if dampening == 0:
                    buf += d_p
                else:
                    buf += np.multiply(d_p, 1 - dampening, out=ws.like(p, "momentum"))
            if nesterov:
                step = np.multiply(buf, momentum, out=ws.like(p, "momentum"))
                d_p = np.add(d_p, step, out=d_p if owned else step)
                owned = True
            else:
                d_p, owned = buf, False
        # p -= lr * d_p equals torch's p.add_(d_p, alpha=-lr) bit for bit (negation is exact)
        if owned:
            d_p *= lr
            p -= d_p
        elif d_p.size <= SMALL:  # a fresh small temporary costs less than out= bookkeeping
            p -= d_p * lr
        else:
            p -= np.multiply(d_p, lr, out=ws.like(p, "direction"))  # d_p is g or buf


def _heavy_ball(params, grads, momentum_buffers, lr, momentum, ws) -> None:
    """SGD with plain momentum, the common case."""
    # a loop of its own: the general loop's branches cost as much as small arrays' arithmetic
    for p, g, buf in zip(params, grads, momentum_buffers):
        buf *= momentum
        buf += g
        p -= buf * lr if buf.size <= SMALL else np.multiply(buf, lr, out=ws.like(p, "direction"))


def _descent_direction(p, g, weight_decay, maximize, ws):
    """g, negated if maximize, plus weight_decay * p, in the "direction" slot."""
    if weight_decay == 0:
        return np.negative(g, out=ws.like(p, "direction"))
    decay = np.multiply(p, weight_decay, out=ws.like(p, "direction"))
    # -g + wd*p is wd*p - g exactly, so maximize needs no extra pass
    return np.subtract(decay, g, out=decay) if maximize else np.add(g, decay, out=decay)
