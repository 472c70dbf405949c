"""A user's own data from files: .npz, a pair of .npy files, .csv (numpy only), or a
Parquet file or folder of Parquet files (through pyarrow, the `data` extra).

Every loader returns (x, y) arrays (y: class labels, or regression targets; checked by
check_classification or check_regression), or raises DataFileError whose message names the file
and what is wrong with it, so the driver can refuse a bad file in one line before any
worker starts. A .npy file's features are not loaded: its rows are read as batches ask for
them (rows.NpyRows), so a file larger than a worker's memory trains. Nothing is unpickled
(allow_pickle=False).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from .rows import NpyRows

# What a Parquet path needs; said by the driver's check before any worker starts.
NEEDS_PYARROW = "Parquet data needs pyarrow: pip install 'disttrain[data]'"
# The features are checked for NaN/inf this many bytes at a time (a file may not fit).
CHECK_CHUNK_BYTES = 16 << 20


class DataFileError(ValueError):
    """A data file is missing, unreadable or holds the wrong arrays; the message says how."""


def load_arrays(path, *, x_key="x", y_key="y", y_path="", label_column="label"):
    """(x, y) from `path`: .npz (arrays x_key and y_key), .npy (y from y_path), .csv (a
    header row) or Parquet (a .parquet file or a folder of them); for .csv and Parquet the
    label column is named, every other column is a feature."""
    path = Path(path)
    if path.is_dir():
        return _from_parquet(path, label_column)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _from_parquet(path, label_column)
    try:
        if suffix == ".npz":
            return _from_npz(path, x_key, y_key)
        if suffix == ".npy":
            return _from_npy_pair(path, y_path)
        if suffix == ".csv":
            return _from_csv(path, label_column)
    except DataFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # truncated, foreign
        raise DataFileError(f"{path}: cannot be read as {suffix}: {error}") from None
    raise DataFileError(f"{path}: unknown format {suffix!r}; use .npz, .npy, .csv, .parquet "
                        "or a folder of .parquet files")


def _from_npz(path: Path, x_key: str, y_key: str):
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in (x_key, y_key) if k not in npz.files]
        if missing:
            raise DataFileError(f"{path}: has no array {missing[0]!r} (it holds "
                                f"{', '.join(npz.files) or 'nothing'}); set [data] x_key and "
                                "y_key to its arrays' names")
        return npz[x_key], npz[y_key]


def _from_npy_pair(path: Path, y_path: str):
    if not y_path:
        raise DataFileError(f"{path}: a .npy file holds the features only; give the labels' "
                            "file as [data] y_path")
    if not Path(y_path).is_file():
        raise DataFileError(f"{y_path}: no such file (the labels, [data] y_path)")
    return NpyRows(path), np.load(y_path, allow_pickle=False)


def _from_csv(path: Path, label_column: str):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataFileError(f"{path}: is empty; a .csv needs a header row and data rows")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if label_column not in header:
        raise DataFileError(f"{path}: has no column {label_column!r} (its columns are "
                            f"{', '.join(header)}); set [data] label_column")
    label = header.index(label_column)
    try:
        table = np.array([[float(v) for v in row] for row in body], dtype=np.float64)
    except ValueError as error:
        raise DataFileError(f"{path}: every value must be a number: {error}") from None
    if table.ndim != 2 or table.shape[1] != len(header):
        raise DataFileError(f"{path}: every row must have {len(header)} values, as the header")
    return np.delete(table, label, axis=1), table[:, label]


def _from_parquet(path: Path, label_column: str):
    """A .parquet file, or every .parquet file under a folder (in name order, as Ray Data
    writes its parts), as one table: the label column and the numeric feature columns."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFileError(f"{path}: {NEEDS_PYARROW}") from None
    parts = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not parts:
        raise DataFileError(f"{path}: a folder with no .parquet files; give a .parquet file "
                            "or a folder of them")
    tables = []
    for part in parts:
        try:
            tables.append((part, pq.read_table(part)))
        except (OSError, pa.ArrowException) as error:
            raise DataFileError(f"{part}: cannot be read as .parquet: "
                                f"{' '.join(str(error).split())}") from None
    first, table = tables[0]
    for part, other in tables[1:]:
        if other.schema.names != table.schema.names:
            raise DataFileError(f"{part}: its columns ({', '.join(other.schema.names)}) are "
                                f"not those of {first} ({', '.join(table.schema.names)}); "
                                "every part of a Parquet folder holds the same columns")
    names = table.schema.names
    if label_column not in names:
        raise DataFileError(f"{first}: has no column {label_column!r} (its columns are "
                            f"{', '.join(names)}); set [data] label_column")
    columns = {}
    for part, part_table in tables:
        for name, field in zip(names, part_table.schema):
            if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
                role = ("the label column" if name == label_column else
                        "a feature (every column but the label is one)")
                raise DataFileError(f"{part}: column {name!r} holds {field.type} values, not "
                                    f"numbers; it is {role}: drop it or make it numeric")
            columns.setdefault(name, []).append(
                part_table.column(name).to_numpy())  # nulls become NaN, refused later
    arrays = {name: np.concatenate(chunks) for name, chunks in columns.items()}
    features = [arrays[name] for name in names if name != label_column]
    if not features:
        raise DataFileError(f"{first}: has only the label column {label_column!r}; the "
                            "other columns are the features")
    return np.column_stack(features), arrays[label_column]


