"""The graph and the backward pass: nodes, recording, and reverse-mode accumulation.

Every differentiable primitive has one row in rules.RULES; recording an op stores the
row, the forward's inputs and output, and their version numbers in a Node. backward()
walks the nodes in reverse topological order, calls one vjp per input that needs a
gradient, undoes broadcasting in `sum_to`, and accumulates into leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grad_mode import is_grad_enabled

FREED_GRAPH = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after "
    "calling backward."
)
INPLACE_HINT = (
    " Hint: enable anomaly detection to find the operation that failed to compute its "
    "gradient, with torch.autograd.set_detect_anomaly(True, check_nan=False)."
)

# Bound by tensor.py once Tensor exists (tensor.py imports this module, so this module
# cannot import Tensor at its top; a per-call import cost ~1 us on every op).
Tensor = None

# Callbacks queued during a backward pass run once it finishes (torch's queue_callback);
# DistributedDataParallel uses this to wait for its last all-reduce.
_final_callbacks: list = []


def queue_callback(fn) -> None:
    """Run fn() once the backward pass in progress has finished."""
    _final_callbacks.append(fn)


def sum_to(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Undo broadcasting: sum grad over the dims that broadcasting added or stretched."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1
    )
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    return out.reshape(shape)


class Node:
    """One recorded op: its rule, inputs (Tensors or constants) and saved arrays."""

    __slots__ = (
        "rule", "inputs", "saved", "out", "params", "versions", "out_version",
        "pre_hooks", "retained", "freed", "__weakref__",
    )

    def __init__(self, rule, inputs, saved, out, params, out_version):
        self.rule = rule
        self.inputs = inputs
        self.saved = saved
        self.out = out
        self.params = params
        self.out_version = out_version
        self.versions = (
            tuple(t._version[0] if hasattr(t, "_version") else None for t in inputs)
            if rule.uses_inputs else ()
        )
        self.pre_hooks = None
        self.retained = None
        self.freed = False

    def name(self) -> str:
        return f"{self.rule.name}Backward0"

    def __repr__(self) -> str:
        return f"<{self.name()} object at {hex(id(self))}>"

    @property
    def next_functions(self) -> tuple:
        return tuple((getattr(t, "grad_fn", None), 0) for t in self.inputs)

    def check_versions(self) -> None:
        """Raise PyTorch's error if a tensor this node saved was modified in place."""
        if self.out_version is not None and self.out_version[0] != self.out_version[1][0]:
            expected, box = self.out_version
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by "
                f"an inplace operation: [{_type_name(self.out)}], which is output 0 of "
                f"{self.rule.name}, is at version {box[0]}; expected version {expected} "
                "instead." + INPLACE_HINT
            )
        for t, seen in zip(self.inputs, self.versions) if self.rule.reads is None else (
                (self.inputs[j], self.versions[j]) for j in self._inputs_read()):
            if seen is not None and t._version[0] != seen:
                origin = f", which is output 0 of {t.grad_fn.rule.name}," if t.grad_fn else ""
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified "
                    f"by an inplace operation: [{_type_name(t.data)}]{origin} is at version "
                    f"{t._version[0]}; expected version {seen} instead." + INPLACE_HINT
                )


    def _inputs_read(self) -> set:
        """Indices of the inputs the vjps that will run actually read."""
        read = set()
        for i, t in enumerate(self.inputs):
            if getattr(t, "_requires_grad", False) and self.rule.vjps[i] is not None:
                read.update(self.rule.reads[i])
        return read


def _type_name(array: np.ndarray) -> str:
    kind = {"float32": "Float", "float64": "Double", "int64": "Long"}.get(str(array.dtype), "")
    return f"torch.{kind}Tensor [{', '.join(map(str, array.shape))}]".replace(" []", " []")


