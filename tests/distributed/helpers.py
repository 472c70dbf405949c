"""A Ray actor playing one rank of a DistributedDataParallel job, for the DDP tests."""

from __future__ import annotations

import numpy as np

import disttrain
from disttrain import nn

FEATURES, HIDDEN, CLASSES = 6, 8, 3


class TwoHeads(nn.Module):
    """An MLP with a second head that only some ranks use (an unused-parameter case)."""

    def __init__(self, hidden=HIDDEN):
        super().__init__()
        self.body = nn.Linear(FEATURES, hidden, dtype=np.float64)
        self.head = nn.Linear(hidden, CLASSES, dtype=np.float64)
        self.spare = nn.Linear(hidden, CLASSES, dtype=np.float64)
        self.never = nn.Linear(hidden, CLASSES, dtype=np.float64)

    def forward(self, x, use_spare=False):
        h = self.body(x).tanh()
        out = self.head(h)
        return out + self.spare(h) if use_spare else out


def batch(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, FEATURES)), rng.integers(0, CLASSES, n)


class DDPRank:
    """Builds TwoHeads under DDP over a real communicator and runs scripted backward passes."""

    def build(self, backend, rank, world_size, coordinator, secret, seed, hidden=HIDDEN,
              bucket_cap_mb=25.0):
        from disttrain.distributed import DistributedDataParallel
        from disttrain.workers.comm import make_communicator

        self.comm = make_communicator(backend, rank=rank, world_size=world_size,
                                      coordinator=coordinator, secret=secret, timeout_s=20)
        disttrain.manual_seed(seed)  # different per rank: DDP must broadcast rank 0's
        self.model = TwoHeads(hidden)
        try:
            self.ddp = DistributedDataParallel(self.model, self.comm, bucket_cap_mb)
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return "ok"

    def params(self) -> dict:
        return {k: v.data.copy() for k, v in self.model.state_dict().items()}

    def step(self, chunks, use_spare=False, sync_last_only=False) -> dict:
        """Backward over the local chunks (no_sync on all but the last if asked); grads."""
        for p in self.model.parameters():
            p.grad = None
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        for i, (x, y) in enumerate(chunks):
            last = i == len(chunks) - 1
            ctx = self.ddp.no_sync() if (sync_last_only and not last) else _null()
            with ctx:
                loss = loss_fn(self.ddp(disttrain.tensor(x), use_spare=use_spare),
                               disttrain.tensor(y))
                loss.backward()
        return {n: (None if p.grad is None else p.grad.data.copy())
                for n, p in self.model.named_parameters()}

    def grads_are_bucket_views(self) -> bool:
        """Every gradient backward produced lives inside its bucket's flat buffer."""
        import numpy as np

        views = [(p, v, b.buffer) for b in self.ddp.buckets for p, v in zip(b.params, b.views)]
        return bool(views) and all(p.grad.data is v and np.shares_memory(v, buf)
                                   for p, v, buf in views if p.grad is not None)

    def buckets_in_place(self) -> tuple:
        """(buckets, collectives that read every rank's bucket where backward wrote it):
        the coordinator's shared memory counts them; None on another backend."""
        group = getattr(getattr(self.comm, "_shm", None), "_group", None)
        return len(self.ddp.buckets), None if group is None else group.in_place

    def close(self):
        self.ddp.close()
        self.comm.close()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class BatchNormRank:
    """A Linear -> BatchNorm1d model under DDP, for the buffer-broadcast test: each rank
    starts with its own running statistics, which rank 0's must overwrite."""

    def build(self, backend, rank, world_size, coordinator, secret):
        from disttrain.distributed import DistributedDataParallel
        from disttrain.workers.comm import make_communicator

        self.comm = make_communicator(backend, rank=rank, world_size=world_size,
                                      coordinator=coordinator, secret=secret, timeout_s=20)
        disttrain.manual_seed(rank)
        self.model = nn.Sequential(nn.Linear(FEATURES, 4, dtype=np.float64),
                                   nn.BatchNorm1d(4, dtype=np.float64))
        self.model[1].running_mean.data[...] = rank + 1.0
        self.ddp = DistributedDataParallel(self.model, self.comm)
        return self.state()

    def state(self) -> dict:
        return {k: v.data.copy() for k, v in self.model.state_dict().items()}

    def train_step(self, x) -> dict:
        self.ddp(disttrain.tensor(x)).sum().backward()
        return self.state()

    def eval_output(self, x):
        self.model.eval()
        with disttrain.no_grad():
            return self.ddp(disttrain.tensor(x)).data.copy()

    def close(self):
        self.ddp.close()
        self.comm.close()
