"""A ray.data.Dataset as a job's data: `disttrain.launch.train(job, data=ds)` and
`Trainer(train_loop, job, data=ds)`.

The driver materialises the dataset (ds.materialize(): its blocks stay in Ray's object
store; the driver holds refs), and one Ray task per block checks it (numeric, finite
features) and returns its labels, one number per row, which travel with the dataset. The
features never pass through the driver: each rank reads the rows of its batches from the
blocks that hold them (disttrain.data.ray_data.BlockRows), through the same DataLoader
and samplers as a file, so the global batch is exactly a .npy's, and without val_data
the [data] val_fraction split is the one a file gets (builders.split_datasets).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import BlockAccessor

from disttrain.data.files import DataFileError, check_classification, check_regression
from disttrain.data.ray_data import BlockRows
from disttrain.data.rows import Rows, RowsDataset
from disttrain.train.builders import dtype_of, split_datasets
from disttrain.train.spec import SpecError


def ray_datasets(spec, data, val_data=None) -> tuple:
    """(train, val) datasets over `data` (and `val_data`, else the val_fraction split);
    SpecError in one line for data a job cannot train on."""
    dtype = dtype_of(spec)
    x, y = _features_and_labels(spec, data, "data")
    if val_data is None:
        return split_datasets(x, y, spec.data.val_fraction, spec.job.seed, dtype)
    val_x, val_y = _features_and_labels(spec, val_data, "val_data")
    if val_x.shape[1] != x.shape[1]:
        raise SpecError(f"train: val_data has {val_x.shape[1]} features but data has "
                        f"{x.shape[1]}; give validation rows of the same columns")
    return (RowsDataset(Rows(x, dtype=dtype), y), RowsDataset(Rows(val_x, dtype=dtype), val_y))


def _features_and_labels(spec, ds, name: str):
    if not isinstance(ds, ray.data.Dataset):
        raise SpecError(f"train: {name} must be a ray.data.Dataset, got {type(ds).__name__}")
    label = spec.data.label_column
    ds = ds.materialize()
    schema = ds.schema()
    names = list(schema.names) if schema is not None else []
    if label not in names:
        raise SpecError(f"train: {name}: has no column {label!r} (its columns are "
                        f"{', '.join(names) or 'none'}); set [data] label_column")
    for column, kind in zip(names, schema.types):
        if not _numeric(kind):
            role = "the label column" if column == label else "a feature (every column " \
                                                              "but the label is one)"
            raise SpecError(f"train: {name}: column {column!r} holds {kind} values, not "
                            f"numbers; it is {role}: drop it or make it numeric")
    features = [column for column in names if column != label]
    if not features:
        raise SpecError(f"train: {name}: has only the label column {label!r}; the other "
                        "columns are the features")
    blocks = ds.to_arrow_refs()
    checked = ray.get([_check_block.remote(block, features, label) for block in blocks])
    offsets = np.cumsum([0] + [c["rows"] for c in checked])
    for c, start in zip(checked, offsets):
        if c["nonfinite"] >= 0:
            raise SpecError(f"train: {name}: the features hold NaN or infinite values (row "
                            f"{start + c['nonfinite']}); clean them first")
    y = np.concatenate([c["labels"] for c in checked])
    width = next(c["width"] for c in checked if c["rows"])
    x = BlockRows(blocks, offsets, width, np.result_type(*[c["dtype"] for c in checked]),
                  functools.partial(read_rows, features=features))
    regression = spec.job.task == "regression"
    try:  # the labels' checks; the features were checked by the tasks
        (check_regression if regression else check_classification)(
            np.broadcast_to(np.zeros(1), (len(y), 1)), y, f"{name} (column {label!r})")
    except DataFileError as error:
        raise SpecError(f"train: {error}") from None
    dtype = dtype_of(spec)
    return x, (np.asarray(y, dtype=dtype).reshape(len(y), -1) if regression
               else y.astype(np.int64))


def _numeric(kind) -> bool:
    if isinstance(kind, np.dtype):  # a pandas block's column
        return kind.kind in "iuf"
    if isinstance(kind, pa.DataType) and not isinstance(kind, pa.ExtensionType):
        return pa.types.is_integer(kind) or pa.types.is_floating(kind)
    scalar = getattr(kind, "scalar_type", None)  # Ray's tensor columns (from_numpy)
    return scalar is not None and (pa.types.is_integer(scalar) or pa.types.is_floating(scalar))


def _features(table, features: list) -> np.ndarray:
    """The feature columns of an Arrow block as one (rows, width) array (a tensor column
    gives a column per element)."""
    columns = BlockAccessor.for_block(table).to_numpy(features)
    return np.column_stack([np.asarray(columns[f]).reshape(table.num_rows, -1)
                            for f in features])


@ray.remote
def _check_block(table, features: list, label: str) -> dict:
    """One block's size, width, dtype, first non-finite row (-1: none) and labels."""
    x = _features(table, features)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1)) if x.dtype.kind in "fc" else []
    return {"rows": table.num_rows, "width": x.shape[1], "dtype": x.dtype.str,
            "nonfinite": int(bad[0]) if len(bad) else -1,
            "labels": table.column(label).to_numpy()}


def read_rows(block, rows: np.ndarray, *, features: list) -> np.ndarray:
    """Rows `rows` of a block (an ObjectRef), features only: run in a rank."""
    return _features(ray.get(block).take(pa.array(rows)), features)
