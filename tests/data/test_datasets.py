import ast
from pathlib import Path

import numpy as np
import pytest

from disttrain.data import (
    DATASETS,
    ArrayDataset,
    get_dataset,
    load_digits,
    synthetic_classification,
    synthetic_regression,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "disttrain" / "data"


def _npz():
    with np.load(DATA_DIR / "digits.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def test_digits_npz_has_the_published_shape_and_ranges():
    npz = _npz()
    assert sorted(npz) == ["images", "labels"]
    images, labels = npz["images"], npz["labels"]
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert sorted(np.unique(labels)) == list(range(10))
    # Class counts of the UCI optdigits test split, as listed in its documentation.
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_npz_equals_sklearn_exactly():
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    npz = _npz()
    np.testing.assert_array_equal(npz["images"], reference.images)
    np.testing.assert_array_equal(npz["labels"], reference.target)


def test_load_digits_scales_flattens_and_splits():
    images, labels = _npz()["images"], _npz()["labels"]
    whole = load_digits(split="all")
    X, y = whole.arrays
    assert X.dtype == np.float32 and X.shape == (1797, 64) and y.dtype == np.int64
    np.testing.assert_array_equal(X * 16, images.reshape(1797, 64))
    np.testing.assert_array_equal(y, labels)
    assert X.min() == 0.0 and X.max() == 1.0

    # The split contract: a permutation seeded by `seed`; its first 20% is val.
    order = np.random.default_rng(0).permutation(1797)
    val_index, train_index = np.sort(order[:359]), np.sort(order[359:])
    train, val = load_digits("train"), load_digits("val")
    for split, index in ((train, train_index), (val, val_index)):
        np.testing.assert_array_equal(split.arrays[0] * 16, images[index].reshape(-1, 64))
        np.testing.assert_array_equal(split.arrays[1], labels[index])
    assert len(train) + len(val) == 1797
    assert load_digits("val", dtype=np.float64).arrays[0].dtype == np.float64


def test_load_digits_split_is_fixed_by_seed():
    a, b, c = load_digits("val", seed=3), load_digits("val", seed=3), load_digits("val", seed=4)
    np.testing.assert_array_equal(a.arrays[0], b.arrays[0])
    assert not np.array_equal(a.arrays[0], c.arrays[0])
    assert len(load_digits("val", val_fraction=0.5)) == round(1797 * 0.5)


def test_synthetic_sets_are_deterministic_and_shaped():
    a, b = synthetic_classification(100, 5, 3, seed=7), synthetic_classification(100, 5, 3, seed=7)
    for left, right in zip(a.arrays, b.arrays):
        np.testing.assert_array_equal(left, right)
    X, y = a.arrays
    assert X.shape == (100, 5) and X.dtype == np.float64 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [34, 33, 33]
    assert not np.array_equal(X, synthetic_classification(100, 5, 3, seed=8).arrays[0])

    X, y = synthetic_regression(50, 4, n_targets=2, seed=1, dtype=np.float32).arrays
    assert X.shape == (50, 4) and y.shape == (50, 2) and X.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(y, synthetic_regression(50, 4, n_targets=2, seed=1,
                                                          dtype=np.float32).arrays[1])


def test_synthetic_blobs_are_separable_by_nearest_class_mean():
    X, y = synthetic_classification(600, 16, 4, seed=0).arrays
    means = np.stack([X[y == c].mean(axis=0) for c in range(4)])
    predicted = np.argmin(((X[:, None, :] - means) ** 2).sum(axis=2), axis=1)
    assert (predicted == y).mean() > 0.95


def test_registry_and_get_dataset():
    assert {"digits", "synthetic"} <= set(DATASETS)
    assert isinstance(get_dataset("digits", split="val"), ArrayDataset)
    assert len(get_dataset("synthetic", n_samples=30)) == 30
    with pytest.raises(ValueError) as info:
        get_dataset("mnist")
    assert "'mnist'" in str(info.value)
    for name in DATASETS:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [({"split": "test"}, ["split", "'test'", "train, val, all"]),
     ({"val_fraction": 1.0}, ["val_fraction", "[0, 1)"])],
)
def test_bad_split_arguments_name_the_key(kwargs, words):
    with pytest.raises(ValueError) as info:
        load_digits(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_array_dataset_gathers_batches_and_checks_lengths():
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    ds = ArrayDataset(X, y)
    assert len(ds) == 10
    xb, yb = ds[np.array([7, 2, 2])]
    np.testing.assert_array_equal(xb, X[[7, 2, 2]])
    np.testing.assert_array_equal(yb, [7, 2, 2])
    x0, y0 = ds[3]
    np.testing.assert_array_equal(x0, [6.0, 7.0])
    assert y0 == 3
    with pytest.raises(ValueError, match=r"same length, got lengths \[10, 9\]"):
        ArrayDataset(X, y[:9])


def test_data_package_imports_numpy_and_the_standard_library_only():
    forbidden = {"disttrain", "ray", "torch", "mpi4py", "sklearn"}
    for path in DATA_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                # Relative imports may only reach siblings inside disttrain/data.
                assert node.level in (0, 1), f"{path.name} imports from outside disttrain.data"
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
