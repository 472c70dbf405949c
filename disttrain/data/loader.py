"""DataLoader: numpy batches gathered from a dataset in the order a sampler gives."""

import numpy as np

from .dataset import ArrayDataset
from .sampler import DistributedSampler, _check_int


def global_to_local_batch(global_batch_size, world_size):
    """Per-worker batch size for a job whose `batch_size` is global."""
    _check_int("batch_size", global_batch_size, 1)
    _check_int("world_size", world_size, 1)
    if global_batch_size % world_size:
        raise ValueError(
            f"batch_size {global_batch_size} is not divisible by world_size {world_size}: "
            "choose a batch_size that is a multiple of the number of workers"
        )
    return global_batch_size // world_size


def _gather(dataset, index):
    """One batch as a tuple of arrays."""
    if isinstance(dataset, ArrayDataset):
        return dataset[index]
    # Datasets that only take an int: fetch sample by sample and stack each field.
    samples = [dataset[int(i)] for i in index]
    if not isinstance(samples[0], tuple):
        return (np.stack(samples),)
    return tuple(np.stack(field) for field in zip(*samples))


class DataLoader:
    """Iterate `(x, y, ...)` batches of numpy arrays; call `set_epoch` every epoch to reshuffle."""

    def __init__(self, dataset, batch_size, sampler=None, shuffle=False, drop_last=False, seed=0):
        _check_int("batch_size", batch_size, 1)
        if sampler is not None and shuffle:
            raise ValueError(
                "sampler option is mutually exclusive with shuffle: "
                "pass shuffle to the sampler instead"
            )
        if sampler is None:
            sampler = DistributedSampler(len(dataset), seed=seed, shuffle=shuffle)
        self.dataset, self.batch_size, self.sampler = dataset, int(batch_size), sampler
        self.drop_last = bool(drop_last)

    def __len__(self):
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def set_epoch(self, epoch):
        """Forward the epoch to the sampler, which seeds its permutation with it."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch):
        """Batches start_batch, start_batch+1, ... of this epoch, equal to a full pass's tail."""
        _check_int("start_batch", start_batch, 0)
        if start_batch > len(self):
            raise ValueError(
                f"start_batch {start_batch} is past the end of the epoch: "
                f"choose a start_batch in [0, {len(self)}]"
            )
        if hasattr(self.sampler, "indices"):
            order = self.sampler.indices()
        else:
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        # Not a generator itself, so bad arguments fail here rather than at the first next().
        return self._batches(order, start_batch)

    def _batches(self, order, start_batch):
        # Skipping is index arithmetic: no earlier batch is gathered.
        for k in range(start_batch, len(self)):
            yield _gather(self.dataset, order[k * self.batch_size : (k + 1) * self.batch_size])


def distributed_loader(dataset, batch_size, rank=0, world_size=1, seed=0, shuffle=True):
    """This rank's loader for a global `batch_size`; batch k is the same for every world_size."""
    local_batch_size = global_to_local_batch(batch_size, world_size)
    # Cutting both the permutation (to a multiple of W) and the last partial batch is
    # what makes the number and content of global batches independent of world_size.
    sampler = DistributedSampler(len(dataset), rank, world_size, seed, shuffle, drop_last=True)
    return DataLoader(dataset, local_batch_size, sampler=sampler, drop_last=True)
