"""Containers: Sequential, ModuleList and ModuleDict, named "0", "1"... as in PyTorch."""

from __future__ import annotations

import operator
from collections import OrderedDict

from .module import Module


def _index(i, length: int) -> int:
    i = operator.index(i)
    if not -length <= i < length:
        raise IndexError(f"index {i} is out of range")
    return i % length


class Sequential(Module):
    """Modules applied one after another; indexable, iterable, appendable."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return list(self._modules.values())[_index(i, len(self))]

    def __setitem__(self, i, module: Module) -> None:
        key = list(self._modules)[_index(i, len(self))]
        setattr(self, key, module)

    def __delitem__(self, i) -> None:
        keys = list(self._modules)
        for key in keys[i] if isinstance(i, slice) else [keys[_index(i, len(self))]]:
            del self._modules[key]
        # Renumber so the names stay "0", "1", ... as torch does after deletion.
        modules = list(self._modules.values())
        self._modules.clear()
        for j, module in enumerate(modules):
            self._modules[str(j)] = module

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add module at the end."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> Sequential:
        """Append each of modules."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        """Put module before position index."""
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._modules.clear()
        for j, m in enumerate(modules):
            self.add_module(str(j), m)
        return self


class ModuleList(Module):
    """A list of modules whose parameters the parent module sees; no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return self._modules[str(_index(i, len(self)))]

    def __setitem__(self, i, module: Module) -> None:
        setattr(self, str(_index(i, len(self))), module)

    def __delitem__(self, i) -> None:
        modules = list(self._modules.values())
        del modules[i]
        self._modules.clear()
        self.extend(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules) -> ModuleList:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        """Add module at the end."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> ModuleList:
        """Append each of modules."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Put module before position index."""
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._modules.clear()
        self.extend(modules)


class ModuleDict(Module):
    """A dict of modules by name whose parameters the parent module sees."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self):
        """The names."""
        return self._modules.keys()

    def items(self):
        """(name, module) pairs."""
        return self._modules.items()

    def values(self):
        """The modules."""
        return self._modules.values()

    def update(self, modules) -> None:
        """Add (name, module) pairs from a mapping or iterable."""
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module
