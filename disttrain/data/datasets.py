"""Built-in datasets: the bundled 8x8 digits and seeded synthetic sets for tests."""

from functools import lru_cache
from pathlib import Path

import numpy as np

from .dataset import ArrayDataset

_DIGITS_PATH = Path(__file__).with_name("digits.npz")
_SPLITS = ("train", "val", "all")


@lru_cache(maxsize=1)
def _digits_arrays():
    # Read once per process; the file ships with the package, nothing is downloaded.
    with np.load(_DIGITS_PATH, allow_pickle=False) as npz:
        return npz["images"], npz["labels"]


def split_indices(n, split, val_fraction, seed):
    """Sorted indices of `split` under a fixed permutation seeded by `seed`."""
    if split not in _SPLITS:
        raise ValueError(f"split {split!r} is not known: choose one of {', '.join(_SPLITS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if split == "all":
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[:n_val] if split == "val" else order[n_val:])


def load_digits(split="train", val_fraction=0.2, seed=0, dtype=np.float32):
    """The 8x8 digits as X (n, 64) scaled to [0, 1] and y int64 labels 0..9."""
    images, labels = _digits_arrays()
    keep = split_indices(len(labels), split, val_fraction, seed)
    X = images[keep].reshape(len(keep), 64).astype(dtype)
    X /= 16  # in place, so X keeps the requested dtype
    return ArrayDataset(X, labels[keep].astype(np.int64))


def synthetic_classification(n_samples=512, n_features=16, n_classes=4, seed=0,
                             dtype=np.float64, split="all", val_fraction=0.2):
    """Gaussian blobs, one per class, balanced and fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, size=(n_classes, n_features))
    y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
    X = centers[y] + rng.normal(size=(n_samples, n_features))
    keep = split_indices(n_samples, split, val_fraction, seed)
    return ArrayDataset(X[keep].astype(dtype), y[keep])


def synthetic_regression(n_samples=256, n_features=8, n_targets=1, noise=0.1, seed=0,
                         dtype=np.float64, split="all", val_fraction=0.2):
    """y = X @ W + b + noise, with X, W, b standard normal and fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    W = rng.normal(size=(n_features, n_targets))
    b = rng.normal(size=n_targets)
    y = X @ W + b + noise * rng.normal(size=(n_samples, n_targets))
    keep = split_indices(n_samples, split, val_fraction, seed)
    return ArrayDataset(X[keep].astype(dtype), y[keep].astype(dtype))


DATASETS = {
    "digits": load_digits,
    "synthetic": synthetic_classification,
    "synthetic_regression": synthetic_regression,
}


def get_dataset(name, **kwargs):
    """Build the registered dataset `name` with keyword arguments."""
    if name not in DATASETS:
        raise ValueError(
            f"dataset {name!r} is not known: choose one of {', '.join(map(repr, DATASETS))}"
        )
    return DATASETS[name](**kwargs)
