"""Tensor: a numpy array plus what autograd needs, with PyTorch's names and errors."""

from __future__ import annotations

import warnings
import weakref

import numpy as np

from . import engine
from .grad_mode import is_grad_enabled

float32, float64, int64, bool_ = np.float32, np.float64, np.int64, np.bool_
_default_dtype = np.float32
# torch's names of the dtypes, as its error messages print them
TORCH_DTYPE_NAMES = {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int",
                      "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}

NON_LEAF_GRAD_WARNING = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during autograd.backward(). If you indeed want the .grad "
    "field to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. "
    "If you access the non-leaf Tensor by mistake, make sure you access the leaf Tensor "
    "instead. See github.com/pytorch/pytorch/pull/30531 for more information."
)


class RemovableHandle:
    """Returned by register_hook; remove() unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)


def _to_array(data, dtype=None) -> np.ndarray:
    """Convert data as torch.tensor does: Python floats become the default float dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=np.dtype(dtype))
    if isinstance(data, (np.ndarray, np.generic)):
        return np.array(data)  # a copy; numpy arrays and scalars keep their dtype
    array = np.array(data)
    if array.dtype.kind == "f":
        return array.astype(_default_dtype)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


class Tensor:
    """An n-dimensional array that records the operations applied to it for backward()."""

    __slots__ = (
        "data", "_requires_grad", "_grad", "grad_fn", "_version", "_hooks",
        "_post_accumulate_hooks", "_grad_buffer", "__weakref__",
    )
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _to_array(data, dtype)
        self._init_fields()
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, array: np.ndarray) -> Tensor:
        """Wrap an array without copying or checks: the engine's fast path."""
        t = cls.__new__(cls)
        t.data = array
        t._init_fields()
        return t

    def _init_fields(self) -> None:
        self._requires_grad = False
        self._grad = None
        self.grad_fn = None
        self._version = [0]  # a box, shared by tensors that share storage (detach)
        self._hooks = None
        self._post_accumulate_hooks = None
        self._grad_buffer = None  # see set_grad_buffer

    # -- array facts ------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    is_leaf = property(lambda self: self.grad_fn is None)
    _version_number = property(lambda self: self._version[0])

    def size(self, dim: int | None = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self.data.size} elements cannot be converted to Scalar"
            )
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied), as torch's numpy() does."""
        if self._requires_grad:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                "instead."
            )
        return self.data

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self.data)

    def __float__(self) -> float:
        return float(self._scalar())

    def __int__(self) -> int:
        return int(self._scalar())

    def _scalar(self):
        if self.data.size != 1:
            raise TypeError("only one element tensors can be converted to Python scalars")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.data.dtype not in (np.float32, np.int64, np.bool_):
            extra += f", dtype=disttrain.{self.data.dtype}"
        if self.grad_fn is not None:
            extra += f", grad_fn=<{self.grad_fn.name()}>"
        elif self._requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # -- autograd state ---------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if self.grad_fn is not None and flag:  # torch: the setter refuses even True
            raise RuntimeError("you can only change requires_grad flags of leaf variables.")
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if self.grad_fn is not None:
            if requires_grad:
                return self  # a non-leaf already requires grad; torch allows this
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use "
                "a computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach()."
            )
        if requires_grad and self.data.dtype.kind not in "fc":
            raise RuntimeError(
                "Only Tensors of floating point and complex dtype can require gradients"
            )
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self) -> Tensor | None:
        if self.grad_fn is not None and not self._retains_grad():
            warnings.warn(NON_LEAF_GRAD_WARNING, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is not None:
            value = value if isinstance(value, Tensor) else Tensor._make(np.asarray(value))
            if value.shape != self.shape:
                raise RuntimeError(
                    f"assigned grad has data of a different size: {value.shape} vs {self.shape}"
                )
        self._grad = value

    def _retains_grad(self) -> bool:
        return self.grad_fn is not None and self.grad_fn.retained is not None

    retains_grad = property(_retains_grad)

    def retain_grad(self) -> None:
        """Keep .grad for this non-leaf tensor after backward; a leaf keeps it anyway."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            self.grad_fn.retained = weakref.ref(self)

    def register_hook(self, hook) -> RemovableHandle:
        """Call hook(grad) when this tensor's gradient is computed; a return value replaces it."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            if self.grad_fn.pre_hooks is None:
                self.grad_fn.pre_hooks = {}
            hooks = self.grad_fn.pre_hooks
        else:
            if self._hooks is None:
                self._hooks = {}
            hooks = self._hooks
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def set_grad_buffer(self, buffer: np.ndarray) -> None:
        """Make this leaf's gradients accumulate into `buffer` in place, from now on.

        Every later .grad of this leaf is a Tensor over `buffer` (a gradient it already
        has is copied in), so the owner of the array sees each backward's result without
        a copy: DistributedDataParallel passes views into its flat bucket buffers, as
        PyTorch's DDP does with gradient_as_bucket_view=True.
        """
        if self.grad_fn is not None:
            raise RuntimeError("set_grad_buffer() is only for leaf tensors")
        if buffer.shape != self.data.shape or buffer.dtype != self.data.dtype:
            raise RuntimeError(
                f"grad buffer of shape {buffer.shape} and dtype {buffer.dtype} does not match "
                f"the tensor's shape {self.data.shape} and dtype {self.data.dtype}"
            )
        if self._grad is not None:
            np.copyto(buffer, self._grad.data)
            self._grad = Tensor._make(buffer)
        self._grad_buffer = buffer

    def register_post_accumulate_grad_hook(self, hook) -> RemovableHandle:
        """Call hook(tensor) after a backward has accumulated into this leaf's .grad."""
        if self.grad_fn is not None:
            raise RuntimeError(
                "post accumulate grad hooks cannot be registered on non-leaf tensors"
            )
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = {}
        handle = RemovableHandle(self._post_accumulate_hooks)
        self._post_accumulate_hooks[handle.id] = hook
        return handle

    def backward(self, gradient=None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad, as torch.Tensor.backward."""
        if create_graph:
            raise RuntimeError("create_graph=True (higher-order gradients) is not supported")
        if inputs is not None:
            raise RuntimeError("backward(inputs=...) is not supported; use hooks instead")
        if not self._requires_grad:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn"
            )
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            seed = np.ones_like(self.data)
        else:
            seed = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient,
                              dtype=self.data.dtype)
            if seed.shape != self.data.shape:
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[0] has a shape of {seed.shape} and "
                    f"output[0] has a shape of {self.data.shape}."
                )
        engine.backward(self, seed, bool(retain_graph))

    def detach(self) -> Tensor:
        """The same storage, cut from the graph; never requires grad."""
        t = Tensor._make(self.data)
        t._version = self._version
        return t

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self._requires_grad = False
        return self

    # -- in-place operations ------------------------------------------------------------
    def _check_inplace(self) -> None:
        if self._requires_grad and self.grad_fn is None and is_grad_enabled():
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation."
            )

    def _inplace(self, op, other, numpy_op) -> Tensor:
        """Apply an in-place op; if the graph must see it, record it as op(old self, other)."""
        self._check_inplace()
        other_grad = isinstance(other, Tensor) and other._requires_grad
        if not (is_grad_enabled() and (self._requires_grad or other_grad)):
            numpy_op(self.data, other.data if isinstance(other, Tensor) else other)
            self._version[0] += 1
            return self
        self._check_not_a_view_in_the_graph()
        old = Tensor._make(self.data.copy())  # the value before the op, for the vjps
        old.grad_fn, old._requires_grad = self.grad_fn, self._requires_grad
        result = op(old, other)
        self.data[...] = result.data
        self._version[0] += 1
        self.grad_fn, self._requires_grad = result.grad_fn, True
        if self.grad_fn.out_version is not None:
            self.grad_fn.out_version = (self._version[0], self._version)
        return self

    def _check_not_a_view_in_the_graph(self) -> None:
        """Refuse an in-place op the graph would get wrong: one through a view.

        PyTorch rewrites the base's history (CopySlices); disttrain does not, so rather
        than a silently wrong gradient for the base, the op is refused.
        """
        node = self.grad_fn
        if node is None or node.rule.name not in _VIEW_RULES:
            return
        base = node.inputs[0]
        if not np.may_share_memory(self.data, base.data):
            return
        if base.grad_fn is None and base._requires_grad:
            raise RuntimeError(
                "a view of a leaf Variable that requires grad is being used in an in-place "
                "operation.")
        raise RuntimeError(
            "in-place operation on a view of a tensor that is part of the graph: disttrain "
            "does not rewrite the base's history as PyTorch does; compute the result out of "
            "place (for example with cat() or where())")

    def add_(self, other, alpha=1) -> Tensor:
        if alpha != 1:
            other = other * alpha
        return self._inplace(Tensor.__add__, other, _iadd)

    def sub_(self, other, alpha=1) -> Tensor:
        if alpha != 1:
            other = other * alpha
        return self._inplace(Tensor.__sub__, other, _isub)

    def mul_(self, other) -> Tensor:
        return self._inplace(Tensor.__mul__, other, _imul)

    def div_(self, other) -> Tensor:
        return self._inplace(Tensor.__truediv__, other, _idiv)

    def copy_(self, src) -> Tensor:
        return self._inplace(lambda old, s: s + old * 0, src, _icopy)

    def zero_(self) -> Tensor:
        return self._inplace(lambda old, _: old * 0, 0, _izero)

    def fill_(self, value) -> Tensor:
        return self._inplace(lambda old, v: old * 0 + v, value, _icopy)

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    def __setitem__(self, key, value) -> None:
        self._check_inplace()
        if is_grad_enabled() and (self._requires_grad or (
                isinstance(value, Tensor) and value._requires_grad)):
            raise RuntimeError(
                "index assignment on a tensor in the graph is not differentiable in disttrain; "
                "build the result with where() or cat() instead"
            )
        self.data[_index_key(key)] = value.data if isinstance(value, Tensor) else value
        self._version[0] += 1

    def __hash__(self):  # by identity, as torch: __eq__ (ops.py) is elementwise
        return id(self)


_VIEW_RULES = frozenset({"View", "Permute", "Expand", "Index"})


def _iadd(a, b):
    a += b


def _isub(a, b):
    a -= b


def _imul(a, b):
    a *= b


def _idiv(a, b):
    a /= b


def _icopy(a, b):
    a[...] = b


def _izero(a, _):
    a.fill(0)


def _index_key(key):
    """An index as numpy reads it, with Tensors and lists inside it turned into arrays."""
    if isinstance(key, tuple):
        return tuple(_index_key(k) for k in key)
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, list):
        # a copy: getitem saves the key for backward, so later edits to the list must not
        # reach it; [] is an empty integer index, as numpy and torch read it
        return np.asarray(key) if key else np.empty(0, dtype=np.intp)
    return key


def zero_grads(tensors, set_to_none: bool = True) -> None:
    """Reset each tensor's .grad as torch's Module/Optimizer.zero_grad: None, or zeroed in place."""
    for t in tensors:
        grad = t._grad
        if grad is None:
            continue
        if set_to_none:
            t._grad = None
            continue
        if grad.grad_fn is not None:
            grad.detach_()
        else:
            grad.requires_grad_(False)
        # zero_() keeps the array (under DistributedDataParallel it is a view into the
        # bucket buffer the all-reduce sends) and bumps its version, as torch's does
        grad.zero_()


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new tensor holding a copy of data, as torch.tensor."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


engine.Tensor = Tensor  # the engine wraps arrays in Tensors; see engine.Tensor
