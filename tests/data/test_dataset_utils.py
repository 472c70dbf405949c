"""TensorDataset, Subset, ConcatDataset and random_split against torch.utils.data, and
disttrain's DataLoader over each of them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import disttrain
from disttrain.data import (
    ArrayDataset,
    ConcatDataset,
    DataLoader,
    DistributedSampler,
    Subset,
    TensorDataset,
    random_split,
)


def _arrays(n, start=0):
    # Every field encodes the sample's index, so an item or batch shows which samples it holds.
    index = np.arange(start, start + n)
    return np.stack([index, 10 * index], axis=1).astype(np.float32), index


def _twin_tensor_datasets(n, start=0):
    x, y = _arrays(n, start)
    ours = TensorDataset(disttrain.tensor(x), disttrain.tensor(y))
    return ours, tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def _value(item):
    """An item of either library as nested numpy values, to compare across them."""
    if isinstance(item, (tuple, list)):
        return tuple(_value(field) for field in item)
    if isinstance(item, torch.Tensor):
        return item.numpy().tolist()
    return np.asarray(item).tolist()


def _error(call):
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def _same_error(ours, theirs):
    expected, got = _error(theirs), _error(ours)
    assert (type(got), str(got)) == (type(expected), str(expected))


def _warning_texts(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [(w.category, str(w.message)) for w in caught]


# -- TensorDataset ----------------------------------------------------------------------
def test_tensor_dataset_items_match_torch():
    ours, theirs = _twin_tensor_datasets(7)
    assert len(ours) == len(theirs) == 7
    for i in [*range(7), -1, -7]:
        assert _value(ours[i]) == _value(theirs[i])
        assert all(isinstance(field, disttrain.Tensor) for field in ours[i])
    assert _value(ours[2:5]) == _value(theirs[2:5])  # a slice is a batch, as in torch


def test_tensor_dataset_takes_numpy_arrays():
    x, y = _arrays(5)
    dataset = TensorDataset(x, y)
    assert len(dataset) == 5
    np.testing.assert_array_equal(dataset[3][0], x[3])
    assert dataset[3][1] == 3 and dataset.tensors[0] is x


def test_tensor_dataset_errors_match_torch():
    _same_error(lambda: TensorDataset(disttrain.zeros(3, 2), np.zeros(4)),
                lambda: tud.TensorDataset(torch.zeros(3, 2), torch.zeros(4)))
    _same_error(lambda: TensorDataset(disttrain.tensor(1.0)),
                lambda: tud.TensorDataset(torch.tensor(1.0)))
    # torch accepts no tensors at all and fails only at len()
    _same_error(lambda: len(TensorDataset()), lambda: len(tud.TensorDataset()))


# -- Subset -----------------------------------------------------------------------------
def test_subset_matches_torch():
    ours, theirs = _twin_tensor_datasets(10)
    indices = [9, 0, 4, 4, -2]
    sub, sub_torch = Subset(ours, indices), tud.Subset(theirs, indices)
    assert len(sub) == len(sub_torch) == 5
    assert [_value(sub[i]) for i in range(-5, 5)] == [_value(sub_torch[i]) for i in range(-5, 5)]
    assert _value(sub[[0, 2]]) == _value(sub_torch[[0, 2]])  # a list index gathers at once
    assert sub.dataset is ours and sub.indices is indices
    _same_error(lambda: sub[5], lambda: sub_torch[5])


# -- ConcatDataset ----------------------------------------------------------------------
def _twin_concats(sizes):
    starts = np.cumsum([0, *sizes])
    pairs = [_twin_tensor_datasets(n, 100 * s) for n, s in zip(sizes, starts)]
    return ConcatDataset(p[0] for p in pairs), tud.ConcatDataset(p[1] for p in pairs)


@pytest.mark.parametrize("sizes", [[4], [3, 5, 2], [2, 0, 3], [0, 4, 0]])
def test_concat_dataset_indexing_matches_torch(sizes):
    ours, theirs = _twin_concats(sizes)
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    n = len(theirs)
    assert len(ours) == n
    for i in range(-n, n):  # negative indices count from the end of the whole
        assert _value(ours[i]) == _value(theirs[i])
    for bad in (n, -n - 1):
        _same_error(lambda bad=bad: ours[bad], lambda bad=bad: theirs[bad])
    assert ConcatDataset.cumsum([range(2), range(3)]) == tud.ConcatDataset.cumsum(
        [range(2), range(3)])


def test_concat_dataset_errors_match_torch():
    _same_error(lambda: ConcatDataset([]), lambda: tud.ConcatDataset([]))
    ours, theirs = _twin_concats([2, 3])
    _same_error(lambda: ours[-6], lambda: theirs[-6])
    assert "absolute value of index should not exceed dataset length" in str(_error(
        lambda: ours[-6]))


def test_adding_datasets_concatenates_them_as_torch():
    ours, theirs = _twin_tensor_datasets(3)
    other, other_torch = _twin_tensor_datasets(2, start=50)
    joined, joined_torch = ours + other, theirs + other_torch
    assert isinstance(joined, ConcatDataset)
    assert [_value(joined[i]) for i in range(5)] == [_value(joined_torch[i]) for i in range(5)]


# -- random_split -----------------------------------------------------------------------
LENGTHS = [
    (10, [3, 7]), (10, [10]), (10, [0, 10]), (30, [0.3, 0.3, 0.4]), (10, [0.25, 0.75]),
    (11, [0.5, 0.5]), (7, [1 / 3, 1 / 3, 1 / 3]), (5, [0.1, 0.1, 0.8]), (3, [0.1] * 10),
    (1, [1, 0]), (0, [0.5, 0.5]), (0, []),
]


@pytest.mark.parametrize(("n", "lengths"), LENGTHS)
def test_random_split_lengths_and_warnings_match_torch(n, lengths):
    dataset = range(n)
    ours, warned = _warning_texts(lambda: random_split(dataset, lengths, generator=0))
    theirs, warned_torch = _warning_texts(lambda: tud.random_split(dataset, lengths))
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    assert warned == warned_torch
    # the splits partition the dataset
    assert sorted(i for s in ours for i in s.indices) == list(range(n))
    assert all(isinstance(s, Subset) and s.dataset is dataset for s in ours)


def test_the_zero_length_warning_points_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        random_split(range(3), [0.1, 0.1, 0.8], generator=0)
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.parametrize(("n", "lengths"), [
    (10, [3, 6]), (10, [5, 6]), (10, [0.5, 0.4]), (10, [1.5, -0.5]), (10, [0.5, 0.6, -0.1]),
    (4, [0.5, 0.25]),
])
def test_random_split_errors_match_torch(n, lengths):
    _same_error(lambda: random_split(range(n), lengths, generator=0),
                lambda: tud.random_split(range(n), lengths))


def test_random_split_items_come_from_the_dataset():
    ours, _ = _twin_tensor_datasets(12)
    first, second = random_split(ours, [0.5, 0.5], generator=3)
    for split in (first, second):
        for k, i in enumerate(split.indices):
            assert _value(split[k]) == _value(ours[i])


def test_random_split_is_deterministic_for_a_seed():
    def split(generator):
        return [s.indices for s in random_split(range(50), [0.2, 0.3, 0.5], generator=generator)]

    assert split(7) == split(7) == split(np.int64(7))
    assert split(7) == split(np.random.default_rng(7))
    assert split(7) != split(8)
    assert split(7) != [list(range(10)), list(range(10, 25)), list(range(25, 50))]  # shuffled


def test_random_split_default_is_seed_zero_so_ranks_agree():
    def split(generator=None):
        return [s.indices for s in random_split(range(20), [5, 15], generator=generator)]

    assert split() == split(0) == split()
    assert split() != split(1)


def test_random_split_follows_disttrain_seed_through_its_generator():
    def split():
        generator = disttrain.autograd.random.generator()
        return [s.indices for s in random_split(range(20), [5, 15], generator=generator)]

    state = disttrain.get_rng_state()
    try:
        disttrain.manual_seed(11)
        first, second = split(), split()
        disttrain.manual_seed(11)
        assert split() == first != second
    finally:
        disttrain.set_rng_state(state)  # leave the global generator as other tests expect


def test_random_split_rejects_other_generators():
    with pytest.raises(TypeError, match="an int seed or a numpy.random.Generator"):
        random_split(range(4), [2, 2], generator=torch.Generator())


# -- DataLoader over each ---------------------------------------------------------------
def _datasets():
    """Each kind of dataset paired with its torch twin (a different type of index each)."""
    tensors, tensors_torch = _twin_tensor_datasets(11)
    concat, concat_torch = _twin_concats([4, 0, 7])
    rows = np.asarray([9, 2, 2, 5, 0, 10, 7, 1, 3])
    return {
        "tensor": (tensors, tensors_torch),
        "numpy": (TensorDataset(*_arrays(11)), tensors_torch),
        "subset": (Subset(tensors, rows.tolist()), tud.Subset(tensors_torch, rows.tolist())),
        "subset_of_arrays": (Subset(ArrayDataset(*_arrays(11)), rows), tud.Subset(
            tensors_torch, rows.tolist())),
        "concat": (concat, concat_torch),
    }


@pytest.mark.parametrize("name", list(_datasets()))
@pytest.mark.parametrize("batch_size", [1, 4, 11])
@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_batches_match_torch_in_order(name, batch_size, drop_last):
    ours, theirs = _datasets()[name]
    loader = DataLoader(ours, batch_size, drop_last=drop_last)
    loader_torch = tud.DataLoader(theirs, batch_size, drop_last=drop_last)
    batches = list(loader)
    assert len(batches) == len(loader) == len(loader_torch)
    assert [_value(b) for b in batches] == [_value(tuple(b)) for b in loader_torch]
    assert all(isinstance(field, np.ndarray) for b in batches for field in b)


@pytest.mark.parametrize("name", list(_datasets()))
@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_loader_follows_the_sampler_permutation(name, drop_last):
    ours, _ = _datasets()[name]
    loader = DataLoader(ours, 4, shuffle=True, drop_last=drop_last, seed=5)
    loader.set_epoch(2)
    order = DistributedSampler(len(ours), seed=5, shuffle=True)
    order.set_epoch(2)
    expected = order.indices()[: 4 * (len(ours) // 4) if drop_last else None]
    samples = [row for batch in loader for row in zip(*(f.tolist() for f in batch))]
    assert samples == [_value(ours[int(i)]) for i in expected]
    assert expected.tolist() != sorted(expected.tolist())  # really shuffled
