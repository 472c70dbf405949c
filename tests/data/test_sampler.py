import numpy as np
import pytest

from disttrain.data import DistributedSampler

CASES = [(n, w, drop) for n in (0, 1, 2, 7, 10, 11, 12, 100) for w in (1, 2, 3, 4, 5)
         for drop in (False, True)]


def _shards(n, world_size, **kwargs):
    return [list(DistributedSampler(n, rank, world_size, **kwargs)) for rank in range(world_size)]


def test_permutation_is_the_documented_one_and_independent_of_world_size():
    expected = np.random.default_rng([5, 2]).permutation(30)
    for world_size in (1, 2, 3):
        sampler = DistributedSampler(30, 0, world_size, seed=5, drop_last=True)
        sampler.set_epoch(2)
        np.testing.assert_array_equal(sampler.global_indices(), expected)
        np.testing.assert_array_equal(sampler.indices(), expected[::world_size])


@pytest.mark.parametrize("n, world_size", [(30, 3), (31, 3), (100, 7), (5, 2)])
def test_drop_last_shards_are_disjoint_and_cover_the_cut_permutation(n, world_size):
    shards = _shards(n, world_size, seed=1, drop_last=True)
    flat = [i for shard in shards for i in shard]
    assert len(flat) == len(set(flat)) == (n // world_size) * world_size
    assert {len(shard) for shard in shards} == {n // world_size}
    # Interleaving the shards rebuilds the permutation's head, in order.
    interleaved = np.stack(shards, axis=1).reshape(-1)
    head = np.random.default_rng([1, 0]).permutation(n)[: len(interleaved)]
    np.testing.assert_array_equal(interleaved, head)


@pytest.mark.parametrize("n, world_size", [(10, 3), (11, 4), (2, 5), (1, 3)])
def test_padding_wraps_around_to_the_start(n, world_size):
    shards = _shards(n, world_size, seed=2)
    perm = np.random.default_rng([2, 0]).permutation(n)
    interleaved = np.stack(shards, axis=1).reshape(-1)
    np.testing.assert_array_equal(interleaved, np.resize(perm, len(interleaved)))
    assert len(interleaved) == -(-n // world_size) * world_size
    assert set(interleaved.tolist()) == set(range(n))


@pytest.mark.parametrize("n, world_size, drop_last", CASES)
def test_lengths_and_unshuffled_order_match_torch(n, world_size, drop_last):
    torch_data = pytest.importorskip("torch.utils.data")
    for rank in range(world_size):
        ours = DistributedSampler(n, rank, world_size, shuffle=False, drop_last=drop_last)
        theirs = torch_data.DistributedSampler(
            range(n), num_replicas=world_size, rank=rank, shuffle=False, drop_last=drop_last
        )
        assert len(ours) == len(theirs)
        # Unshuffled, both index lists are fully determined: they must agree element-wise.
        assert list(ours) == list(theirs)


@pytest.mark.parametrize("n, world_size, drop_last", CASES)
def test_shuffled_per_rank_counts_match_torch(n, world_size, drop_last):
    torch_data = pytest.importorskip("torch.utils.data")
    for rank in range(world_size):
        ours = DistributedSampler(n, rank, world_size, seed=3, drop_last=drop_last)
        theirs = torch_data.DistributedSampler(
            range(n), num_replicas=world_size, rank=rank, seed=3, drop_last=drop_last
        )
        assert len(list(ours)) == len(list(theirs)) == len(ours) == len(theirs)


def test_set_epoch_changes_the_permutation_and_repeats_it():
    sampler = DistributedSampler(50, seed=9)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second and sorted(first) == sorted(second) == list(range(50))
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(DistributedSampler(50, seed=9)) == first
    assert list(DistributedSampler(50, seed=10)) != first


def test_shuffle_false_gives_range_order():
    assert list(DistributedSampler(7, shuffle=False)) == list(range(7))
    assert list(DistributedSampler(7, 1, 3, shuffle=False)) == [1, 4, 0]


def test_state_dict_round_trip_restores_the_stream():
    sampler = DistributedSampler(40, 1, 2, seed=4, drop_last=True)
    sampler.set_epoch(6)
    restored = DistributedSampler(40, 1, 2)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler)


@pytest.mark.parametrize(
    "kwargs, words",
    [({"rank": 3, "world_size": 3}, ["rank 3", "world_size 3", "[0, 2]"]),
     ({"rank": -1, "world_size": 2}, ["rank -1", "world_size 2", "[0, 1]"]),
     ({"world_size": 0}, ["world_size", ">= 1", "got 0"]),
     ({"seed": -1}, ["seed", ">= 0"])],
)
def test_bad_arguments_name_the_key(kwargs, words):
    with pytest.raises(ValueError) as info:
        DistributedSampler(10, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_bad_dataset_len_and_epoch_name_the_key():
    with pytest.raises(ValueError, match="dataset_len must be an integer >= 0, got -1"):
        DistributedSampler(-1)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got 1.5"):
        DistributedSampler(10).set_epoch(1.5)
