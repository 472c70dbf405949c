"""DataLoader: numpy batches gathered from a dataset in the order a sampler gives."""

import numpy as np

from .dataset import ArrayDataset
from .sampler import DistributedSampler, _check_int


def local_batch_size(batch_size, world_size, rank):
    """Rank `rank`'s share of a global batch: its positions rank, rank+W, ... in it, so
    ceil or floor of batch_size / world_size samples."""
    _check_int("batch_size", batch_size, 1)
    _check_int("world_size", world_size, 1)
    if batch_size < world_size:
        raise ValueError(
            f"batch_size {batch_size} is smaller than world_size {world_size}: every worker "
            "needs at least one sample of each global batch; choose batch_size >= world_size"
        )
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank!r} is out of range for world_size {world_size}: "
                         f"rank must be in [0, {world_size - 1}]")
    return len(range(rank, batch_size, world_size))


class GlobalBatchSampler:
    """Rank r's positions r, r+W, r+2W, ... of each global batch of one permutation.

    The permutation (DistributedSampler's, seeded by (seed, epoch)) is cut into
    len(dataset) // batch_size global batches whatever the world size, so the union of
    the ranks' k-th local batches is the k-th batch of a one-process run, for any W:
    with W not dividing the batch, ranks hold ceil or floor of batch_size / W samples.
    """

    def __init__(self, dataset_len, batch_size, rank=0, world_size=1, seed=0, shuffle=True):
        self.local_batch_size = local_batch_size(batch_size, world_size, rank)
        self._order = DistributedSampler(dataset_len, seed=seed, shuffle=shuffle)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.n_batches = self._order.dataset_len // self.batch_size

    def set_epoch(self, epoch):
        self._order.set_epoch(epoch)

    def indices(self):
        """This rank's indices of every global batch of the epoch, batch after batch."""
        order = self._order.global_indices()[: self.n_batches * self.batch_size]
        return order.reshape(self.n_batches, self.batch_size)[:, self.rank :: self.world_size] \
            .reshape(-1)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.n_batches * self.local_batch_size


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
    """This rank's loader for a global `batch_size`: batch k holds this rank's positions of
    global batch k, the same global batches for every world_size (the last partial one is
    dropped). Any batch_size >= world_size; ranks' shares differ by at most one sample."""
    sampler = GlobalBatchSampler(len(dataset), batch_size, rank, world_size, seed, shuffle)
    return DataLoader(dataset, sampler.local_batch_size, sampler=sampler, drop_last=True)
