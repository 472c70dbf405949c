"""Gradient synchronisation: the Communicator protocol, buckets and DistributedDataParallel."""

from .buckets import Bucket, assign_buckets
from .comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveError,
    CollectiveTimeout,
    Communicator,
    LocalCommunicator,
)
from .ddp import DistributedDataParallel

__all__ = [
    "Bucket", "assign_buckets", "DEFAULT_TIMEOUT_S", "CollectiveError", "CollectiveTimeout",
    "Communicator", "LocalCommunicator", "DistributedDataParallel",
]
