import numpy as np
import pytest

from disttrain.data import (
    ArrayDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    GlobalBatchSampler,
    distributed_loader,
    local_batch_size,
)


def _dataset(n):
    # Every field encodes the sample's index, so a batch shows exactly which samples it holds.
    index = np.arange(n)
    return ArrayDataset(np.stack([index, 10 * index], axis=1).astype(np.float32), index)


def _interleave(local_batches):
    """Rebuild a global batch from ranks' local batches: rank r held positions r, r+W, ...
    (so with W not dividing the batch, the first ranks hold one sample more)."""
    world_size = len(local_batches)
    rebuilt = []
    for fields in zip(*local_batches):
        size = sum(len(f) for f in fields)
        out = np.empty((size, *fields[0].shape[1:]), fields[0].dtype)
        for rank, field in enumerate(fields):
            out[rank::world_size] = field
        rebuilt.append(out)
    return tuple(rebuilt)


def _rank_loaders(n, global_batch, world_size, seed, epoch, sampler_drop_last):
    loaders = []
    for rank in range(world_size):
        sampler = DistributedSampler(n, rank, world_size, seed, drop_last=sampler_drop_last)
        loader = DataLoader(_dataset(n), global_batch // world_size, sampler=sampler,
                            drop_last=True)
        loader.set_epoch(epoch)
        loaders.append(loader)
    return loaders


@pytest.mark.parametrize("n", [60, 101, 143])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("seed, epoch", [(0, 0), (0, 3), (17, 1)])
@pytest.mark.parametrize("sampler_drop_last", [True, False])
def test_union_of_local_batches_is_the_global_batch(n, world_size, seed, epoch,
                                                    sampler_drop_last):
    global_batch = 12
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    single = DataLoader(_dataset(n), global_batch, sampler=DistributedSampler(n, seed=seed),
                        drop_last=True)
    single.set_epoch(epoch)
    single_batches = list(single)
    assert len(single_batches) == n // global_batch
    ranks = [list(loader) for loader in _rank_loaders(n, global_batch, world_size, seed, epoch,
                                                      sampler_drop_last)]
    for k, global_batch_arrays in enumerate(single_batches):
        # The one-process batch is the contract's slice of the permutation ...
        np.testing.assert_array_equal(global_batch_arrays[1], perm[k * 12 : (k + 1) * 12])
        # ... and the ranks' k-th local batches interleave back into it.
        for ours, theirs in zip(_interleave([batches[k] for batches in ranks]),
                                global_batch_arrays):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("n", [11, 12, 50, 59, 60, 61, 143])
def test_distributed_loader_gives_the_same_global_batches_for_any_world_size(n):
    reference = list(distributed_loader(_dataset(n), 12, seed=5))
    for world_size in (2, 3, 4, 5, 6, 7, 11, 12):  # 5, 7 and 11 do not divide 12
        loaders = [distributed_loader(_dataset(n), 12, rank, world_size, seed=5)
                   for rank in range(world_size)]
        assert all(len(loader) == len(reference) == n // 12 for loader in loaders)
        sizes = [len(next(iter(loader))[1]) for loader in loaders] if reference else []
        assert not sizes or (sum(sizes) == 12 and max(sizes) - min(sizes) <= 1), sizes
        rebuilt = [_interleave(batches) for batches in zip(*loaders)]
        assert len(rebuilt) == len(reference)
        for ours, theirs in zip(rebuilt, reference):
            for a, b in zip(ours, theirs):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("drop_last", [False, True])
def test_iter_from_equals_the_tail_of_a_full_pass(drop_last):
    loader = DataLoader(_dataset(53), 8, shuffle=True, drop_last=drop_last, seed=2)
    loader.set_epoch(4)
    full = list(loader)
    assert len(full) == len(loader) == (6 if drop_last else 7)
    for start in range(len(loader) + 1):
        tail = list(loader.iter_from(start))
        assert len(tail) == len(full) - start
        for ours, theirs in zip(tail, full[start:]):
            for a, b in zip(ours, theirs):
                np.testing.assert_array_equal(a, b)


def test_batches_cover_the_epoch_and_set_epoch_reshuffles():
    loader = DataLoader(_dataset(25), 10, shuffle=True)
    first = np.concatenate([y for _, y in loader])
    assert [len(y) for _, y in loader] == [10, 10, 5]
    assert sorted(first.tolist()) == list(range(25))
    loader.set_epoch(1)
    second = np.concatenate([y for _, y in loader])
    assert not np.array_equal(first, second) and sorted(second.tolist()) == list(range(25))
    loader.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate([y for _, y in loader]), first)


def test_unshuffled_loader_keeps_dataset_order():
    batches = list(DataLoader(_dataset(7), 3))
    assert [y.tolist() for _, y in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    np.testing.assert_array_equal(batches[0][0], [[0, 0], [1, 10], [2, 20]])


def test_plain_dataset_items_are_stacked_per_field():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i * i]), i % 2

    (x, parity), = DataLoader(Squares(), 5)
    np.testing.assert_array_equal(x, [[0, 0], [1, 1], [2, 4], [3, 9], [4, 16]])
    np.testing.assert_array_equal(parity, [0, 1, 0, 1, 0])


def test_local_batch_size_is_the_ranks_share_of_any_global_batch():
    assert [local_batch_size(12, 3, r) for r in range(3)] == [4, 4, 4]
    assert [local_batch_size(48, 5, r) for r in range(5)] == [10, 10, 10, 9, 9]
    assert local_batch_size(7, 1, 0) == 7
    with pytest.raises(ValueError) as info:
        local_batch_size(3, 4, 0)
    assert str(info.value) == (
        "batch_size 3 is smaller than world_size 4: every worker needs at least one sample "
        "of each global batch; choose batch_size >= world_size")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        local_batch_size(0, 2, 0)
    with pytest.raises(ValueError, match=r"rank 5 is out of range for world_size 5"):
        local_batch_size(48, 5, 5)
    with pytest.raises(ValueError, match="batch_size 3 is smaller than world_size 4"):
        distributed_loader(_dataset(40), 3, rank=0, world_size=4)


def test_global_batch_sampler_splits_each_batch_of_the_permutation_by_position():
    n, batch, world_size = 103, 48, 5
    perm = np.random.default_rng([9, 2]).permutation(n)
    for rank in range(world_size):
        sampler = GlobalBatchSampler(n, batch, rank, world_size, seed=9)
        sampler.set_epoch(2)
        want = np.concatenate([perm[k * batch:(k + 1) * batch][rank::world_size]
                               for k in range(n // batch)])
        np.testing.assert_array_equal(sampler.indices(), want)
        assert len(sampler) == len(want) == 2 * local_batch_size(batch, world_size, rank)


def test_loader_argument_errors_name_the_key_and_the_fix():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        DataLoader(_dataset(4), 0)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(_dataset(4), 2, sampler=DistributedSampler(4), shuffle=True)
    loader = DataLoader(_dataset(10), 4)
    with pytest.raises(ValueError, match=r"start_batch 4 is past the end .* \[0, 3\]"):
        loader.iter_from(4)
    with pytest.raises(ValueError, match="start_batch must be an integer >= 0, got -1"):
        loader.iter_from(-1)
