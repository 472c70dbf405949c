"""Map-style datasets: a length and an item per index, as in torch.utils.data."""

import bisect
import itertools
import math
import warnings

import numpy as np


class Dataset:
    """Base class: subclasses define `__len__` and `__getitem__`."""

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


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


def _first_dim(array):
    """Size of dim 0 of a Tensor or numpy array, with torch's error for a 0-d one."""
    if array.ndim == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    return array.shape[0]


class TensorDataset(Dataset):
    """Sample i is (t[i] for each t): Tensors, or numpy arrays, of equal first dim, as
    torch's TensorDataset. Items are what indexing gives: Tensors or numpy rows."""

    def __init__(self, *tensors):
        if any(_first_dim(tensors[0]) != _first_dim(t) for t in tensors):
            raise AssertionError("Size mismatch between tensors")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return _first_dim(self.tensors[0])


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order, as torch's Subset."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """The datasets one after another, as torch's ConcatDataset."""

    @staticmethod
    def cumsum(sequence):
        """Running totals of the lengths: the end index of each dataset."""
        return list(itertools.accumulate(len(d) for d in sequence))

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if len(self.datasets) == 0:
            raise AssertionError("datasets should not be an empty iterable")
        self.cumulative_sizes = self.cumsum(self.datasets)

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        # bisect_right skips empty datasets: their end equals the previous one's
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[dataset_idx - 1] if dataset_idx else 0
        return self.datasets[dataset_idx][idx - start]


def _split_rng(generator):
    """The numpy Generator random_split draws from (see random_split's generator)."""
    if generator is None:
        # a fixed seed, as DistributedSampler's: every rank of a job cuts the same splits
        generator = 0
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(generator)
    raise TypeError(
        f"generator must be None, an int seed or a numpy.random.Generator, got {generator!r}"
    )


def _lengths_from_fractions(fractions, total):
    """floor(f * total) each, the remainder handed out one by one from the first split."""
    lengths = []
    for i, frac in enumerate(fractions):
        if frac < 0 or frac > 1:
            raise ValueError(f"Fraction at index {i} is not between 0 and 1")
        lengths.append(math.floor(total * frac))
    for i in range(total - sum(lengths)):
        lengths[i % len(lengths)] += 1
    for i, length in enumerate(lengths):
        if length == 0:
            warnings.warn(
                f"Length of split at index {i} is 0. This might result in an empty dataset.",
                stacklevel=3,
            )
    return lengths


def random_split(dataset, lengths, generator=None):
    """Split dataset into non-overlapping Subsets of the given lengths (or fractions summing
    to 1), as torch.utils.data.random_split: same lengths, warnings and errors.

    The permutation is numpy's, not torch's randperm, so which samples land in which split
    differs from torch's. generator: an int seed, or a numpy.random.Generator used as is
    (disttrain.autograd.random.generator() to follow disttrain.manual_seed; disttrain.data
    imports nothing outside itself, so it is not the default). None means seed 0: unlike
    with torch's default, every call and every rank of a job get the same split.
    """
    # torch's test: lengths that sum to 1 (or just under, by float rounding) are fractions
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        lengths = _lengths_from_fractions(lengths, len(dataset))
    if sum(lengths) != len(dataset):
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    indices = _split_rng(generator).permutation(sum(lengths)).tolist()
    return [
        Subset(dataset, indices[offset - length : offset])
        for offset, length in zip(itertools.accumulate(lengths), lengths, strict=True)
    ]
