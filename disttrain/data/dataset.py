"""Map-style datasets: a length and an item per index, as in torch.utils.data."""

import numpy as np


class Dataset:
    """Base class: subclasses define `__len__` and `__getitem__`."""

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class ArrayDataset(Dataset):
    """Samples are rows of equally long arrays, like torch's TensorDataset."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        if any(a.ndim == 0 for a in self.arrays):
            raise ValueError("ArrayDataset arrays must have at least one dimension")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(
                f"ArrayDataset arrays must have the same length, got lengths {lengths}"
            )

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        # An index array gathers a whole batch with one fancy-index per array.
        return tuple(a[index] for a in self.arrays)

    def __repr__(self):
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return f"ArrayDataset({shapes})"
