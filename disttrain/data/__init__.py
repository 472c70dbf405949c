"""Datasets, samplers and loaders on numpy alone."""

from .dataset import (
    ArrayDataset,
    ConcatDataset,
    Dataset,
    Subset,
    TensorDataset,
    random_split,
)
from .datasets import (
    DATASETS,
    get_dataset,
    load_digits,
    synthetic_classification,
    synthetic_regression,
)
from .loader import DataLoader, GlobalBatchSampler, distributed_loader, local_batch_size
from .sampler import DistributedSampler

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "GlobalBatchSampler",
    "Subset",
    "TensorDataset",
    "distributed_loader",
    "get_dataset",
    "load_digits",
    "local_batch_size",
    "random_split",
    "synthetic_classification",
    "synthetic_regression",
]
