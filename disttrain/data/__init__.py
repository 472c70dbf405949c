"""Datasets, samplers and loaders on numpy alone."""

from .dataset import ArrayDataset, Dataset
from .datasets import (
    DATASETS,
    get_dataset,
    load_digits,
    synthetic_classification,
    synthetic_regression,
)
from .loader import DataLoader, distributed_loader, global_to_local_batch
from .sampler import DistributedSampler

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "distributed_loader",
    "get_dataset",
    "global_to_local_batch",
    "load_digits",
    "synthetic_classification",
    "synthetic_regression",
]