def check_classification(x, y, where: str):
    """Refuse features that are not a finite 2-D table and labels that are not class
    indices 0..C-1, one row per sample."""
    _check_features(x, where)
    if y.ndim != 1 or len(y) != len(x):
        raise DataFileError(f"{where}: the labels must be one per sample, shape ({len(x)},), "
                            f"got shape {tuple(y.shape)}")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(y) & (np.mod(y, 1) == 0) & (y >= 0))
    if bad.any():
        raise DataFileError(f"{where}: the labels must be class indices 0, 1, 2, ...; found "
                            f"{', '.join(map(str, y[bad][:3]))}")


def check_regression(x, y, where: str):
    """Refuse features that are not a finite 2-D table and targets that are not finite
    numbers, one row (a number, or a row of numbers) per sample."""
    _check_features(x, where)
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise DataFileError(f"{where}: the targets must be one number or one row of numbers "
                            f"per sample, shape ({len(x)},) or ({len(x)}, targets), got shape "
                            f"{tuple(y.shape)}")
    if y.dtype.kind not in "biuf":
        raise DataFileError(f"{where}: the targets must be numbers, got {y.dtype} values")
    bad = ~np.isfinite(np.asarray(y, dtype=np.float64))
    if bad.any():
        rows = np.nonzero(bad.reshape(len(y), -1).any(axis=1))[0]
        raise DataFileError(f"{where}: the targets hold NaN or infinite values (rows "
                            f"{', '.join(map(str, rows[:3]))}); clean them first")


def _check_features(x, where: str):
    """Features: a finite array of shape (samples, features, ...), read in chunks."""
    if x.ndim < 2 or len(x) == 0:
        raise DataFileError(f"{where}: the features must be an array of shape (samples, "
                            f"features), got shape {tuple(x.shape)}")
    if x.dtype.kind not in "biufc":
        raise DataFileError(f"{where}: the features must be numbers, got {x.dtype} values")
    if x.dtype.kind not in "fc":  # integers are always finite
        return
    row_bytes = x.dtype.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
    chunk = max(1, CHECK_CHUNK_BYTES // max(row_bytes, 1))
    for lo in range(0, len(x), chunk):  # in chunks: a file larger than memory stays on disk
        if not np.isfinite(x[lo:lo + chunk]).all():
            raise DataFileError(f"{where}: the features hold NaN or infinite values (rows "
                                f"{lo}..{min(lo + chunk, len(x)) - 1}); clean them first")
