"""Gradient synchronisation: the Communicator protocol, buckets and DistributedDataParallel."""

from .buckets import Bucket, assign_buckets
from .comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveError,
    CollectiveTimeout,
    Communicator,
    LocalCommunicator,
    chunk_bounds,
)
from .ddp import DistributedDataParallel
from .sharded import ShardedOptimizer

__all__ = [
    "Bucket", "assign_buckets", "DEFAULT_TIMEOUT_S", "CollectiveError", "CollectiveTimeout",
    "Communicator", "LocalCommunicator", "DistributedDataParallel", "ShardedOptimizer",
    "chunk_bounds",
]