def record(rule, out_data: np.ndarray, inputs: tuple, **params):
    """Wrap out_data in a Tensor and, if any input requires grad, attach a Node to it."""
    if type(out_data) is not np.ndarray:
        out_data = np.asarray(out_data)  # ufuncs on 0-d arrays return numpy scalars
    out = Tensor._make(out_data)
    if is_grad_enabled():
        for t in inputs:
            if isinstance(t, Tensor) and t._requires_grad:
                break
        else:
            return out
        out._requires_grad = True
        saved = None
        if rule.saves:
            saved = tuple(t.data if isinstance(t, Tensor) else t for t in inputs)
        out_version = (0, out._version) if rule.uses_out else None
        out.grad_fn = Node(rule, inputs, saved, out_data if rule.saves else None, params,
                           out_version)
    return out


@dataclass(slots=True)
class _HookedLeaf:
    """A leaf with hooks, summing what its edges carry so the hooks run once.

    As torch's AccumulateGrad: a leaf used twice calls its hooks on the summed gradient.
    """

    edges: int  # edges whose gradient has not arrived yet
    leaf: object
    grad: np.ndarray | None = None  # the sum so far
    fresh: bool = False  # grad is an array of the engine's own, safe to adopt as .grad


def _topological_order(root: Node) -> tuple:
    """Nodes reachable from root, each after every node that feeds gradient into it.

    Also returns {id(leaf): _HookedLeaf} for the leaves with hooks.
    """
    order, seen, waiting = [], {id(root)}, {}
    stack = [(root, iter(root.inputs))]
    while stack:
        node, children = stack[-1]
        for t in children:
            child = getattr(t, "grad_fn", 0)
            if child is None:
                if getattr(t, "_hooks", None) or getattr(t, "_post_accumulate_hooks", None):
                    entry = waiting.get(id(t))
                    if entry is None:
                        entry = waiting[id(t)] = _HookedLeaf(0, t)
                    entry.edges += 1
            elif child and id(child) not in seen:
                seen.add(id(child))
                stack.append((child, iter(child.inputs)))
                break
        else:
            stack.pop()
            order.append(node)
    order.reverse()
    return order, waiting


def _run_hooks(hooks: dict, grad: np.ndarray) -> tuple:
    """Call each gradient hook in order; a hook's return value replaces the gradient.

    Returns (gradient, whether any hook replaced it).
    """
    replaced = False
    for hook in list(hooks.values()):  # a copy: a hook may remove itself
        result = hook(Tensor._make(grad))
        if result is not None:
            grad, replaced = _as_array(result), True
    return grad, replaced


def _accumulate_leaf(leaf, grad: np.ndarray, fresh: bool) -> None:
    """Add grad into leaf.grad, running the leaf's hooks first, as AccumulateGrad does."""
    if leaf._hooks:
        grad, replaced = _run_hooks(leaf._hooks, grad)
        fresh = fresh and not replaced  # a hook's array may be kept by the hook
    if grad.dtype != leaf.data.dtype:
        grad, fresh = grad.astype(leaf.data.dtype), True
    if leaf._grad is None:
        if leaf._grad_buffer is not None:  # see Tensor.set_grad_buffer
            np.copyto(leaf._grad_buffer, grad)
            leaf._grad = Tensor._make(leaf._grad_buffer)
        else:
            fresh = fresh and type(grad) is np.ndarray  # not a numpy scalar from a 0-d op
            leaf._grad = Tensor._make(grad if fresh else np.array(grad))
    else:
        leaf._grad.data += grad
    _after_accumulate(leaf)


def _after_accumulate(leaf) -> None:
    if leaf._post_accumulate_hooks:
        for hook in list(leaf._post_accumulate_hooks.values()):
            hook(leaf)


