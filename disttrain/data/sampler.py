"""DistributedSampler: each rank's share of one permutation that all ranks agree on."""

import numpy as np


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name, value, minimum):
    """Raise ValueError naming `name` unless value is an integer >= minimum."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class DistributedSampler:
    """Rank r takes positions r, r+W, r+2W, ... of a permutation seeded by (seed, epoch).

    The permutation does not depend on world_size, so the union of the ranks' k-th
    local batches is the k-th global batch of a one-process run. With drop_last the
    permutation is cut to a multiple of world_size; without, it is padded by wrapping
    around to its start, as torch.utils.data.DistributedSampler does.
    """

    def __init__(self, dataset_len, rank=0, world_size=1, seed=0, shuffle=True, drop_last=False):
        _check_int("dataset_len", dataset_len, 0)
        _check_int("world_size", world_size, 1)
        _check_int("seed", seed, 0)
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank!r} is out of range for world_size {world_size}: "
                f"rank must be in [0, {world_size - 1}]"
            )
        self.dataset_len, self.rank, self.world_size = int(dataset_len), int(rank), int(world_size)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.epoch = 0

    @property
    def total_size(self):
        """Length of the cut or padded permutation, shared by all ranks."""
        n, w = self.dataset_len, self.world_size
        return (n // w) * w if self.drop_last else -(-n // w) * w

    def set_epoch(self, epoch):
        """Choose the permutation for `epoch`; call it before iterating each epoch."""
        _check_int("epoch", epoch, 0)
        self.epoch = int(epoch)

    def global_indices(self):
        """The whole cut or padded permutation of this epoch, before sharding."""
        n = self.dataset_len
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        if n == 0:
            return order
        # np.resize repeats cyclically, so it both truncates and wraps around.
        return np.resize(order, self.total_size)

    def indices(self):
        """This rank's indices for the current epoch, as an int64 array."""
        return self.global_indices()[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.total_size // self.world_size

    def state_dict(self):
        """Plain values to store in a checkpoint's meta.json."""
        keys = ("seed", "epoch", "shuffle", "drop_last")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state):
        """Restore what state_dict saved; rank and world_size may differ from the saving run."""
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        self.drop_last = bool(state["drop_last"])
        self.set_epoch(state["epoch"])