def _write_into_buffer(node: Node, i: int, leaf, g: np.ndarray, waiting: dict) -> bool:
    """The first gradient of a leaf with a gradient buffer (a DDP bucket's view), written
    there by the rule's own matmul or sum (Rule.into), not computed and then copied.

    Only when this edge is the leaf's whole gradient so far: .grad None, no hook that
    could replace the gradient, and, for a hooked leaf, no other edge gathered into it
    yet (edges still to come add into .grad as usual). False: the engine runs the vjp.
    """
    into = node.rule.into
    if (into is None or into[i] is None or leaf._grad is not None
            or leaf._grad_buffer is None or leaf._hooks):
        return False
    entry = waiting.get(id(leaf)) if waiting else None
    if entry is not None and (entry.edges != 1 or entry.grad is not None):
        return False
    if not into[i](leaf._grad_buffer, g, node.out, *node.saved, **node.params):
        return False
    if entry is not None:
        del waiting[id(leaf)]
    leaf._grad = Tensor._make(leaf._grad_buffer)
    _after_accumulate(leaf)
    return True


def _gather_leaf(entry: _HookedLeaf, grad: np.ndarray, fresh: bool, waiting: dict) -> None:
    """Sum a hooked leaf's incoming gradients; accumulate once the last one has arrived."""
    if entry.grad is None:
        entry.grad, entry.fresh = grad, fresh
    else:
        entry.grad, entry.fresh = entry.grad + grad, True
    entry.edges -= 1
    if entry.edges == 0:
        del waiting[id(entry.leaf)]
        _accumulate_leaf(entry.leaf, entry.grad, entry.fresh)


def _as_array(value) -> np.ndarray:
    return value.data if hasattr(value, "data") and not isinstance(value, np.ndarray) else (
        np.asarray(value)
    )


def backward(root, grad: np.ndarray, retain_graph: bool) -> None:
    """Propagate grad from root to every leaf that requires grad."""
    try:
        if root.grad_fn is None:
            _accumulate_leaf(root, grad, fresh=False)
            return
        order, waiting = _topological_order(root.grad_fn)
        pending = {id(root.grad_fn): grad}
        for node in order:
            g = pending.pop(id(node), None)
            if g is None:
                continue
            _run_node(node, g, pending, retain_graph, waiting)
        for entry in list(waiting.values()):  # some edges into it carried no gradient
            if entry.grad is not None:
                _accumulate_leaf(entry.leaf, entry.grad, entry.fresh)
    finally:
        callbacks = list(_final_callbacks)
        _final_callbacks.clear()
    for fn in callbacks:
        fn()


def _run_node(node: Node, g: np.ndarray, pending: dict, retain_graph: bool,
              waiting: dict) -> None:
    """Apply one node's hooks and vjps and hand each input its share of the gradient."""
    if node.pre_hooks:
        g = _run_hooks(node.pre_hooks, g)[0]
    if node.retained is not None:
        tensor = node.retained()
        if tensor is not None:
            tensor._grad = Tensor._make(g.copy()) if tensor._grad is None else (
                Tensor._make(tensor._grad.data + g)
            )
    rule = node.rule
    if rule.saves:
        if node.freed:
            raise RuntimeError(FREED_GRAPH)
        node.check_versions()
    args = node.saved
    for i, t in enumerate(node.inputs):
        if not isinstance(t, Tensor) or not t._requires_grad:
            continue
        vjp = rule.vjps[i]
        if vjp is None or (t.grad_fn is None and _write_into_buffer(node, i, t, g, waiting)):
            continue
        gi = vjp(g, node.out, *args, **node.params) if rule.saves else vjp(g, **node.params)
        if gi.shape != t.data.shape:
            gi = sum_to(gi, t.data.shape)
        fresh = gi is not g and gi.base is None
        if t.grad_fn is None:
            entry = waiting.get(id(t)) if waiting else None
            if entry is None:
                _accumulate_leaf(t, gi, fresh)
            else:
                _gather_leaf(entry, gi, fresh, waiting)
        else:
            key = id(t.grad_fn)
            before = pending.get(key)
            pending[key] = gi if before is None else before + gi
    if not retain_graph and rule.saves:
        node.saved = None
        node.out = None
        node.freed = True
